"""Versioned event and command models: every message on the broker is one of these.

A consumer refuses (dead-letters) a message whose `schema_version` it does not know.
Routing keys double as event names.

What PostgreSQL could not take is refused here, by the model, not by a failing query that
is retried: ids are positive int64 (`Id`), and no string anywhere in a message (keys of
free-form data included) holds a NUL character.

Unknown fields: events (the events exchange: contact.subscribed, contact.event,
delivery.results, settings.changed, ...) tolerate fields they do not know, so a newer
publisher does not break an older consumer. Commands and internal work messages refuse
them: a misspelt field of a command (`sendAt` for `send_at`) must not be dropped in
silence and launch a campaign now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


def nul_path(value: Any) -> str | None:
    """Where `value` (a model, dict, list or string) holds a NUL character, if anywhere."""
    return _nul_at(value, "")


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


CAMPAIGN_COMMANDS: dict[str, type[Event]] = {
    m.routing_key: m for m in (CampaignLaunch, CampaignPause, CampaignResume, CampaignCancel)
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


# --- contacts from the CRM (events exchange, the subscriptions service) ---------------------

MAX_UPSERTED_CONTACTS = 1_000  # in one contact.upserted event
MAX_ERASED_CONTACTS = 1_000  # crm_ids and emails in one contact.erased event
CrmId = Annotated[str, Field(min_length=1, max_length=200, description="The CRM's own contact id.")]
ListName = Annotated[str, Field(min_length=1, max_length=200)]
AttributeName = Annotated[str, Field(min_length=1, max_length=200)]
CorrelationId = Annotated[
    str | None,
    Field(
        default=None,
        max_length=200,
        description="The CRM's id of this request, given back in the answer.",
    ),
]


class UpsertedContact(BaseModel):
    """One contact of a contact.upserted batch. A contact that cannot be taken (an address
    Mailroom cannot send to, a NUL character, an erased CRM id) fails alone: the answer
    (contact.upserted.done) names it with the reason."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    crm_id: CrmId
    email: str = Field(description="Checked as `contacts import` checks it.")
    first_name: str | None = Field(default=None, max_length=1000, description="None: unchanged.")
    last_name: str | None = Field(default=None, max_length=1000, description="None: unchanged.")
    attributes: dict[AttributeName, str | int | float | bool | None] = Field(
        default_factory=dict,
        max_length=100,
        description="Merge fields ({{ contact.<name> }}), added to those kept; null removes one.",
    )
    lists: dict[ListName, Literal["subscribed", "unsubscribed"]] = Field(
        default_factory=dict,
        max_length=100,
        description=(
            "Memberships by list name (a list not known yet is created). subscribed never"
            " resubscribes a membership that is unsubscribed; lists not named are left as"
            " they are."
        ),
    )


class ContactsUpserted(InboundEvent):
    """The CRM's contacts, created or updated by their crm_id, in batches."""

    routing_key: ClassVar[str] = "contact.upserted"
    correlation_id: CorrelationId
    contacts: list[UpsertedContact] = Field(min_length=1, max_length=MAX_UPSERTED_CONTACTS)

    @model_validator(mode="after")
    def _no_nul_characters(self) -> ContactsUpserted:
        """NUL characters fail the contact that holds them, not the batch (checked per
        contact by the consumer)."""
        if self.correlation_id is not None and "\x00" in self.correlation_id:
            raise ValueError("correlation_id holds a NUL character, which PostgreSQL cannot store")
        return self


class FailedContact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    crm_id: str
    reason: str


class ContactsUpsertedDone(Event):
    """The answer to one contact.upserted: what it did, and the contacts it could not take."""

    routing_key: ClassVar[str] = "contact.upserted.done"
    correlation_id: str | None = None
    created: Count
    updated: Count = Field(
        description="Existing contacts matched (by crm_id, or adopted by address)."
    )
    subscribed: Count = Field(description="Memberships created (announced as contacts.subscribed).")
    unsubscribed: Count = Field(description="Memberships the CRM unsubscribed.")
    kept_unsubscribed: Count = Field(
        description="Memberships the batch asked for that stay unsubscribed."
    )
    duplicates: Count = Field(
        description="Contacts superseded by a later one with the same crm_id."
    )
    failed: list[FailedContact]


class ContactErased(InboundEvent):
    """Erase people (GDPR article 17): by the CRM's ids, and/or by address."""

    routing_key: ClassVar[str] = "contact.erased"
    correlation_id: CorrelationId
    crm_ids: list[CrmId] = Field(default_factory=list, max_length=MAX_ERASED_CONTACTS)
    emails: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=list,
        max_length=MAX_ERASED_CONTACTS,
        description="Addresses to erase as well, whoever holds them (e.g. a former address).",
    )

    @model_validator(mode="after")
    def _names_someone(self) -> ContactErased:
        if not self.crm_ids and not self.emails:
            raise ValueError("names nobody: give crm_ids or emails")
        return self


class ContactErasedDone(Event):
    """The answer to one contact.erased, once everything it names is erased (again: an
    erasure is idempotent, and one naming nobody Mailroom knows is done at once)."""

    routing_key: ClassVar[str] = "contact.erased.done"
    correlation_id: str | None = None
    crm_ids: list[str] = Field(description="The crm_ids the request named.")
    unknown_crm_ids: list[str] = Field(description="Named, but no contact has them.")
    contacts: Count = Field(description="Contacts erased now (erased before: not counted).")
    items: Count = Field(description="Campaign, archived and autoresponder items scrubbed.")
    bounces: Count
    suppressions_hashed: Count


CRM_CONTACT_EVENTS: dict[str, type[Event]] = {
    m.routing_key: m for m in (ContactsUpserted, ContactErased)
}


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
        ContactsUpserted,
        ContactsUpsertedDone,
        ContactErased,
        ContactErasedDone,
    ]
    return {m.routing_key: m.model_json_schema() for m in models}
