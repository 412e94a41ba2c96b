"""Postmark's bounce and spam-complaint webhooks. Postmark signs nothing: the webhook URL
carries HTTP basic auth credentials (the settings' `postmark_username` and
`postmark_password`), and `postmark_allowed_ips`, when set, lists the only addresses calls may
come from (Postmark publishes its webhook IPs). Postmark gives no Message-ID of ours: its
events are matched by recipient (records.py says how much proof that is).

Bounce types: HardBounce, BadEmailAddress and ManuallyDeactivated are hard; SoftBounce,
Transient, DnsError, Blocked, SMTPApiError and DMARCPolicy soft; SpamComplaint (a
RecordType or a bounce Type) a complaint; the others (AutoResponder, Unsubscribe, ...)
change nothing."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from typing import Any

from mailroom_bounce_processor.webhooks.events import Kind, ProviderEvent, Refused, text

_HARD = ("HardBounce", "BadEmailAddress", "ManuallyDeactivated")
_SOFT = ("SoftBounce", "Transient", "DnsError", "Blocked", "SMTPApiError", "DMARCPolicy")


def check_caller(
    authorization: str | None,
    client_ip: str | None,
    username: str,
    password: str,
    allowed: list[str],
) -> None:
    if allowed:
        try:
            address = ipaddress.ip_address(client_ip or "")
        except ValueError:
            raise Refused(403, "ip_not_allowed", "the caller's address is unknown") from None
        if not any(address in ipaddress.ip_network(n) for n in allowed):
            raise Refused(
                403, "ip_not_allowed", "the caller's address is not in postmark_allowed_ips"
            )
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Refused(401, "unauthenticated", "HTTP basic auth is required")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(401, "unauthenticated", "the basic auth credentials are malformed") from None
    user, colon, secret = given.partition(b":")
    expected_user, expected_secret = username.encode(), password.encode()
    matches = hmac.compare_digest(user, expected_user) & hmac.compare_digest(
        secret, expected_secret
    )
    if not colon or not matches:
        raise Refused(401, "unauthenticated", "wrong basic auth credentials")


def _kind(payload: dict[str, Any]) -> Kind | None:
    record, bounce_type = payload.get("RecordType"), payload.get("Type")
    if record == "SpamComplaint" or bounce_type == "SpamComplaint":
        return "complaint"
    if record != "Bounce":
        return None
    if bounce_type in _HARD:
        return "hard"
    if bounce_type in _SOFT:
        return "soft"
    return None


def postmark_events(payload: Any) -> list[ProviderEvent]:
    if not isinstance(payload, dict):
        raise Refused(400, "malformed", "a Postmark webhook body is a JSON object")
    kind = _kind(payload)
    email = text(payload.get("Email"), 320)
    event_id = payload.get("ID")
    if kind is None or email is None or not isinstance(event_id, int | str):
        return []
    return [
        ProviderEvent(
            provider="postmark",
            event_id=f"{payload.get('RecordType')}:{event_id}"[:200],
            email=email,
            kind=kind,
            message_id=None,  # Postmark's MessageID is its own, not our header
            diagnostic=text(payload.get("Details")) or text(payload.get("Description")),
            detail=f"{payload.get('Type')}/{payload.get('TypeCode')}"[:100],
        )
    ]
