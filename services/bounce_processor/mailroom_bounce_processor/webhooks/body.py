"""A webhook call's body, checked before anything in it is read: its declared type, its size
(a declared length over the limit is refused unread, a streamed one the moment it passes),
UTF-8 JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from mailroom_bounce_processor.webhooks.events import Refused

MAX_BODY_BYTES = 1024 * 1024
"""Far above a provider's call (SNS messages are at most 256 KB, SendGrid posts batches of
at most 768 KB)."""
_CHARSETS = ("utf-8", "utf8")


def check_content_type(request: Request, accepted: tuple[str, ...]) -> None:
    declared = request.headers.get("content-type", "")
    media, *params = (part.strip().lower() for part in declared.split(";"))
    if media not in accepted:
        raise Refused(415, "content_type", f"Content-Type must be {' or '.join(accepted)}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in _CHARSETS:
            raise Refused(415, "content_type", "the body must be UTF-8")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.strip().isdigit()):
            raise Refused(400, "bad_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise Refused(413, "too_large", f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "too_large", f"the body is over {limit} bytes")
    return bytes(body)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refused(400, "malformed", "the body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise Refused(400, "malformed", "the body is not JSON") from None
