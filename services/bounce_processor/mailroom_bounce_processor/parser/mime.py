"""Defensive MIME helpers: parse any bytes, walk parts without recursion, decode text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesParser, HeaderParser

MAX_PARSE_BYTES = 4 * 1024 * 1024
"""Only this much of a message is MIME-parsed; bounce reports sit at the start."""
MAX_DEPTH = 40
"""Deeper message/rfc822 nesting than this is not looked into."""
MAX_PARTS = 400
MAX_TEXT_CHARS = 256 * 1024
"""Per decoded text part."""

_HTML_TAG = re.compile(r"<[^>]{0,2000}>")
_HTML_BREAK = re.compile(r"<\s*(br|/p|/div|/tr|/li|p|div|tr)\b[^>]{0,500}>", re.IGNORECASE)
_HTML_SKIP = re.compile(r"<(style|script)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


_BOUNDARY_PARAM = re.compile(rb"""(boundary\s*=\s*)("[^"\r\n]*"|[^;\s]+)""", re.IGNORECASE)
_BOUNDARY_LINE = re.compile(rb"^--([^\s]{1,200}?)(?:--)?\r?$", re.MULTILINE)


def parse_bytes(raw: bytes) -> Message:
    """Parse ``raw`` leniently (compat32, as flufl.bounce expects); may raise.

    A multipart whose declared boundary never occurs in the body (seen in the
    wild) is re-parsed with the boundary actually used.
    """
    data = raw[:MAX_PARSE_BYTES]
    msg = BytesParser(policy=policy.compat32).parsebytes(data)
    if msg.get_content_maintype() == "multipart" and isinstance(msg.get_payload(), str):
        repaired = _repair_boundary(data)
        if repaired is not None:
            fixed = BytesParser(policy=policy.compat32).parsebytes(repaired)
            if isinstance(fixed.get_payload(), list):
                return fixed
    return msg


def _repair_boundary(data: bytes) -> bytes | None:
    match = re.search(rb"\r?\n\r?\n", data)
    if match is None:
        return None
    head, body = data[: match.start()], data[match.start() :]
    counts: dict[bytes, int] = {}
    for line in _BOUNDARY_LINE.finditer(body[:200_000]):
        counts[line.group(1)] = counts.get(line.group(1), 0) + 1
    candidates = [b for b, n in counts.items() if n >= 2 and not b.startswith(b"-" * 8 + b" ")]
    if not candidates:
        return None
    boundary = candidates[0]
    new_head, replaced = _BOUNDARY_PARAM.subn(
        lambda m: m.group(1) + b'"' + boundary + b'"', head, count=1
    )
    return new_head + body if replaced else None


def parse_headers_text(text: str) -> Message:
    """Parse a header block given as text (e.g. a text/rfc822-headers part)."""
    return HeaderParser(policy=policy.compat32).parsestr(text[:MAX_TEXT_CHARS])


def header_str(value: object) -> str:
    """Any header value (str, Header, None) as a clean str; RFC 2047 decoded."""
    if value is None:
        return ""
    try:
        if isinstance(value, Header):
            text = str(value)
        else:
            text = str(value)
            if "=?" in text:
                text = str(make_header(decode_header(text)))
    except Exception:
        text = str(value) if not isinstance(value, Header) else ""
    # Lone surrogates from undeclared 8-bit bytes: make them printable.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split())


def get_header(msg: Message, name: str) -> str:
    try:
        return header_str(msg.get(name))
    except Exception:
        return ""


def get_all_headers(msg: Message, name: str) -> list[str]:
    try:
        values = msg.get_all(name) or []
    except Exception:
        return []
    return [header_str(v) for v in values]


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def content_param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    if isinstance(value, tuple):
        value = value[2]
    return str(value or "").strip().lower()


@dataclass(frozen=True)
class Part:
    """A leaf or container part, with its nesting depth and whether it is inside
    an attached (returned) message."""

    message: Message
    depth: int
    in_attached: bool


def walk(msg: Message, max_depth: int = MAX_DEPTH, max_parts: int = MAX_PARTS) -> Iterator[Part]:
    """Iterative, bounded replacement for ``Message.walk``."""
    stack: list[Part] = [Part(msg, 0, False)]
    seen = 0
    while stack and seen < max_parts:
        item = stack.pop()
        seen += 1
        yield item
        if item.depth >= max_depth:
            continue
        try:
            payload = item.message.get_payload()
        except Exception:
            continue
        if not isinstance(payload, list):
            continue
        ctype = content_type(item.message)
        attached = item.in_attached or ctype in ("message/rfc822", "message/global")
        children = [
            Part(sub, item.depth + 1, attached) for sub in payload if isinstance(sub, Message)
        ]
        stack.extend(reversed(children))


def decode_text(part: Message) -> str:
    """Decoded text of a non-multipart part, never raising."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        try:
            raw = part.get_payload()
        except Exception:
            return ""
        if isinstance(raw, str):
            return raw[:MAX_TEXT_CHARS]
        return ""
    if not isinstance(payload, bytes):
        return ""
    data = payload[: MAX_TEXT_CHARS * 2]
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:
        charset = "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return data.decode(candidate)[:MAX_TEXT_CHARS]
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1")[:MAX_TEXT_CHARS]


def html_to_text(html: str) -> str:
    import html as html_mod

    text = _HTML_SKIP.sub(" ", html)
    text = _HTML_BREAK.sub("\n", text)
    text = _HTML_TAG.sub(" ", text)
    return html_mod.unescape(text)


def payload_messages(part: Message) -> list[Message]:
    """Sub-messages of a message/* or multipart part."""
    try:
        payload = part.get_payload()
    except Exception:
        return []
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []
