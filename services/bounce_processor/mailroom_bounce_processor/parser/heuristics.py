"""Bounces that are not RFC 3464 DSNs: rules by MTA family and generic ones.

Each rule looks at the human-readable notice (the returned original cut off)
and yields (address, diagnostic) findings:

* Exim: ``X-Failed-Recipients`` plus the indented reason under each address;
* Postfix (without DSN), qmail, Yahoo, DragonFly, OpenSMTPD, Courier:
  ``<addr>:`` at the start of a line, the reason in the following paragraph;
* Sendmail / AOL / LLNL: "The following addresses had permanent fatal errors"
  blocks and ``>>> RCPT To:<addr>`` / ``<<< 550 ...`` transcripts;
* Exchange / Lotus Notes / GroupWise / SMTP32 / generic: "could not be
  delivered to the following recipients" lists, SMTP reply lines such as
  ``550 5.1.1 <x@y>: user unknown``, and "delivery to <addr> failed" sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .addresses import ADDRESS_RE, clean, extract_address, find_addresses
from .context import MessageContext
from .mime import get_all_headers, get_header

DAEMON_SENDER = re.compile(
    r"mailer[-_ ]?daemon|\bpost_?master\b|\bpoostmaster\b|mail\s+delivery\s+(?:sub)?system|"
    r"mail\s+delivery\s+service|\bmdaemon\b|\bmaildelivery|mail\.delivery|"
    r"\bmail\s+administrator\b|\bsmtp\s+gateway\b|\bdelivery[-_ ]?(?:status|notification|failure)|"
    r"\bnon[-_]?delivery\b|\bbounce[sd]?@|^<?>?$|\bmailerdaemon\b|\bmail\s+system\b|"
    r"\binternet\s+mail\s+delivery\b|\bnetwork\s+postmaster\b|\bmailer@",
    re.IGNORECASE,
)

BOUNCE_SUBJECT = re.compile(
    r"|".join(
        [
            r"undeliver(?:ed|able)",
            r"returned\s+(?:mail|to\s+sender|message)",
            r"mail\s+delivery\s+(?:failed|failure|problem|error|system|status|subsystem)",
            r"delivery\s+(?:status\s+notification|notification|report|failure|failed|problem|"
            r"has\s+failed|error|delayed|status)",
            r"failure\s+(?:notice|delivery)",
            r"failed\s+(?:delivery|mail)",
            r"non[-\s]?deliver(?:y|able)",
            r"nondeliverable",
            r"(?:could\s+not|couldn'?t|unable\s+to)\s+(?:be\s+)?(?:send|deliver)",
            r"not\s+(?:be\s+)?delivered",
            r"mail\s+(?:system\s+)?error",
            r"mail\s+failure",
            r"delayed\s+mail",
            r"warning:\s+(?:could\s+not\s+send|message\s+.*delayed)",
            r"(?:message|mail)\s+(?:delivery\s+)?(?:delayed|deferred)",
            r"postmaster\s+notify",
            r"see\s+transcript",
            r"bounced?\s+(?:mail|message|e-?mail)",
            r"error\s+sending\s+(?:your\s+)?(?:mail|message)",
            r"there\s+was\s+an\s+error\s+sending",
            r"unzustellbar|nicht\s+zustellbar",
            r"non\s+remis|non\s+distribu",
            r"notice:\s+mail\s+delivery\s+status",
            r"\bdsn\b",
            r"permanent\s+(?:delivery\s+)?(?:error|failure)",
            r"rejected\s+(?:mail|message)",
            r"message\s+(?:not\s+delivered|rejected|blocked|delivery\s+failure)",
            r"mail\s+could\s+not\s+be\s+delivered",
            r"delivery\s+(?:final\s+)?failure",
            r"unable\s+to\s+deliver",
        ]
    ),
    re.IGNORECASE,
)

BOUNCE_BODY = re.compile(
    r"|".join(
        [
            r"(?:could|can)\s*(?:not|n't)\s+be\s+delivered",
            r"(?:was|were)\s+not\s+(?:be\s+)?delivered",
            r"(?:wasn't|was\s+not)\s+able\s+to\s+deliver",
            r"unable\s+to\s+deliver",
            r"undeliverable",
            r"delivery\s+(?:to\s+the\s+following\s+recipients?\s+)?(?:has\s+)?failed",
            r"delivery\s+(?:attempts?\s+)?(?:will\s+continue|has\s+been\s+delayed|is\s+delayed)",
            r"(?:permanent|transient)\s+(?:non-)?fatal\s+errors",
            r"following\s+address(?:es|\(es\))?\s+(?:had|failed)",
            r"error\s+delivering\s+(?:your\s+)?(?:mail|message)",
            r"message\s+(?:could\s+not|cannot|can't)\s+be\s+(?:delivered|sent)",
            r"did\s+not\s+reach\s+(?:some\s+or\s+all|the\s+following)",
            r"this\s+is\s+the\s+(?:qmail-send|mail\s+system|mail\s+delivery)",
            r"created\s+automatically\s+by\s+mail\s+delivery\s+software",
            r"delivery\s+to\s+(?:the\s+following\s+)?recipients?\s+(?:was\s+)?(?:failed|unsuccessful)",
            r"returning\s+(?:the\s+)?message\s+to\s+(?:the\s+)?sender",
            r"message\s+(?:was\s+)?(?:returned|rejected|bounced)",
            r"i'?m\s+(?:sorry|afraid)\s+(?:to\s+have\s+to\s+inform\s+you|i\s+wasn'?t\s+able)",
            r"(?:host|domain)\s+not\s+found",
            r"\buser\s+unknown\b",
            r"no\s+such\s+(?:user|mailbox)",
            r"recipient\s+address\s+rejected",
            r"not\s+a\s+valid\s+(?:user|recipient|mailbox|address)",
            r"invalid\s+(?:user|recipient|mailbox)\s+address",
            r"transcript\s+of\s+(?:the\s+)?session\s+follows",
            r"requested\s+action\s+not\s+taken",
        ]
    ),
    re.IGNORECASE,
)

_SMTP_LINE = re.compile(
    r"(?:^|[\s(:])(?:<<<\s*)?[45]\d\d(?:[ -]#?[45]\.\d{1,3}\.\d{1,3})?[ -]", re.MULTILINE
)
_FAILURE_WORDS = re.compile(
    r"\b(?:unknown|not\s+found|no\s+such|does\s+not\s+exist|doesn't\s+exist|invalid|rejected|"
    r"refused|denied|unavailable|disabled|inactive|full|quota|over\s*quota|failed|failure|"
    r"undeliverable|not\s+delivered|could\s+not\s+be\s+delivered|unable|error|expired|"
    r"timed?\s*out|blocked|blacklist|spam|not\s+accepted|not\s+allowed|illegal|bad|"
    r"suspended|deactivated|closed|permanent|temporar\w+|deferred|delayed|unrouteable|"
    r"mailbox|user)\b|#[45]\.\d",
    re.IGNORECASE,
)
_LIST_INTRO = re.compile(
    r"(?:following|these|this)\s+(?:\w+\s+){0,3}(?:address(?:es|\(es\))?|recipients?(?:\(s\))?|"
    r"users?|destinations?|mailbox(?:es)?)"
    r"|(?:address(?:es|\(es\))?|recipients?(?:\(s\))?)\s+(?:\w+\s+){0,3}(?:failed|unknown|"
    r"could\s+not|cannot|were\s+not|was\s+not|not\s+delivered|rejected)"
    r"|(?:could\s+not|cannot|can't|unable\s+to)\s+(?:be\s+)?deliver(?:ed)?\s+(?:\w+\s+){0,4}to\s*:?\s*$"
    r"|recipients?\s*:\s*$|sent\s+to\s*:\s*$|delivered\s+to\s*:\s*$|^\s*to\s*:\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_ANGLE_COLON = re.compile(
    r"^[ \t]*<([^<>\s]+@[^<>\s]+)>(?:[ \t]*\([^)\n]{0,200}\))?[ \t]*:?[ \t]*(.*)$", re.MULTILINE
)
_BARE_ADDR_LINE = re.compile(
    r"^[ \t]*(?:(?:RCPT\s+TO|To|Recipient(?:\s+address)?|Address|Original-Recipient)\s*:\s*)?"
    r"<?([\w.!#$%&'*+/=?^`~-]+@[\w.-]+\.[A-Za-z]{2,})>?[ \t]*(?:[:;,.]|\.\.\.)?[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)
_TRANSCRIPT_RCPT = re.compile(
    r"^\s*>>>\s*RCPT\s+TO:\s*<?([^<>\s]+@[^<>\s]+?)>?\s*$\n((?:^\s*<<<.*$\n?){1,6})",
    re.MULTILINE | re.IGNORECASE,
)
_RCPT_ECHO = re.compile(
    r"^[ \t]*(?:in:|>>>|<<<)?[ \t]*rcpt[ \t]+to[ \t]*:[ \t]*<?([^<>\s]+@[^<>\s]+?)>?(?:[ \t]|$)",
    re.IGNORECASE | re.MULTILINE,
)
_FAILED_REPLY = re.compile(r"(?<![\w.])[45]\d\d(?:[ -]+[45]\.\d{1,3}\.\d{1,3})?[ -].*$", re.M)
_REPLY_WITH_ADDR = re.compile(
    r"^.*?(?<![\w.])([45]\d\d)(?:[ -]#?([45]\.\d{1,3}\.\d{1,3}))?[ -].*$", re.MULTILINE
)
_SENTENCE_TO_ADDR = re.compile(
    r"(?:deliver(?:ing|y)?|sent|send(?:ing)?|message|mail|e-?mail|forward(?:ed|ing)?|"
    r"recipient|address|mailbox|user|account)"
    r"[^\n<>@]{0,80}?\b(?:to|for|address|recipient|user|mailbox|account)\b\s*[:=]?\s*"
    r"[\"'(\[]?<?([\w.!#$%&'*+/=?^`~-]+@[\w.-]+\.[A-Za-z]{2,})",
    re.IGNORECASE,
)
_NOT_RECIPIENT_LOCAL = re.compile(
    r"^(?:mailer-daemon|postmaster|poostmaster|abuse|root|nobody|noreply|no-reply|"
    r"bounces?|hostmaster|webmaster|mail-daemon|daemon|mailerdaemon|mdaemon)$",
    re.IGNORECASE,
)
# Message-ID-like tokens (hex runs with separators); all-digit local parts are
# real mailboxes (SMS gateways, QQ) and stay.
_MESSAGE_ID_LIKE = re.compile(r"^(?=[^@]*\d)(?=[^@]*[.$])[0-9a-f.$_-]{16,}@", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    address: str
    diagnostic: str | None


def _addresses_in_header(ctx: MessageContext, *names: str) -> set[str]:
    found: set[str] = set()
    for name in names:
        for value in get_all_headers(ctx.msg, name):
            found.update(find_addresses(value))
        if ctx.original is not None and name.lower() in (
            "from",
            "sender",
            "return-path",
            "reply-to",
        ):
            addressed = {
                a
                for header in ("to", "cc")
                for value in get_all_headers(ctx.original, header)
                for a in find_addresses(value)
            }
            for value in get_all_headers(ctx.original, name):
                found.update(a for a in find_addresses(value) if a not in addressed)
    return found


def _excluded(ctx: MessageContext) -> set[str]:
    """Addresses that are certainly not the failed recipients."""
    return _addresses_in_header(
        ctx, "from", "to", "sender", "reply-to", "return-path", "errors-to", "cc"
    )


def _acceptable(address: str, excluded: set[str]) -> bool:
    if address in excluded or "@" not in address:
        return False
    local, _, domain = address.rpartition("@")
    if _NOT_RECIPIENT_LOCAL.match(local) or "." not in domain:
        return False
    if _MESSAGE_ID_LIKE.search(address):
        return False
    return not domain.endswith((".png", ".gif", ".jpg", ".htm", ".html"))


def _paragraph_after(text: str, pos: int, max_lines: int = 8) -> str:
    """The text from ``pos`` to the next blank line (bounded)."""
    lines: list[str] = []
    for line in text[pos:].splitlines()[:max_lines]:
        if not line.strip():
            if lines:
                break
            continue
        if lines and ADDRESS_RE.match(line.strip().lstrip("<")) and not line.startswith(" "):
            break
        lines.append(line.strip())
    return " ".join(lines)[:1000]


def _exim(ctx: MessageContext, excluded: set[str]) -> list[Finding]:
    values = get_all_headers(ctx.msg, "x-failed-recipients")
    findings: list[Finding] = []
    text = ctx.notification
    for value in values:
        for address in find_addresses(value):
            diagnostic = None
            match = re.search(r"^[ \t]*<?" + re.escape(address) + r">?", text, re.I | re.M)
            if match:
                block = text[match.end() :].splitlines()[1:12]
                reason: list[str] = []
                for line in block:
                    if not line.strip() or not line[:1].isspace():
                        break
                    reason.append(line.strip())
                diagnostic = " ".join(reason) or None
            findings.append(Finding(address, diagnostic))
    return findings


def _angle_colon(ctx: MessageContext, excluded: set[str]) -> list[Finding]:
    """Postfix / qmail / Yahoo style: ``<addr>: reason`` at the start of a line."""
    findings: list[Finding] = []
    text = ctx.notification
    for match in _ANGLE_COLON.finditer(text):
        address = clean(match.group(1))
        if not _acceptable(address, excluded):
            continue
        rest = match.group(2).strip()
        following = _paragraph_after(text, match.end())
        diagnostic = " ".join(x for x in (rest, following) if x) or None
        if diagnostic is None or not _FAILURE_WORDS.search(diagnostic):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
            if before and not ADDRESS_RE.search(before) and _FAILURE_WORDS.search(before):
                diagnostic = " ".join(x for x in (before, diagnostic) if x)
        # The whole line being just an address needs some failure context.
        if diagnostic is None or not (
            _FAILURE_WORDS.search(diagnostic) or _SMTP_LINE.search(diagnostic)
        ):
            continue
        findings.append(Finding(address, diagnostic))
    return findings


def _transcript(ctx: MessageContext, excluded: set[str]) -> list[Finding]:
    findings: list[Finding] = []
    for match in _TRANSCRIPT_RCPT.finditer(ctx.notification):
        address = clean(match.group(1))
        reply = " ".join(line.strip().lstrip("<").strip() for line in match.group(2).splitlines())
        if _acceptable(address, excluded) and re.search(r"\b[45]\d\d\b", reply):
            findings.append(Finding(address, reply))
    if findings:
        return findings
    # "RCPT TO: addr" echoed in a report whose session failed somewhere.
    failure = _FAILED_REPLY.search(ctx.notification)
    if failure is None:
        return findings
    for match in _RCPT_ECHO.finditer(ctx.notification):
        address = clean(match.group(1))
        if _acceptable(address, excluded):
            findings.append(Finding(address, failure.group(0).strip()))
    return findings


def _listed(ctx: MessageContext, excluded: set[str]) -> list[Finding]:
    """Addresses listed under a "the following recipients failed" style line."""
    findings: list[Finding] = []
    text = ctx.notification
    for intro in _LIST_INTRO.finditer(text):
        line_end = text.find("\n", intro.end())
        if line_end < 0:
            continue
        # Same-line addresses ("Delivery failed 20 attempts: a@b").
        same_line = text[intro.start() : line_end]
        for address in find_addresses(same_line):
            if _acceptable(address, excluded):
                findings.append(Finding(address, same_line.strip()))
        lines = text[line_end + 1 :].splitlines()
        seen_address = False
        blank_run = 0
        for index, line in enumerate(lines[:30]):
            if not line.strip():
                blank_run += 1
                if seen_address or blank_run > 2:
                    break
                continue
            blank_run = 0
            addresses = [a for a in find_addresses(line) if _acceptable(a, excluded)]
            if not addresses:
                if seen_address and not line[:1].isspace() and not _SMTP_LINE.search(line):
                    break
                if not seen_address and index > 3:
                    break
                continue
            if len(line.strip()) > 200:
                break
            seen_address = True
            diagnostic = _paragraph_after("\n".join(lines[index:]), 0)
            for address in addresses:
                findings.append(Finding(address, diagnostic or line.strip()))
    return findings


def _reply_lines(ctx: MessageContext, excluded: set[str]) -> list[Finding]:
    """SMTP replies that name the recipient: ``550 5.1.1 <x@y>: user unknown``."""
    findings: list[Finding] = []
    for match in _REPLY_WITH_ADDR.finditer(ctx.notification):
        line = match.group(0)
        if not _FAILURE_WORDS.search(line) and not match.group(2):
            continue
        for address in find_addresses(line):
            if _acceptable(address, excluded):
                findings.append(Finding(address, line.strip()[:500]))
    return findings


def _sentences(ctx: MessageContext, excluded: set[str]) -> list[Finding]:
    """ "Your message to <addr> could not be delivered", "error delivering to <addr>"."""
    findings: list[Finding] = []
    text = ctx.notification
    for match in _SENTENCE_TO_ADDR.finditer(text):
        address = clean(match.group(1))
        if not _acceptable(address, excluded):
            continue
        window = text[max(0, match.start() - 200) : match.end() + 400]
        if not (_FAILURE_WORDS.search(window) or BOUNCE_BODY.search(window)):
            continue
        diagnostic = _paragraph_after(text, match.start())
        findings.append(Finding(address, diagnostic))
    return findings


def _failure_lines(ctx: MessageContext, excluded: set[str]) -> list[Finding]:
    """Last resort: addresses on lines with failure words."""
    findings: list[Finding] = []
    for line in ctx.notification.splitlines():
        if not _FAILURE_WORDS.search(line) or len(line) > 300:
            continue
        for address in find_addresses(line):
            if _acceptable(address, excluded):
                findings.append(Finding(address, line.strip()))
    return findings


def _merge(findings: list[Finding]) -> list[Finding]:
    merged: dict[str, Finding] = {}
    for finding in findings:
        current = merged.get(finding.address)
        if current is None or (not current.diagnostic and finding.diagnostic):
            merged[finding.address] = finding
    return list(merged.values())


def detect(ctx: MessageContext) -> list[Finding]:
    """Failed recipients found by our own rules (first rule that finds any wins)."""
    excluded = _excluded(ctx)
    exim = _exim(ctx, excluded)
    if exim:
        return _merge(exim)
    # Precise patterns together (a transcript may list several failures) ...
    precise = [
        *_angle_colon(ctx, excluded),
        *_transcript(ctx, excluded),
        *_reply_lines(ctx, excluded),
    ]
    if precise:
        return _merge(precise)
    # ... then looser ones, first that finds anything.
    for rule in (_listed, _sentences, _failure_lines):
        found = rule(ctx, excluded)
        if found:
            return _merge(found)
    return []


def plausible(ctx: MessageContext, addresses: set[str]) -> set[str]:
    """Drop addresses that are the bounce's own parties, daemons or Message-IDs.

    (Looser than the exclusions of our own rules: flufl.bounce's detectors
    know where they read an address from.)
    """
    excluded = _message_ids(ctx)
    for name in ("from", "sender", "reply-to", "return-path", "to"):
        for value in get_all_headers(ctx.msg, name):
            excluded.update(find_addresses(value))
    if ctx.original is not None:
        addressed: set[str] = set()
        for name in ("to", "cc"):
            for value in get_all_headers(ctx.original, name):
                addressed.update(find_addresses(value))
        for name in ("from", "sender", "return-path"):
            for value in get_all_headers(ctx.original, name):
                excluded.update(a for a in find_addresses(value) if a not in addressed)
    return {a for a in addresses if _acceptable(a, excluded)}


def _message_ids(ctx: MessageContext) -> set[str]:
    ids: set[str] = set()
    for msg in (ctx.msg, ctx.original):
        if msg is None:
            continue
        for name in ("message-id", "in-reply-to", "references"):
            for value in get_all_headers(msg, name):
                ids.update(find_addresses(value))
    return ids


def diagnostic_for(ctx: MessageContext, address: str) -> str | None:
    """Text around ``address`` in the notice, for addresses found by flufl.bounce."""
    text = ctx.notification
    match = re.search(re.escape(address), text, re.IGNORECASE)
    if match is None:
        return None
    start = text.rfind("\n", 0, match.start()) + 1
    return _paragraph_after(text, start, max_lines=10) or None


def strong_bounce_hint(ctx: MessageContext) -> str | None:
    """Header evidence that this is a delivery-failure notice."""
    if get_header(ctx.msg, "x-failed-recipients"):
        return "X-Failed-Recipients header"
    if ctx.report_type == "delivery-status":
        return "multipart/report; report-type=delivery-status"
    sender = ctx.sender
    if (DAEMON_SENDER.search(sender) or not sender) and (
        BOUNCE_SUBJECT.search(ctx.subject) or BOUNCE_BODY.search(ctx.notification[:20000])
    ):
        return f"sent by {sender[:60] or 'an empty sender'}"
    if BOUNCE_SUBJECT.search(ctx.subject):
        return f"bounce subject {ctx.subject[:60]!r}"
    return None


def looks_like_bounce(ctx: MessageContext) -> str | None:
    """Weaker evidence: bounce wording in the notice."""
    strong = strong_bounce_hint(ctx)
    if strong:
        return strong
    match = BOUNCE_BODY.search(ctx.notification[:20000])
    if match:
        return f"bounce wording {match.group(0)[:40]!r}"
    return None


def single_original_recipient(ctx: MessageContext) -> str | None:
    """The To of the returned original, when it names exactly one address."""
    if ctx.original is None:
        return None
    addresses = find_addresses(get_header(ctx.original, "to"))
    if len(addresses) == 1:
        return extract_address(addresses[0])
    return None
