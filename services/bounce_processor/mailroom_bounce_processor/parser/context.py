"""One pass over a parsed message: the pieces every detector needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message

from .mime import (
    MAX_TEXT_CHARS,
    content_param,
    content_type,
    decode_text,
    get_header,
    html_to_text,
    parse_headers_text,
    payload_messages,
    walk,
)

# A separator line introducing the returned original inside a plain-text bounce.
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>]*(?:"
    # Decorated separators: "----- Original message -----", "=== Returned mail ===".
    r"(?:[-=_*#]{2,}|\*+)[ \t]*[^\n]{0,60}?\b(?:original|returned|unsent|undelivered|"
    r"undeliverable|rejected|bounced|copy\s+of)\b[^\n]{0,40}?\b(?:message|mail|e-?mail|headers?|"
    r"text|body|content)\b[^\n]{0,60}"
    # Undecorated separator sentences, alone on their line.
    r"|(?:--+\s*)?below\s+this\s+line\s+is\s+a\s+copy\s+of\s+the\s+message[^\n]{0,20}"
    r"|(?:this\s+is\s+a\s+)?copy\s+of\s+(?:the|your)\s+(?:original\s+)?message"
    r"(?:,\s+including\s+all\s+the\s+headers)?[ \t.:]*"
    r"|(?:the\s+)?(?:original|returned|unsent|undelivered)\s+(?:message|mail|e-?mail)"
    r"(?:\s+(?:headers?|text|body))?\s*(?:follows?|below|is\s+below|attached|is\s+following)?"
    r"[ \t.:]*"
    r"|(?:the\s+)?headers?\s+of\s+(?:the\s+)?original\s+message[^\n]{0,30}"
    r"|(?:original\s+)?message\s+headers?\s+follows?[ \t.:]*"
    r"|content-type:\s*(?:message/rfc822|text/rfc822-headers)[^\n]{0,40}"
    r")[ \t-]*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}:[ \t]?\S", re.MULTILINE)


@dataclass
class MessageContext:
    """Everything the detectors share about one message."""

    msg: Message
    subject: str
    sender: str
    """The From header, lower-cased."""
    content_type: str
    report_type: str
    notification: str
    """Human-readable text of the notice, without the returned original."""
    full_text: str
    """All non-attached text (including any inline original)."""
    delivery_status: list[str] = field(default_factory=list)
    """Raw texts of message/delivery-status parts."""
    feedback_reports: list[str] = field(default_factory=list)
    """Raw texts of message/feedback-report parts."""
    has_disposition_notification: bool = False
    original: Message | None = None
    """The returned original (headers at least), if any."""
    has_attached_message: bool = False


def _raw_text(part: Message) -> str:
    """Text of a message/* part whatever the parser made of it."""
    try:
        payload = part.get_payload()
    except Exception:
        return ""
    if isinstance(payload, str):
        if (part.get("content-transfer-encoding") or "").lower().strip() in (
            "base64",
            "quoted-printable",
        ):
            return decode_text(part)
        return payload[:MAX_TEXT_CHARS]
    chunks: list[str] = []
    if isinstance(payload, list):
        for block in payload:
            if not isinstance(block, Message):
                continue
            lines = [f"{key}: {get_header_value(value)}" for key, value in block.items()]
            body = block.get_payload()
            chunks.append("\n".join(lines))
            if isinstance(body, str) and body.strip():
                chunks.append(body)
    return "\n\n".join(chunks)[:MAX_TEXT_CHARS]


def get_header_value(value: object) -> str:
    from .mime import header_str

    return header_str(value)


def split_original(text: str) -> tuple[str, str | None]:
    """Split plain bounce text at the marker that introduces the original."""
    match = _ORIGINAL_MARKER.search(text)
    if match is None:
        return text, None
    return text[: match.start()], text[match.end() :]


def _headers_from_text(text: str) -> Message | None:
    """Parse a header block at (or near) the start of ``text``."""
    lines = text.lstrip("\r\n").splitlines()
    # Skip a few lines of chatter before the headers.
    for start in range(min(len(lines), 8)):
        line = lines[start].lstrip(" >")
        if _HEADER_LINE.match(line):
            block = "\n".join(ln[1:] if ln.startswith(">") else ln for ln in lines[start:])
            try:
                parsed = parse_headers_text(block)
            except Exception:
                return None
            if parsed.keys():
                return parsed
            return None
    return None


def build_context(msg: Message) -> MessageContext:
    ctype = content_type(msg)
    ctx = MessageContext(
        msg=msg,
        subject=get_header(msg, "subject"),
        sender=get_header(msg, "from").lower(),
        content_type=ctype,
        report_type=content_param(msg, "report-type") if ctype == "multipart/report" else "",
        notification="",
        full_text="",
    )
    plain: list[str] = []
    html: list[str] = []
    for item in walk(msg):
        part = item.message
        ptype = content_type(part)
        if ptype in (
            "message/rfc822",
            "message/global",
            "text/rfc822-headers",
            "message/rfc822-headers",
            "message/global-headers",
        ):
            if not item.in_attached:
                ctx.has_attached_message = True
            if ctx.original is None and not item.in_attached:
                if ptype in ("message/rfc822", "message/global"):
                    subs = payload_messages(part)
                    if subs:
                        ctx.original = subs[0]
                    else:
                        ctx.original = _headers_from_text(_raw_text(part))
                else:
                    ctx.original = _headers_from_text(decode_text(part))
            continue
        if item.in_attached:
            continue
        if ptype in (
            "message/delivery-status",
            "message/global-delivery-status",
            "text/delivery-status",
        ):
            ctx.delivery_status.append(_raw_text(part))
            continue
        if ptype == "message/feedback-report":
            ctx.feedback_reports.append(_raw_text(part))
            continue
        if ptype == "message/disposition-notification":
            ctx.has_disposition_notification = True
            continue
        if ptype.startswith("multipart/"):
            # A multipart the parser could not split: use its raw text.
            raw = part.get_payload() if not part.is_multipart() else None
            if isinstance(raw, str) and raw.strip():
                plain.append(raw[:MAX_TEXT_CHARS])
            continue
        if ptype == "text/html":
            html.append(html_to_text(decode_text(part)))
        elif ptype.startswith("text/"):
            plain.append(decode_text(part))
    texts = plain if any(t.strip() for t in plain) else html
    full = "\n".join(texts)
    ctx.full_text = full
    notification, rest = split_original(full)
    ctx.notification = notification
    if ctx.original is None and rest is not None:
        ctx.original = _headers_from_text(rest)
    return ctx
