"""Amazon SES event notifications delivered by e-mail (SNS -> e-mail JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .addresses import extract_address
from .models import DELAYED, FAILED, HARD, SOFT
from .status import find_status, kind_from_status


@dataclass(frozen=True)
class SesRecipient:
    address: str
    action: str
    status: str | None
    diagnostic: str | None
    kind: str | None


@dataclass(frozen=True)
class SesNotification:
    notification_type: str
    """``bounce`` | ``complaint`` | ``delivery`` | other lower-cased SES type."""
    recipients: tuple[SesRecipient, ...]
    source: str | None = None
    """``mail.source``: the envelope sender of the original (our VERP address, when ours)."""
    message_id: str | None = None
    """The original's Message-ID (``mail.commonHeaders.messageId`` or ``mail.headers``)."""


def _text(value: Any) -> str | None:
    return value.strip()[:500] if isinstance(value, str) and value.strip() else None


def _original_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(source, Message-ID) of the original email an SES notification is about."""
    mail = event.get("mail")
    if not isinstance(mail, dict):
        return None, None
    common = mail.get("commonHeaders")
    message_id = _text(common.get("messageId")) if isinstance(common, dict) else None
    headers = mail.get("headers")
    if message_id is None and isinstance(headers, list):
        for header in headers[:200]:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
                message_id = _text(header.get("value"))
                break
    return _text(mail.get("source")), message_id


MAX_DECODE_ATTEMPTS = 64


def _json_objects(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder(strict=False)
    found: list[dict[str, Any]] = []
    index = text.find("{")
    attempts = 0
    # bounded: a hostile body of nested or scattered braces must not cost quadratic time
    while 0 <= index < len(text) and len(found) < 3 and attempts < MAX_DECODE_ATTEMPTS:
        attempts += 1
        try:
            value, end = decoder.raw_decode(text, index)
        except (ValueError, RecursionError):
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def _unwrap(obj: dict[str, Any]) -> dict[str, Any] | None:
    if "notificationType" in obj or "eventType" in obj:
        return obj
    message = obj.get("Message")
    if isinstance(message, str):
        try:
            inner = json.loads(message, strict=False)
        except ValueError:
            return None
        if isinstance(inner, dict):
            return _unwrap(inner)
    return None


def parse_ses(text: str) -> SesNotification | None:
    if "notificationType" not in text and "eventType" not in text:
        return None
    for obj in _json_objects(text):
        event = _unwrap(obj)
        if event is None:
            continue
        kind = str(event.get("notificationType") or event.get("eventType") or "").lower()
        recipients: list[SesRecipient] = []
        if kind == "bounce":
            bounce = event.get("bounce") or {}
            transient = str(bounce.get("bounceType", "")).lower() == "transient"
            for item in bounce.get("bouncedRecipients") or []:
                if not isinstance(item, dict):
                    continue
                address = extract_address(str(item.get("emailAddress", "")))
                if not address:
                    continue
                diagnostic = item.get("diagnosticCode")
                status = find_status(str(item.get("status") or "")) or find_status(
                    str(diagnostic or "")
                )
                rkind = kind_from_status(status) or (SOFT if transient else HARD)
                action = DELAYED if str(item.get("action", "")).lower() == "delayed" else FAILED
                recipients.append(
                    SesRecipient(
                        address, action, status, str(diagnostic) if diagnostic else None, rkind
                    )
                )
        elif kind == "complaint":
            for item in (event.get("complaint") or {}).get("complainedRecipients") or []:
                if isinstance(item, dict):
                    address = extract_address(str(item.get("emailAddress", "")))
                    if address:
                        recipients.append(SesRecipient(address, "", None, None, None))
        return SesNotification(kind, tuple(recipients), *_original_of(event))
    return None
