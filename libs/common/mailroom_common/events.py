"""Versioned event and command models: every message on the broker is one of these.

A consumer refuses (dead-letters) a message whose `schema_version` it does not know.
Routing keys double as event names.

What PostgreSQL could not take is refused here, by the model, not by a failing query that
is retried: ids are positive int64 (`Id`), and no string anywhere in a message (keys of
free-form data included) holds a NUL character.

Unknown fields: events (the events exchange: contact.subscribed, contact.event,
delivery.results, settings.changed, ...) tolerate fields they do not know, so a newer
publisher does not break an older consumer. So do campaign.create and campaign.update,
the CRM's commands with many fields (a field they do not know is not stored, and the
create is checked whole). The other commands and internal work messages refuse them: a
misspelt field of a command (`sendAt` for `send_at`) must not be dropped in silence and
launch a campaign now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailroom_common.rendering.limits import MAX_TEMPLATE_CHARS

ItemKind = Literal["campaign", "autoresponder"]
ItemStatus = Literal[
    "pending", "queued", "sending", "sent", "retry", "failed", "suppressed", "skipped", "bounced"
]
TERMINAL_STATUSES: tuple[ItemStatus, ...] = ("sent", "failed", "suppressed", "skipped", "bounced")
OPEN_STATUSES: tuple[ItemStatus, ...] = ("pending", "queued", "sending", "retry")


MAX_BIGINT = 2**63 - 1
# a row id (bigint, from a sequence): positive and within int64
Id = Annotated[int, Field(gt=0, le=MAX_BIGINT)]
Count = Annotated[int, Field(ge=0, le=MAX_BIGINT)]


def _now() -> datetime:
    return datetime.now(UTC)


def _nul_at(value: Any, path: str) -> str | None:
    """The path of the first string (value or key) in `value` holding a NUL, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return f"{path or 'message'} (a key)"
            found = _nul_at(item, where)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _nul_at(item, f"{path}.{index}")
            if found is not None:
                return found
    return None


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    routing_key: ClassVar[str]

    schema_version: Literal[1] = 1
    occurred_at: datetime = Field(default_factory=_now)

    @model_validator(mode="after")
    def _no_nul_characters(self) -> Event:
        where = _nul_at(self, "")
        if where is not None:
            raise ValueError(f"{where} holds a NUL character, which PostgreSQL cannot store")
        return self


