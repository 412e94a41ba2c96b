"""Which SMTP replies say "you send too fast" (the relay throttles the account), as opposed
to a temporary problem of one recipient.

A throttling reply is never the recipient's failure: its item waits in the first retry tier
without using up a try, and the shared send rate comes down (adaptive_rate). The set:

- 421, whatever its text: the server closes the channel, most often under load or for the
  sender's volume (Yahoo's "421 4.7.0 [TSS04] ... temporarily deferred", Gmail's
  "421 4.7.28 ... rate limited", Outlook's "421 4.7.66/4.7.500");
- any 4yz with an enhanced code of class 4.7.x (security or policy: Outlook's
  "451 4.7.500 Server busy", Gmail's "450 4.7.28"), except greylisting, which is about one
  recipient and passes once tried again;
- 452 4.5.3 "too many recipients": every transaction of ours has one recipient, so it can only
  be a limit on the session or the period (Office 365);
- any 4yz whose text names a rate limit: "throttl", "rate limit", "too many messages|
  connections", "sending rate" (Amazon SES "454 Throttling failure: Maximum sending rate
  exceeded", Mailgun and SendGrid "421/451 ... rate limit").

Other 4yz (a full mailbox, "451 4.3.0 try again later") stay ordinary temporary failures.
"""

from __future__ import annotations

import re

SERVICE_CLOSING = 421
TOO_MANY_RECIPIENTS = "4.5.3"

_ENHANCED = re.compile(r"^\s*(4\.\d{1,3}\.\d{1,3})\b")
_GREYLISTING = re.compile(r"gr[ae]y-?list", re.IGNORECASE)
_RATE_WORDS = re.compile(
    r"throttl|rate[ -]?limit|too many (messages|connections|recipients)|sending rate",
    re.IGNORECASE,
)


def is_throttling(code: int | None, message: str) -> bool:
    """Does this reply (`code`, and the text after it) ask the sender to slow down?"""
    if code is None or code // 100 != 4:
        return False
    if code == SERVICE_CLOSING:
        return True
    if _GREYLISTING.search(message):
        return False
    enhanced = _ENHANCED.match(message)
    status = enhanced.group(1) if enhanced else ""
    if status.startswith("4.7.") or status == TOO_MANY_RECIPIENTS:
        return True
    return _RATE_WORDS.search(message) is not None
