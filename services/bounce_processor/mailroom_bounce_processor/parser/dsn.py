"""RFC 3464 delivery status notifications (message/delivery-status)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .addresses import extract_address
from .models import DELAYED, FAILED, HARD, SOFT
from .status import find_reply_code, find_status, is_generic, kind_from_phrases, kind_from_reply

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "x-actual-recipient")
SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")
_DIAG_TYPE = re.compile(r"^\s*(?:smtp|x-[\w-]+|mta)\s*;\s*", re.IGNORECASE)
_BLOCK_FIELDS = ("final-recipient", "original-recipient", "action", "status")


@dataclass(frozen=True)
class DsnRecipient:
    address: str
    action: str | None
    """``failed`` | ``delayed`` | ``delivered`` | ``relayed`` | ``expanded`` | None."""
    status: str | None
    diagnostic: str | None
    kind: str | None


def _blocks(text: str) -> list[dict[str, str]]:
    """Split DSN text into field blocks (dicts of lower-cased field names)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for raw_line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw_line.rstrip()
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            last = None
            continue
        if line[0] in " \t" and last is not None:
            current[last] += " " + line.strip()
            continue
        match = _FIELD_RE.match(line.strip())
        if match is None:
            continue
        name = match.group(1).lower()
        value = match.group(2).strip()
        # Missing blank line between two recipient blocks: a field repeats.
        if (
            name in current
            and name in _BLOCK_FIELDS
            and ("action" in current or "status" in current)
        ):
            blocks.append(current)
            current = {}
        if name not in current:
            current[name] = value
        last = name
    if current:
        blocks.append(current)
    return blocks


def normalise_action(value: str | None) -> str | None:
    if not value:
        return None
    word = value.strip().lower().split()[0] if value.strip() else ""
    word = word.strip("(;,.")
    if word.startswith(("fail", "error", "bounce", "reject", "permanent")):
        return FAILED
    if word.startswith(("delay", "defer", "transient", "retry")):
        return DELAYED
    for success in SUCCESS_ACTIONS:
        if word.startswith(success[:5]):
            return success
    return None


def recipient_kind(action: str | None, status: str | None, diagnostic: str | None) -> str | None:
    if action == DELAYED:
        return SOFT
    if action in SUCCESS_ACTIONS:
        return None
    if status and status[0] in "45":
        return HARD if status[0] == "5" else SOFT
    reply = kind_from_reply(find_reply_code(diagnostic))
    if reply:
        return reply
    return kind_from_phrases(diagnostic) or (HARD if action == FAILED else None)


def _best_status(status_field: str | None, diagnostic: str | None) -> str | None:
    status = find_status(status_field)
    diag_status = find_status(diagnostic)
    if status is None:
        return diag_status
    if is_generic(status) and diag_status and diag_status[0] == status[0]:
        return diag_status
    return status


def parse_dsn_text(text: str) -> list[DsnRecipient]:
    """Per-recipient results of one delivery-status text."""
    result: list[DsnRecipient] = []
    for block in _blocks(text):
        has_recipient = any(f in block for f in _RECIPIENT_FIELDS)
        if not has_recipient:
            continue
        address = None
        for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
            address = extract_address(block.get(name))
            if address:
                break
        if not address:
            continue
        diagnostic = block.get("diagnostic-code") or block.get("x-diagnostic-code") or None
        if diagnostic:
            diagnostic = re.sub(
                r"^\s*(smtp|x-[\w-]+|x-unix|mta)\s*;\s*", "", diagnostic, flags=re.I
            )
        status = _best_status(block.get("status"), diagnostic)
        action = normalise_action(block.get("action"))
        if action is None:
            if status and status[0] == "2":
                action = "delivered"
            elif status and status[0] == "5":
                action = FAILED
            elif status and status[0] == "4":
                action = DELAYED if block.get("will-retry-until") else FAILED
            elif diagnostic:
                action = FAILED
        kind = recipient_kind(action, status, diagnostic)
        result.append(DsnRecipient(address, action, status, diagnostic, kind))
    return result


def looks_like_dsn_text(text: str) -> bool:
    """Plain text that carries DSN fields (MTAs that mislabel the part)."""
    return bool(
        re.search(r"^\s*(final|original)-recipient\s*:", text, re.I | re.M)
        and re.search(r"^\s*(action|status)\s*:", text, re.I | re.M)
    )
