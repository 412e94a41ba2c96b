"""Is an outbound email addressed to the person its item names? (the To header's half; the
envelope recipient is compared with the item's address in PostgreSQL when it is claimed)"""

from __future__ import annotations

import re
from email.utils import getaddresses

from mailroom_common.events import OutboundEmail

_FOLDED = re.compile(r"\r?\n[ \t]+")
_HEADER_END = re.compile(r"\r?\n\r?\n")
MAX_HEADER_CHARS = 256 * 1024


def _header_values(message: str, name: str) -> list[str]:
    head = _HEADER_END.split(message[:MAX_HEADER_CHARS], maxsplit=1)[0]
    prefix = f"{name.lower()}:"
    return [
        line[len(prefix) :].strip()
        for line in _FOLDED.sub(" ", head).splitlines()
        if line.lower().startswith(prefix)
    ]


def to_header_problem(email: OutboundEmail) -> str | None:
    """None when the message has one To header naming exactly its envelope recipient."""
    values = _header_values(email.message, "To")
    if len(values) != 1:
        return f"{len(values)} To headers"
    addresses = [address for _name, address in getaddresses(values) if address]
    if len(addresses) != 1:
        return f"To names {len(addresses)} addresses"
    if addresses[0].lower() != email.recipient.lower():
        return "To names another address than the envelope"
    return None
