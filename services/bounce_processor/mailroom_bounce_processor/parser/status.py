"""RFC 3463 status codes, SMTP reply codes and well-known phrases -> hard / soft."""

from __future__ import annotations

import re

from .models import HARD, SOFT

ENHANCED_RE = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w.]*\d)")
"""An enhanced status code anywhere in a text (not part of an IP or version)."""
REPLY_RE = re.compile(r"(?<![\w.\-#])([245][0-5]\d)(?=[ \-,;]|$)", re.MULTILINE)
"""A three-digit SMTP reply code."""

# Phrases that mean the failure is transient even when no code says so.
_SOFT_PHRASES = re.compile(
    r"|".join(
        [
            r"(?:temporary|transient)\s+(?:local\s+)?(?:failure|error|problem|condition)",
            r"temporarily\s+(?:deferred|rejected|unavailable|blocked|refused|disabled|failed)",
            r"try\s+(?:again\s+)?later",
            r"will\s+(?:keep\s+)?(?:retry|try\s+again|be\s+retried|continue\s+to\s+try)",
            r"(?:still|being)\s+(?:trying|retried|retrying)",
            r"(?:has\s+been|was|is)\s+delayed",
            r"greylist",
            r"too\s+many\s+(?:connections|concurrent|messages\s+in\s+queue)",
            r"\bdeferred\b",
        ]
    ),
    re.IGNORECASE,
)

_DELAY_NOTICE = re.compile(
    r"|".join(
        [
            r"warning\s+message\s+only",
            r"do\s+not\s+need\s+to\s+re-?send",
            r"(?:will|shall)\s+(?:be\s+retried|keep\s+trying|continue\s+to\s+try|retry)",
            r"still\s+being\s+retried",
            r"only\s+a\s+temporary\s+failure\s+report",
            r"delivery\s+(?:attempts?\s+)?(?:will\s+continue|has\s+been\s+delayed)",
            r"has\s+not\s+yet\s+been\s+delivered",
            r"could\s+not\s+(?:yet\s+)?be\s+delivered\s+yet",
            r"message\s+(?:is|has\s+been)\s+delayed",
            r"is\s+delayed\s+for\s+more\s+than",
        ]
    ),
    re.IGNORECASE,
)

_HARD_PHRASES = re.compile(
    r"|".join(
        [
            r"user\s+(?:unknown|not\s+found|doesn'?t\s+exist|does\s+not\s+exist)",
            r"unknown\s+(?:user|recipient|local[\s-]part|address|mailbox)",
            r"no\s+such\s+(?:user|mailbox|recipient|address|account|local\s+user|domain)",
            r"(?:mailbox|address|account|recipient|user)\s+(?:does\s+not|doesn'?t)\s+exist",
            r"(?:mailbox|address|account|recipient)\s+(?:is\s+)?(?:unavailable|disabled|inactive)",
            r"(?:invalid|unknown|bad)\s+(?:recipient|address|mailbox|user|destination)",
            r"(?:recipient|address)\s+rejected",
            r"not\s+a\s+valid\s+(?:mailbox|recipient|user|address)",
            r"(?:host|domain)\s+(?:not\s+found|unknown|does\s+not\s+exist)",
            r"unknown\s+(?:host|domain)",
            r"unrouteable\s+address",
            r"no\s+mx\s+(?:record|host)",
            r"permanent(?:ly)?\s+(?:error|failure|fatal|rejected|failed)",
            r"fatal\s+errors?",
            r"account\s+(?:has\s+been\s+)?(?:disabled|closed|suspended|expired|deactivated)",
            r"relay(?:ing)?\s+(?:denied|not\s+permitted|access\s+denied)",
            r"(?:message|mail)\s+rejected",
            r"undeliverable\s+address",
        ]
    ),
    re.IGNORECASE,
)


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


def kind_from_phrases(text: str | None) -> str | None:
    """``soft`` or ``hard`` from well-known wording, ``None`` if nothing matches."""
    if not text:
        return None
    soft = _SOFT_PHRASES.search(text)
    hard = _HARD_PHRASES.search(text)
    if soft and hard:
        return SOFT if soft.start() < hard.start() else HARD
    if soft:
        return SOFT
    if hard:
        return HARD
    return None


def soft_phrase(text: str | None) -> bool:
    return bool(text) and _SOFT_PHRASES.search(text or "") is not None


def significance(status: str | None) -> tuple[int, int]:
    """Sort key: permanent before transient, specific before generic."""
    if not status:
        return (0, 0)
    klass = {"5": 3, "4": 2}.get(status[0], 1)
    return (klass, 0 if is_generic(status) else 1)


def is_delay_notice(subject: str, text: str) -> bool:
    """A warning that delivery is still being retried (not a final failure)."""
    if re.search(r"\bdelay(?:ed)?\b|still\s+being\s+retried", subject, re.I):
        return True
    return bool(_DELAY_NOTICE.search(text[:6000]))
