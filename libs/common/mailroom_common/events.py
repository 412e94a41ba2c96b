"""Versioned event and command models: every message on the broker is one of these.

A consumer refuses (dead-letters) a message whose `schema_version` it does not know.
Routing keys double as event names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

ItemKind = Literal["campaign", "autoresponder"]
ItemStatus = Literal[
    "pending", "queued", "sending", "sent", "retry", "failed", "suppressed", "skipped", "bounced"
]
TERMINAL_STATUSES: tuple[ItemStatus, ...] = ("sent", "failed", "suppressed", "skipped", "bounced")
OPEN_STATUSES: tuple[ItemStatus, ...] = ("pending", "queued", "sending", "retry")


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    routing_key: ClassVar[str]

    schema_version: Literal[1] = 1
    occurred_at: datetime = Field(default_factory=_now)


# --- commands (commands exchange) ---------------------------------------------------------


class CampaignLaunch(Event):
    routing_key: ClassVar[str] = "campaign.launch"
    campaign_id: int = Field(gt=0)
    send_at: datetime | None = Field(default=None, description="Send later; None means now.")


class CampaignPause(Event):
    routing_key: ClassVar[str] = "campaign.pause"
    campaign_id: int = Field(gt=0)


class CampaignResume(Event):
    routing_key: ClassVar[str] = "campaign.resume"
    campaign_id: int = Field(gt=0)


class CampaignCancel(Event):
    routing_key: ClassVar[str] = "campaign.cancel"
    campaign_id: int = Field(gt=0)


CAMPAIGN_COMMANDS: dict[str, type[Event]] = {
    m.routing_key: m for m in (CampaignLaunch, CampaignPause, CampaignResume, CampaignCancel)
}


# --- work (work exchange, internal) -------------------------------------------------------


class ItemsPage(Event):
    routing_key: ClassVar[str] = "items.page"
    campaign_id: int
    page_id: int
    item_ids: list[int] = Field(min_length=1)


class OutboundEmail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: int
    recipient: str
    envelope_from: str = Field(description="The VERP return path.")
    message: str = Field(description="The whole RFC 5322 message, 7-bit, CRLF line endings.")
    attempt: int = Field(default=0, ge=0, description="Temporary failures so far.")


class OutboundBatch(Event):
    routing_key: ClassVar[str] = "outbound.batch"
    kind: ItemKind = "campaign"
    campaign_id: int | None = None
    emails: list[OutboundEmail] = Field(min_length=1)


# --- events (events exchange) -------------------------------------------------------------


class DeliveryResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: int
    status: Literal["sent", "retry", "failed", "suppressed", "skipped"]
    smtp_code: int | None = None
    smtp_reply: str | None = None


class DeliveryResults(Event):
    routing_key: ClassVar[str] = "delivery.results"
    kind: ItemKind = "campaign"
    campaign_id: int | None = None
    results: list[DeliveryResult]


class CampaignGenerated(Event):
    routing_key: ClassVar[str] = "campaign.generated"
    campaign_id: int
    item_count: int


class CampaignCompleted(Event):
    routing_key: ClassVar[str] = "campaign.completed"
    campaign_id: int
    status: Literal["completed", "failed", "cancelled"]
    counts: dict[str, int]


class CampaignFailed(Event):
    routing_key: ClassVar[str] = "campaign.failed"
    campaign_id: int
    reason: str


class SettingsChanged(Event):
    routing_key: ClassVar[str] = "settings.changed"
    group: Literal["smtp", "marketing", "bounce"]
    version: int
    changed_keys: list[str]


class ContactUnsubscribed(Event):
    routing_key: ClassVar[str] = "contact.unsubscribed"
    contact_id: int
    email: str
    list_ids: list[int] = Field(description="The lists whose membership became unsubscribed.")
    source: str = Field(description='Where the link came from: "c<campaign id>", "a<id>".')
    everything: bool = Field(description="Unsubscribed from every list and suppressed.")


class BounceDetected(Event):
    routing_key: ClassVar[str] = "bounce.detected"
    item_id: int | None = Field(description="The campaign item it was matched to, if any.")
    autoresponder_item_id: int | None = Field(
        default=None, description="The autoresponder item it was matched to, if any."
    )
    campaign_id: int | None = None
    email: str = Field(description="The recipient that bounced or complained (lower-cased).")
    kind: Literal["hard", "soft", "complaint"]
    action: Literal["failed", "delayed"] | None = Field(
        default=None, description="delayed: a warning only (the item did not change)."
    )
    status: str | None = Field(default=None, description='RFC 3463 status, e.g. "5.1.1".')
    suppressed: bool = Field(description="The address is suppressed (now or already).")


class ContactSubscribed(Event):
    routing_key: ClassVar[str] = "contact.subscribed"
    contact_id: int = Field(gt=0)
    list_id: int = Field(gt=0)
    event_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this subscription; the same id again sends nothing more.",
    )


class ContactEvent(Event):
    routing_key: ClassVar[str] = "contact.event"
    contact_id: int = Field(gt=0)
    type: str = Field(min_length=1, max_length=200, description='What happened, e.g. "signup".')
    event_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this event; the same id again sends nothing more.",
    )
    data: dict[str, Any] = Field(default_factory=dict, description="Kept with the item.")


AUTORESPONDER_TRIGGERS: dict[str, type[Event]] = {
    m.routing_key: m for m in (ContactSubscribed, ContactEvent)
}


def event_json(event: Event) -> bytes:
    return event.model_dump_json().encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every message, by routing key (for the AsyncAPI document)."""
    models: list[type[Event]] = [
        *CAMPAIGN_COMMANDS.values(),
        ItemsPage,
        OutboundBatch,
        DeliveryResults,
        CampaignGenerated,
        CampaignCompleted,
        CampaignFailed,
        SettingsChanged,
        ContactUnsubscribed,
        BounceDetected,
        ContactSubscribed,
        ContactEvent,
    ]
    return {m.routing_key: m.model_json_schema() for m in models}
