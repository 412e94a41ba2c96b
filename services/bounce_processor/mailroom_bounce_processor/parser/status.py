"""RFC 3463 status codes, SMTP reply codes and well-known phrases -> hard / soft.

The rules on codes are shared with the outbound sender (mailroom_common.smtp_status); the
phrases and delay notices are a bounce message's own."""

from __future__ import annotations

import re

from mailroom_common.smtp_status import (
    ENHANCED_RE,
    REPLY_RE,
    find_reply_code,
    find_status,
    find_statuses,
    is_generic,
    kind_from_reply,
    kind_from_status,
    significance,
)

from .models import HARD, SOFT

__all__ = [
    "ENHANCED_RE",
    "REPLY_RE",
    "find_reply_code",
    "find_status",
    "find_statuses",
    "is_delay_notice",
    "is_generic",
    "kind_from_phrases",
    "kind_from_reply",
    "kind_from_status",
    "significance",
    "soft_phrase",
]

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


def is_delay_notice(subject: str, text: str) -> bool:
    """A warning that delivery is still being retried (not a final failure)."""
    if re.search(r"\bdelay(?:ed)?\b|still\s+being\s+retried", subject, re.I):
        return True
    return bool(_DELAY_NOTICE.search(text[:6000]))
