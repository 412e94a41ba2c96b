"""What every provider's call comes down to, and how a call is refused."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

Provider = Literal["ses", "sendgrid", "postmark", "mailgun"]
Kind = Literal["hard", "soft", "complaint"]

REPLAY_WINDOW_SECONDS = 300
"""A signed call older (or further in the future) than this is refused as a replay."""


class Refused(Exception):
    """The call is not accepted: `status` (401, 403, 400, ...) and why, for the caller."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # a metric label: bad_signature, stale, ...
        self.message = message


@dataclass(frozen=True)
class ProviderEvent:
    """One bounce or complaint a provider reports about one recipient."""

    provider: Provider
    event_id: str  # the provider's id of this event: a repeated delivery is recognised
    email: str
    kind: Kind
    message_id: str | None  # the Message-ID header of the message, when the provider says
    return_path: str | None = None  # the envelope sender (our VERP address), when it says
    status: str | None = None  # an RFC 3463 status, when the provider gives one
    diagnostic: str | None = None
    detail: str = ""  # the provider's own words for the type (bounceType, TypeCode, ...)

    @property
    def digest(self) -> str:
        """The processed-message key of this event (sha256, like a mailbox message's)."""
        return hashlib.sha256(f"webhook:{self.provider}:{self.event_id}".encode()).hexdigest()


def check_fresh(timestamp: float, now: float, what: str) -> None:
    """Refuse a signed timestamp outside the replay window."""
    if abs(now - timestamp) > REPLAY_WINDOW_SECONDS:
        raise Refused(
            403,
            "stale",
            f"{what} is more than {REPLAY_WINDOW_SECONDS} s from now: refused as a replay",
        )


def text(value: object, limit: int = 2000) -> str | None:
    """A string field of a provider's JSON, or None; never anything else."""
    return value[:limit] if isinstance(value, str) and value else None


def section(value: dict[str, Any], name: str) -> dict[str, Any]:
    """A JSON object inside a provider's JSON, or an empty one."""
    found = value.get(name)
    return found if isinstance(found, dict) else {}
