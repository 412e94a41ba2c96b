"""SendGrid's signed event webhook: an ECDSA P-256 (SHA-256) signature over the timestamp
header followed by the raw body, in X-Twilio-Email-Event-Webhook-Signature (base64 DER) and
-Timestamp (unix seconds); the key is the settings' `sendgrid_public_key`.

Events taken: bounce (type "blocked" and 4.x.x statuses soft, the rest hard), dropped for a
bounced or invalid address (hard) or a spam report (complaint), spamreport (complaint).
Other events (delivered, open, click, deferred, other drop reasons) change nothing here."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailroom_bounce_processor.webhooks.events import (
    Kind,
    ProviderEvent,
    Refused,
    check_fresh,
    text,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_EVENTS = 10_000


def public_key(setting: str) -> ec.EllipticCurvePublicKey:
    """The key as the settings hold it (validated there: base64 DER or PEM, P-256)."""
    if setting.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(setting.encode("ascii"))
    else:
        key = serialization.load_der_public_key(base64.b64decode(setting))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def verify(
    key: ec.EllipticCurvePublicKey,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    now: float,
) -> None:
    if not signature or not timestamp:
        raise Refused(401, "unsigned", f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise Refused(403, "bad_signature", f"{TIMESTAMP_HEADER} is not unix seconds")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise Refused(403, "bad_signature", "the SendGrid signature does not verify") from None
    check_fresh(int(timestamp), now, TIMESTAMP_HEADER)


def _kind(event: dict[str, Any]) -> Kind | None:
    name = event.get("event")
    if name == "spamreport":
        return "complaint"
    if name == "bounce":
        status = str(event.get("status") or "")
        if event.get("type") == "blocked" or status.startswith("4"):
            return "soft"
        return "hard"
    if name == "dropped":
        reason = str(event.get("reason") or "").lower()
        if "spam" in reason:
            return "complaint"
        if "bounce" in reason or "invalid" in reason:
            return "hard"
    return None


def sendgrid_events(payload: Any) -> list[ProviderEvent]:
    if not isinstance(payload, list):
        raise Refused(400, "malformed", "a SendGrid event webhook body is a JSON array")
    events: list[ProviderEvent] = []
    for event in payload[:MAX_EVENTS]:
        if not isinstance(event, dict):
            raise Refused(400, "malformed", "every SendGrid event is a JSON object")
        kind = _kind(event)
        email = text(event.get("email"), 320)
        event_id = text(event.get("sg_event_id"), 200)
        if kind is None or email is None or event_id is None:
            continue
        events.append(
            ProviderEvent(
                provider="sendgrid",
                event_id=event_id,
                email=email,
                kind=kind,
                message_id=text(event.get("smtp-id"), 1000),
                status=text(event.get("status"), 20),
                diagnostic=text(event.get("reason")),
                detail=f"{event.get('event')}/{event.get('type') or ''}"[:100],
            )
        )
    return events
