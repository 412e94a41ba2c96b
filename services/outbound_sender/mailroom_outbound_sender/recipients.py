"""Is an outbound email addressed to the person its item names? (the To header's half; the
envelope recipient is compared with the item's address in PostgreSQL when it is claimed)"""

from __future__ import annotations

import re
from email.utils import getaddresses

from mailroom_common.events import OutboundEmail

_FOLDED = re.compile(r"\r?\n[ \t]+")
_HEADER_END = re.compile(r"\r?\n\r?\n")
MAX_HEADER_CHARS = 256 * 1024
# A display name of atoms, dots, spaces and RFC 2047 encoded words (or a quoted string with
# no quote or backslash inside) before `<local@domain>`: one address, whatever parses it.
# The renderer writes every To header so; anything else goes to email.utils.getaddresses
# (a fifth of the sender's CPU per message when every header went there).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PHRASE = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~. -]*|\"[^\"\\\r\n]*\")"
_PLAIN_TO = re.compile(
    rf" *{_PHRASE} *<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)> *"
    rf"|({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)"
)


def _header_values(message: str, name: str) -> list[str]:
    head = _HEADER_END.split(message[:MAX_HEADER_CHARS], maxsplit=1)[0]
    prefix = f"{name.lower()}:"
    return [
        line[len(prefix) :].strip()
        for line in _FOLDED.sub(" ", head).splitlines()
        if line.lower().startswith(prefix)
    ]


def to_addresses(value: str) -> list[str]:
    """The addresses a To header's value names."""
    plain = _PLAIN_TO.fullmatch(value)
    if plain is not None:
        return [plain.group(1) or plain.group(2)]
    return [address for _name, address in getaddresses([value]) if address]


def to_header_problem(email: OutboundEmail) -> str | None:
    """None when the message has one To header naming exactly its envelope recipient."""
    values = _header_values(email.message, "To")
    if len(values) != 1:
        return f"{len(values)} To headers"
    addresses = to_addresses(values[0])
    if len(addresses) != 1:
        return f"To names {len(addresses)} addresses"
    if addresses[0].lower() != email.recipient.lower():
        return "To names another address than the envelope"
    return None
