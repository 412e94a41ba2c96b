"""RFC 3463 enhanced status codes and RFC 5321 reply codes: what a failure says about itself.

Shared by the bounce processor (a DSN's status) and the outbound sender (an SMTP reply at send
time), so that a failure is judged by the same rules wherever it is heard: the enhanced status
code first, then the reply code.
"""

from __future__ import annotations

import re
from typing import Literal

HARD = "hard"
SOFT = "soft"

ENHANCED_RE = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w.]*\d)")
"""An enhanced status code anywhere in a text (not part of an IP or version)."""
REPLY_RE = re.compile(r"(?<![\w.\-#])([245][0-5]\d)(?=[ \-,;]|$)", re.MULTILINE)
"""A three-digit SMTP reply code."""

# Permanent failures that are the recipient address's own (RFC 3463 and its registry):
# X.1.0 other address status, X.1.1 bad destination mailbox, X.1.2 bad destination system,
# X.1.3 bad mailbox address syntax, X.1.4 ambiguous mailbox, X.1.6 mailbox has moved,
# X.1.10 null MX (RFC 7505), X.2.1 mailbox disabled. Not X.1.7/X.1.8 (the sender's address),
# X.1.5 (a success code) nor X.1.9; not X.2.2 (mailbox full: it empties).
ADDRESS_FAILURES = frozenset(
    {"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.4", "5.1.6", "5.1.10", "5.2.1"}
)
# X.7.x: security or policy status (spam, DMARC, reputation, content): about the message or
# the sender, not the recipient.
POLICY_CLASS = "7"

RejectionKind = Literal["address", "policy", "other"]


def find_status(text: str | None) -> str | None:
    """First enhanced status code in ``text``."""
    if not text:
        return None
    match = ENHANCED_RE.search(text)
    if match is None:
        return None
    return ".".join(match.groups())


def find_statuses(text: str) -> list[str]:
    return [".".join(m.groups()) for m in ENHANCED_RE.finditer(text)]


def find_reply_code(text: str | None) -> str | None:
    """First SMTP reply code (4yz/5yz) in ``text``."""
    if not text:
        return None
    for match in REPLY_RE.finditer(text):
        code = match.group(1)
        if code[0] in "45":
            return code
    return None


def is_generic(status: str | None) -> bool:
    """``X.0.0``-style codes carry no more than the class."""
    return status is None or status.endswith(".0.0")


def kind_from_status(status: str | None) -> str | None:
    if not status:
        return None
    if status.startswith("5"):
        return HARD
    if status.startswith("4"):
        return SOFT
    return None


def kind_from_reply(code: str | None) -> str | None:
    if not code:
        return None
    if code.startswith("5"):
        return HARD
    if code.startswith("4"):
        return SOFT
    return None


def significance(status: str | None) -> tuple[int, int]:
    """Sort key: permanent before transient, specific before generic."""
    if not status:
        return (0, 0)
    klass = {"5": 3, "4": 2}.get(status[0], 1)
    return (klass, 0 if is_generic(status) else 1)


def rejection_kind(code: int, text: str | None) -> RejectionKind:
    """What a permanent SMTP reply (5yz) at RCPT or DATA is about, by its enhanced status code:
    the recipient's address (suppress it), a policy or content refusal (the message or the
    sender: the address stays), or something else. Without an enhanced status code the reply
    is `other`: a bare 550 says too little to stop mailing someone for good."""
    status = find_status(text)
    if kind_from_reply(str(code)) != HARD or kind_from_status(status) != HARD:
        return "other"
    assert status is not None
    if status in ADDRESS_FAILURES:
        return "address"
    if status.split(".")[1] == POLICY_CLASS:
        return "policy"
    return "other"
