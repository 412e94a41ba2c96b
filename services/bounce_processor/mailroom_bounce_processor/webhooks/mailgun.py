"""Mailgun's signed webhooks: `signature` = {timestamp, token, signature}, the signature the
hex HMAC-SHA256 of timestamp + token with the webhook signing key (the settings'
`mailgun_signing_key`). A timestamp outside the replay window is refused, and so is a token
seen before (the webhook_nonces table, written with the call's effects).

Events taken: failed (severity permanent: hard, temporary: soft) and complained."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from mailroom_bounce_processor.webhooks.events import (
    Kind,
    ProviderEvent,
    Refused,
    check_fresh,
    section,
    text,
)


def verify(payload: Any, signing_key: str, now: float) -> str:
    """Check the signature and the timestamp; return the token (the caller refuses it when
    it was seen before)."""
    block = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(block, dict):
        raise Refused(401, "unsigned", "a Mailgun webhook carries a signature object")
    timestamp, token, signature = (
        block.get("timestamp"),
        block.get("token"),
        block.get("signature"),
    )
    if not all(isinstance(v, str) and 0 < len(v) <= 200 for v in (timestamp, token, signature)):
        raise Refused(401, "unsigned", "the signature needs timestamp, token and signature")
    assert isinstance(timestamp, str) and isinstance(token, str) and isinstance(signature, str)
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise Refused(403, "bad_signature", "the Mailgun signature does not verify")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise Refused(403, "bad_signature", "the Mailgun timestamp is not unix seconds")
    check_fresh(int(timestamp), now, "the Mailgun timestamp")
    return token


def _kind(data: dict[str, Any]) -> Kind | None:
    event = data.get("event")
    if event == "complained":
        return "complaint"
    if event == "failed":
        return "hard" if data.get("severity") == "permanent" else "soft"
    return None


def mailgun_events(payload: dict[str, Any]) -> list[ProviderEvent]:
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise Refused(400, "malformed", "a Mailgun webhook carries event-data")
    kind = _kind(data)
    email = text(data.get("recipient"), 320)
    event_id = text(data.get("id"), 200)
    if kind is None or email is None or event_id is None:
        return []
    headers = section(section(data, "message"), "headers")
    envelope = section(data, "envelope")
    status = section(data, "delivery-status")
    code = status.get("code")
    diagnostic = text(status.get("message")) or text(status.get("description"))
    if isinstance(code, int) and diagnostic and str(code) not in diagnostic:
        diagnostic = f"{code} {diagnostic}"
    return [
        ProviderEvent(
            provider="mailgun",
            event_id=event_id,
            email=email,
            kind=kind,
            message_id=text(headers.get("message-id"), 1000),
            return_path=text(envelope.get("sender"), 320),
            status=text(status.get("enhanced-code"), 20),
            diagnostic=diagnostic,
            detail=f"{data.get('event')}/{data.get('severity') or data.get('reason') or ''}"[:100],
        )
    ]
