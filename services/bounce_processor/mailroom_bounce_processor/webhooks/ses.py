"""Amazon SES bounce and complaint notifications (the Message of a verified SNS
Notification): Permanent bounces are hard, Transient and Undetermined soft, complaints
complaints; deliveries and other types carry nothing for us."""

from __future__ import annotations

import json
from typing import Any

from mailroom_bounce_processor.webhooks.events import ProviderEvent, Refused, section, text

_BOUNCE_KINDS = {"Permanent": "hard", "Transient": "soft", "Undetermined": "soft"}
MAX_RECIPIENTS = 1000


def _message_id(mail: dict[str, Any]) -> str | None:
    """The Message-ID header we sent (the original headers when SES includes them, else the
    common headers); not SES's own mail.messageId."""
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
                return text(header.get("value"), 1000)
    common = mail.get("commonHeaders")
    if isinstance(common, dict):
        return text(common.get("messageId"), 1000)
    return None


def _recipients(section: dict[str, Any], key: str) -> list[dict[str, Any]]:
    found = section.get(key)
    if not isinstance(found, list):
        raise Refused(400, "malformed", f"SES notification without {key}")
    return [r for r in found[:MAX_RECIPIENTS] if isinstance(r, dict)]


def ses_events(message_text: str, sns_message_id: str) -> list[ProviderEvent]:
    """The bounces and complaints of one SES notification (none for other types)."""
    try:
        message = json.loads(message_text)
    except ValueError:
        raise Refused(400, "malformed", "the SNS Message is not SES JSON") from None
    if not isinstance(message, dict):
        raise Refused(400, "malformed", "the SNS Message is not SES JSON")
    # notifications say notificationType, event publishing (configuration sets) eventType
    kind = message.get("notificationType") or message.get("eventType")
    mail = section(message, "mail")
    message_id = _message_id(mail)
    events: list[ProviderEvent] = []
    if kind == "Bounce" and isinstance(message.get("bounce"), dict):
        bounce = message["bounce"]
        bounce_type = str(bounce.get("bounceType"))
        detail = f"{bounce_type}/{bounce.get('bounceSubType')}"
        for index, recipient in enumerate(_recipients(bounce, "bouncedRecipients")):
            email = text(recipient.get("emailAddress"), 320)
            if email is None:
                continue
            events.append(
                ProviderEvent(
                    provider="ses",
                    event_id=f"{sns_message_id}:{index}",
                    email=email,
                    kind="hard" if _BOUNCE_KINDS.get(bounce_type) == "hard" else "soft",
                    message_id=message_id,
                    return_path=text(mail.get("source"), 320),
                    status=text(recipient.get("status"), 20),
                    diagnostic=text(recipient.get("diagnosticCode")),
                    detail=detail,
                )
            )
    elif kind == "Complaint" and isinstance(message.get("complaint"), dict):
        complaint = message["complaint"]
        for index, recipient in enumerate(_recipients(complaint, "complainedRecipients")):
            email = text(recipient.get("emailAddress"), 320)
            if email is None:
                continue
            events.append(
                ProviderEvent(
                    provider="ses",
                    event_id=f"{sns_message_id}:{index}",
                    email=email,
                    kind="complaint",
                    message_id=message_id,
                    return_path=text(mail.get("source"), 320),
                    detail=str(complaint.get("complaintFeedbackType") or "complaint")[:100],
                )
            )
    return events
