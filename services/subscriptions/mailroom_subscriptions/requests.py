"""What the public pages accept from a request body, checked before anything is trusted.

- `BodyLimit` (ASGI middleware, every path of the app): a declared Content-Length over the
  limit is refused with 413 before a byte of the body is read; a body without a declared
  length (chunked) is counted as it streams in and refused with 413 the moment it passes
  the limit, so nothing larger is ever buffered. 413 closes the connection.
- `read_form`: the form of a POST, url-encoded or multipart/form-data (RFC 8058's example),
  UTF-8 only, at most MAX_FIELDS fields; anything else is a `BadRequest` with a 4xx status
  and the key of a message a person can act on (pages.error shows it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email import policy
from email.message import Message
from email.parser import BytesParser
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 1000
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
_CHARSETS = ("utf-8", "utf8", "us-ascii")


class BadRequest(Exception):
    """A request refused with `status`; `reason` keys the message in i18n (error_<reason>)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


Refuse = Callable[[Scope, Receive, Send, BadRequest], Awaitable[None]]
"""Answers a request refused before the app saw it."""


class BodyLimit:
    """Refuses bodies over `max_bytes` before reading them (declared) or while they stream
    in (chunked): `refuse(scope, receive, send, error)` answers the upfront refusals, and a
    body read too far raises BadRequest(413) inside the app, for its exception handler."""

    def __init__(self, app: ASGIApp, max_bytes: int, refuse: Refuse) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).getlist("content-length")
        error = _declared_length_problem(declared, self.max_bytes)
        if error is not None:
            await self.refuse(scope, receive, send, error)
            return
        received = 0

        async def limited() -> AsgiMessage:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BadRequest(413, "too_large")
            return message

        await self.app(scope, limited, send)


def _declared_length_problem(declared: list[str], limit: int) -> BadRequest | None:
    if not declared:
        return None
    values = {value.strip() for value in declared}
    if len(values) != 1:
        return BadRequest(400, "bad_length")
    value = values.pop()
    if not (value.isascii() and value.isdigit()):
        return BadRequest(400, "bad_length")
    if int(value) > limit:
        return BadRequest(413, "too_large")
    return None


def _content_type(value: str) -> Message:
    parsed = Message()
    parsed["content-type"] = value
    return parsed


async def read_form(request: Request) -> list[tuple[str, str]]:
    """The fields of the request's form, in order; BadRequest for anything unreadable."""
    body = await request.body()  # bounded by BodyLimit
    declared_type = request.headers.get("content-type")
    if declared_type is None:
        if body:
            raise BadRequest(415, "content_type")
        return []
    content_type = _content_type(declared_type)
    mime = content_type.get_content_type()
    charset = content_type.get_param("charset")
    if isinstance(charset, str) and charset.strip().lower() not in _CHARSETS:
        raise BadRequest(415, "charset")
    if mime == URLENCODED:
        return _urlencoded(body)
    if mime == MULTIPART:
        return _multipart(declared_type, body)
    raise BadRequest(415, "content_type")


def _urlencoded(body: bytes) -> list[tuple[str, str]]:
    if not body:
        return []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "bad_utf8") from None
    if text.count("&") + 1 > MAX_FIELDS:
        raise BadRequest(400, "too_many_fields")
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:  # a percent-encoded byte sequence that is not UTF-8
        raise BadRequest(400, "bad_utf8") from None
    except ValueError:
        raise BadRequest(400, "bad_encoding") from None


def _multipart(declared_type: str, body: bytes) -> list[tuple[str, str]]:
    head = f"Content-Type: {declared_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    try:
        message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
        parts = message.get_payload() if message.is_multipart() else None
    except (Exception, RecursionError):
        raise BadRequest(400, "bad_encoding") from None
    if not isinstance(parts, list) or message.defects:
        raise BadRequest(400, "bad_encoding")
    if len(parts) > MAX_FIELDS:
        raise BadRequest(400, "too_many_fields")
    fields: list[tuple[str, str]] = []
    for part in parts:
        if not isinstance(part, Message):
            raise BadRequest(400, "bad_encoding")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.is_multipart() or part.defects:
            raise BadRequest(400, "bad_encoding")
        value = part.get_payload(decode=True)
        try:
            fields.append((name, bytes(value or b"").decode("utf-8")))
        except UnicodeDecodeError:
            raise BadRequest(400, "bad_utf8") from None
    return fields