class InboundEvent(Event):
    """An event (events exchange): fields it does not know are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# --- commands (commands exchange) ---------------------------------------------------------


class CampaignLaunch(Event):
    routing_key: ClassVar[str] = "campaign.launch"
    campaign_id: Id
    send_at: datetime | None = Field(default=None, description="Send later; None means now.")


class CampaignPause(Event):
    routing_key: ClassVar[str] = "campaign.pause"
    campaign_id: Id


class CampaignResume(Event):
    routing_key: ClassVar[str] = "campaign.resume"
    campaign_id: Id


class CampaignCancel(Event):
    routing_key: ClassVar[str] = "campaign.cancel"
    campaign_id: Id


MAX_NAME_CHARS = 1000  # a campaign's name, a From display name
MAX_ADDRESS_CHARS = 320  # From, Reply-To (an addr-spec; the renderer's own limit)
MAX_SUBJECT_CHARS = 10_000  # the subject template
MAX_TARGET_LISTS = 1000
CorrelationId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="The sender's id of this request, given back in the answer.",
    ),
]
ListName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class CampaignCreate(InboundEvent):
    """Create a draft campaign, checked as `mailroom campaign create` checks it (templates
    compiled with the marketing footers and trial-rendered, every list known, From a plain
    address). Answered by campaign.created, or dead-lettered with the field named."""

    routing_key: ClassVar[str] = "campaign.create"
    correlation_id: CorrelationId | None = None
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The same key with the same content again answers with the campaign it"
        " created; with other content it is refused.",
    )
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_CHARS, description="A template.")
    from_email: str = Field(min_length=1, max_length=MAX_ADDRESS_CHARS)
    from_name: str = Field(default="", max_length=MAX_NAME_CHARS)
    reply_to: str | None = Field(default=None, min_length=1, max_length=MAX_ADDRESS_CHARS)
    html_template: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    text_template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE_CHARS,
        description="None: derived from the HTML template.",
    )
    lists: list[ListName] = Field(
        default_factory=list, max_length=MAX_TARGET_LISTS, description="Target lists by name."
    )
    list_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_TARGET_LISTS, description="Target lists by id."
    )


class CampaignUpdate(InboundEvent):
    """Change a draft campaign: the fields given replace the stored ones (the lists, when
    `lists` or `list_ids` is given, are replaced whole), and the result is checked as a
    create is. Answered by campaign.updated, or dead-lettered with the field named."""

    routing_key: ClassVar[str] = "campaign.update"
    campaign_id: Id
    correlation_id: CorrelationId | None = None
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    subject: str | None = Field(default=None, min_length=1, max_length=MAX_SUBJECT_CHARS)
    from_email: str | None = Field(default=None, min_length=1, max_length=MAX_ADDRESS_CHARS)
    from_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    reply_to: str | None = Field(
        default=None, max_length=MAX_ADDRESS_CHARS, description='"" removes the Reply-To.'
    )
    html_template: str | None = Field(default=None, min_length=1, max_length=MAX_TEMPLATE_CHARS)
    text_template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE_CHARS,
        description='"" goes back to a text part derived from the HTML template.',
    )
    lists: list[ListName] | None = Field(default=None, max_length=MAX_TARGET_LISTS)
    list_ids: list[Id] | None = Field(default=None, max_length=MAX_TARGET_LISTS)


CAMPAIGN_COMMANDS: dict[str, type[Event]] = {
    m.routing_key: m
    for m in (
        CampaignCreate,
        CampaignUpdate,
        CampaignLaunch,
        CampaignPause,
        CampaignResume,
        CampaignCancel,
    )
}


# --- work (work exchange, internal) -------------------------------------------------------


class ItemsPage(Event):
    routing_key: ClassVar[str] = "items.page"
    campaign_id: Id
    page_id: Id
    item_ids: list[Id] = Field(min_length=1)


class OutboundEmail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Id
    recipient: str
    envelope_from: str = Field(description="The VERP return path.")
    message: str = Field(description="The whole RFC 5322 message, 7-bit, CRLF line endings.")
    attempt: Count = Field(default=0, description="Temporary failures so far.")


class OutboundBatch(Event):
    routing_key: ClassVar[str] = "outbound.batch"
    kind: ItemKind = "campaign"
    campaign_id: Id | None = None
    emails: list[OutboundEmail] = Field(min_length=1)


# --- events (events exchange) -------------------------------------------------------------


class DeliveryResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Id
    status: Literal["sent", "retry", "failed", "suppressed", "skipped"]
    smtp_code: int | None = None
    smtp_reply: str | None = None


class DeliveryResults(InboundEvent):
    routing_key: ClassVar[str] = "delivery.results"
    kind: ItemKind = "campaign"
    campaign_id: Id | None = None
    results: list[DeliveryResult]


class CampaignCreated(Event):
    """The answer to campaign.create: the draft campaign exists (made now, or before by the
    same idempotency key or the same broker message)."""

    routing_key: ClassVar[str] = "campaign.created"
    campaign_id: Id
    correlation_id: str | None = Field(description="The correlation_id of the request.")
    idempotency_key: str | None = None
    replayed: bool = Field(
        default=False, description="True: an earlier request made it; nothing was created now."
    )


class CampaignUpdated(Event):
    """The answer to campaign.update: the draft campaign was changed."""

    routing_key: ClassVar[str] = "campaign.updated"
    campaign_id: Id
    correlation_id: str | None = Field(description="The correlation_id of the request.")
    changed: list[str] = Field(description="The fields whose stored value changed.")


class CampaignGenerated(InboundEvent):
    routing_key: ClassVar[str] = "campaign.generated"
    campaign_id: Id
    item_count: Count


class CampaignCompleted(Event):
    """A campaign ended: completed (no item left open), failed (reason) or cancelled."""

    routing_key: ClassVar[str] = "campaign.completed"
    campaign_id: Id
    status: Literal["completed", "failed", "cancelled"]
    counts: dict[str, int]
    reason: str | None = Field(default=None, description="Why a failed campaign failed.")


class CampaignPaused(Event):
    routing_key: ClassVar[str] = "campaign.paused"
    campaign_id: Id
    reason: str


class CampaignResumed(Event):
    routing_key: ClassVar[str] = "campaign.resumed"
    campaign_id: Id
    status: Literal["scheduled", "generating", "sending"] = Field(
        description="The status it went back to: the one it was paused from."
    )


class SettingsChanged(InboundEvent):
    routing_key: ClassVar[str] = "settings.changed"
    group: Literal["smtp", "marketing", "bounce"]
    version: Count
    changed_keys: list[str]


class JobRun(InboundEvent):
    """An operator asks a job to run now (`mailroom jobs run`): every replica of it hears."""

    routing_key: ClassVar[str] = "job.run"
    job: str = Field(
        min_length=1, max_length=200, description='The job, e.g. "mark-campaigns-completed".'
    )


class ContactUnsubscribed(Event):
    routing_key: ClassVar[str] = "contact.unsubscribed"
    contact_id: Id
    email: str
    list_ids: list[Id] = Field(description="The lists whose membership became unsubscribed.")
    source: str = Field(description='Where the link came from: "c<campaign id>", "a<id>".')
    everything: bool = Field(description="Unsubscribed from every list and suppressed.")


class BounceDetected(Event):
    routing_key: ClassVar[str] = "bounce.detected"
    item_id: Id | None = Field(description="The campaign item it was matched to, if any.")
    autoresponder_item_id: Id | None = Field(
        default=None, description="The autoresponder item it was matched to, if any."
    )
    campaign_id: Id | None = None
    email: str = Field(description="The recipient that bounced or complained (lower-cased).")
    kind: Literal["hard", "soft", "complaint"]
    action: Literal["failed", "delayed"] | None = Field(
        default=None, description="delayed: a warning only (the item did not change)."
    )
    status: str | None = Field(default=None, description='RFC 3463 status, e.g. "5.1.1".')
    suppressed: bool = Field(description="The address is suppressed (now or already).")


class ContactSubscribed(InboundEvent):
    routing_key: ClassVar[str] = "contact.subscribed"
    contact_id: Id
    list_id: Id
    event_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this subscription; the same id again sends nothing more.",
    )


MAX_SUBSCRIPTIONS = 10_000  # in one contacts.subscribed event


class Subscription(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    contact_id: Id
    event_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this subscription; the same id again sends nothing more.",
    )


class ContactsSubscribed(InboundEvent):
    """Many contact.subscribed at once (a CSV import): the same effect, one message."""

    routing_key: ClassVar[str] = "contacts.subscribed"
    list_id: Id
    subscriptions: list[Subscription] = Field(min_length=1, max_length=MAX_SUBSCRIPTIONS)


class ContactEvent(InboundEvent):
    routing_key: ClassVar[str] = "contact.event"
    contact_id: Id
    type: str = Field(min_length=1, max_length=200, description='What happened, e.g. "signup".')
    event_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this event; the same id again sends nothing more.",
    )
    data: dict[str, Any] = Field(default_factory=dict, description="Kept with the item.")


AUTORESPONDER_TRIGGERS: dict[str, type[Event]] = {
    m.routing_key: m for m in (ContactSubscribed, ContactsSubscribed, ContactEvent)
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
        CampaignCreated,
        CampaignUpdated,
        CampaignGenerated,
        CampaignCompleted,
        CampaignPaused,
        CampaignResumed,
        SettingsChanged,
        JobRun,
        ContactUnsubscribed,
        BounceDetected,
        ContactSubscribed,
        ContactsSubscribed,
        ContactEvent,
    ]
    return {m.routing_key: m.model_json_schema() for m in models}
