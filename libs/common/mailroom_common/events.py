"""Versioned event and command models: every message on the broker is one of these.

Routing keys double as event names. Every model with a `routing_key` is in `REGISTRY` (it
registers itself when its class is defined), with what the AsyncAPI document says of it:
its exchange, who publishes it and who listens (`mailroom asyncapi`).

What PostgreSQL could not take is refused here, by the model, not by a failing query that
is retried: ids are positive int64 (`Id`), and no string anywhere in a message (keys of
free-form data included) holds a NUL character.

How a message may evolve (docs/events.md, "Schema versions"):
- `schema_version` is `MAJOR` or `"MAJOR.MINOR"` (1 is 1.0). A newer minor only adds
  optional fields: it is read, its unknown fields ignored. A newer major is refused
  (dead-lettered with a reason naming schema_version): its meaning changed.
- Unknown fields are accepted and ignored (`unknown_fields` lists them, `intake` logs each
  set once and drops them: never forwarded), at every level of a message, so a newer
  publisher never breaks an older consumer. Only a field that is another spelling of a
  known one (`sendAt` for `send_at`) is refused: dropped in silence, it would launch a
  campaign now instead of later.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

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
        value = {name: getattr(value, name) for name in type(value).model_fields}
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


def _spelling(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


@functools.cache
def _spellings(model: type[BaseModel]) -> dict[str, str]:
    """The fields of `model` by their spelling without `_`, `-` and case."""
    return {_spelling(name): name for name in model.model_fields}


def nul_path(value: Any) -> str | None:
    """Where `value` (a model, dict, list or string) holds a NUL character, if anywhere."""
    return _nul_at(value, "")


class Part(BaseModel):
    """A part of a message (or a whole one): unknown fields are kept aside, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _no_respelt_fields(self) -> Part:
        extra = self.__pydantic_extra__
        if extra:
            known = _spellings(type(self))
            for name in extra:
                meant = known.get(_spelling(name))
                if meant is not None:
                    raise ValueError(f"{name} is not a field: did you mean {meant}?")
        return self


def unknown_fields(part: BaseModel, path: str = "") -> list[str]:
    """The fields of `part` (and of the parts it holds) that its model does not know, as
    paths (`results[].note`); free-form data (`dict[str, Any]`) holds none."""
    return _unknown_fields(part, path, forget=False)


def take_unknown_fields(part: BaseModel) -> list[str]:
    """`unknown_fields(part)`, then forgotten: no part keeps them in memory any longer, and
    a message made again from it (a batch sent on to a retry tier) carries only fields this
    version knows, never what a publisher put there for somebody else."""
    return _unknown_fields(part, "", forget=True)


def _unknown_fields(part: BaseModel, path: str, forget: bool) -> list[str]:
    extra = part.__pydantic_extra__
    found = [f"{path}{name}" for name in extra or ()]
    if extra and forget:
        extra.clear()
    for name in _part_fields(type(part)):
        value = getattr(part, name)
        if isinstance(value, BaseModel):
            found += _unknown_fields(value, f"{path}{name}.", forget)
        elif isinstance(value, list | tuple):
            seen: set[str] = set()
            for item in value:
                # most lists are long and hold parts with nothing unknown: look cheaply first
                if isinstance(item, BaseModel) and (
                    item.__pydantic_extra__ or _part_fields(type(item))
                ):
                    seen.update(_unknown_fields(item, f"{path}{name}[].", forget))
            found += sorted(seen)
    return found


@functools.cache
def _part_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` that can hold parts (models) of their own."""

    def holds_part(annotation: Any) -> bool:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return True
        return any(holds_part(arg) for arg in get_args(annotation))

    return tuple(name for name, f in model.model_fields.items() if holds_part(f.annotation))


SCHEMA_VERSION_PATTERN = r"^[1-9][0-9]{0,8}(\.[0-9]{1,9})?$"
# strict: `true`, `1.0`, `"01"` or `" 1"` are not versions, whatever lax parsing makes of them
SchemaVersion = Annotated[
    Annotated[int, Field(strict=True, ge=1, le=999_999_999)]
    | Annotated[str, Field(strict=True, pattern=SCHEMA_VERSION_PATTERN)],
    Field(
        description=(
            'MAJOR or "MAJOR.MINOR" (1 is 1.0). A consumer reads a newer minor (ignoring the'
            " fields it does not know) and refuses a newer major."
        )
    ),
]
ExchangeName = Literal["commands", "events", "work"]

REGISTRY: dict[str, type[Event]] = {}
"""Every message model by routing key: what the AsyncAPI document is made from."""


class Event(Part):
    routing_key: ClassVar[str]
    # the major version this code reads and writes; a newer minor is read all the same
    schema_major: ClassVar[int] = 1
    # for the AsyncAPI document: where it is published, by whom, and who else listens
    exchange: ClassVar[ExchangeName] = "events"
    publishers: ClassVar[tuple[str, ...]] = ()
    listeners: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    schema_version: SchemaVersion = 1
    occurred_at: datetime = Field(default_factory=_now)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        routing_key = cls.__dict__.get("routing_key")
        if isinstance(routing_key, str):
            known = REGISTRY.get(routing_key)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(f"{routing_key} is already {known.__qualname__}'s")
            REGISTRY[routing_key] = cls

    @field_validator("schema_version", mode="wrap")
    @classmethod
    def _readable_version(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int | str:
        try:
            version: int | str = handler(value)
        except ValidationError:
            # one reason instead of one per member of the union (and never the value: it
            # may be a megabyte)
            raise ValueError(
                'not a version: give MAJOR (an integer from 1) or "MAJOR.MINOR" (a string),'
                f' e.g. {cls.schema_major} or "{cls.schema_major}.0"'
            ) from None
        major = int(str(version).split(".")[0])
        if major > cls.schema_major:
            raise ValueError(
                f"major version {major} is newer than this consumer reads"
                f" ({cls.schema_major}.x): a newer major changes the meaning of the message;"
                " upgrade Mailroom, or publish version"
                f" {cls.schema_major}"
            )
        if major < cls.schema_major:
            raise ValueError(
                f"major version {major} is no longer read (this consumer reads"
                f" {cls.schema_major}.x)"
            )
        return version

    @model_validator(mode="after")
    def _no_nul_characters(self, info: ValidationInfo) -> Event:
        if info.context and info.context.get(_NUL_FREE):
            return self
        where = _nul_at(self, "")
        if where is not None:
            raise ValueError(f"{where} holds a NUL character, which PostgreSQL cannot store")
        return self


class InboundEvent(Event):
    """An event of the events exchange (every message now tolerates unknown fields)."""


class Command(Event):
    """A command: the commands exchange (a marketer, the CRM, the CLI)."""

    exchange: ClassVar[ExchangeName] = "commands"


# --- commands (commands exchange) ---------------------------------------------------------


class CampaignLaunch(Command):
    routing_key: ClassVar[str] = "campaign.launch"
    publishers: ClassVar[tuple[str, ...]] = ("crm", "cli")
    summary: ClassVar[str] = "Launch a draft campaign, now or at send_at."
    campaign_id: Id
    send_at: datetime | None = Field(default=None, description="Send later; None means now.")


class CampaignPause(Command):
    routing_key: ClassVar[str] = "campaign.pause"
    publishers: ClassVar[tuple[str, ...]] = ("crm", "cli")
    summary: ClassVar[str] = "Stop generating and sending; resume continues."
    campaign_id: Id


class CampaignResume(Command):
    routing_key: ClassVar[str] = "campaign.resume"
    publishers: ClassVar[tuple[str, ...]] = ("crm", "cli")
    summary: ClassVar[str] = "Continue a paused campaign."
    campaign_id: Id


class CampaignCancel(Command):
    routing_key: ClassVar[str] = "campaign.cancel"
    publishers: ClassVar[tuple[str, ...]] = ("crm", "cli")
    summary: ClassVar[str] = "Skip every item not yet sending."
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
# a draft campaign's fields, as campaign.create and campaign.update take them
CampaignName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
SubjectTemplate = Annotated[str, Field(min_length=1, max_length=MAX_SUBJECT_CHARS)]
Address = Annotated[str, Field(min_length=1, max_length=MAX_ADDRESS_CHARS)]
HtmlTemplate = Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)]


class CampaignCreate(Command):
    """Create a draft campaign, checked as `mailroom campaign create` checks it (templates
    compiled with the marketing footers and trial-rendered, every list known, From a plain
    address). Answered by campaign.created, or dead-lettered with the field named."""

    routing_key: ClassVar[str] = "campaign.create"
    publishers: ClassVar[tuple[str, ...]] = ("crm",)
    summary: ClassVar[str] = (
        "Create a draft campaign (checked as `mailroom campaign create` checks it). Answered by"
        " campaign.created; refused into the dead-letter queue with the field named in"
        " x-mailroom-error. The same idempotency_key with the same content answers with the"
        " same campaign; with other content it is refused."
    )
    correlation_id: CorrelationId | None = None
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The same key with the same content again answers with the campaign it"
        " created; with other content it is refused.",
    )
    name: CampaignName
    subject: SubjectTemplate = Field(description="A template.")
    from_email: Address
    from_name: str = Field(default="", max_length=MAX_NAME_CHARS)
    reply_to: Address | None = None
    html_template: HtmlTemplate
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


class CampaignUpdate(Command):
    """Change a draft campaign: the fields given replace the stored ones (the lists, when
    `lists` or `list_ids` is given, are replaced whole), and the result is checked as a
    create is. Answered by campaign.updated, or dead-lettered with the field named."""

    routing_key: ClassVar[str] = "campaign.update"
    publishers: ClassVar[tuple[str, ...]] = ("crm",)
    summary: ClassVar[str] = (
        "Change a draft campaign, checked as a create. Answered by campaign.updated; a campaign"
        " that is not a draft, or unknown, is refused into the dead-letter queue."
    )
    campaign_id: Id
    correlation_id: CorrelationId | None = None
    name: CampaignName | None = None
    subject: SubjectTemplate | None = None
    from_email: Address | None = None
    from_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    reply_to: str | None = Field(
        default=None, max_length=MAX_ADDRESS_CHARS, description='"" removes the Reply-To.'
    )
    html_template: HtmlTemplate | None = None
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
    exchange: ClassVar[ExchangeName] = "work"
    publishers: ClassVar[tuple[str, ...]] = ("item_generator",)
    summary: ClassVar[str] = "A page of campaign item ids to render."
    campaign_id: Id
    page_id: Id
    item_ids: list[Id] = Field(min_length=1)


class OutboundEmail(Part):
    item_id: Id
    recipient: str
    envelope_from: str = Field(description="The VERP return path.")
    message: str = Field(description="The whole RFC 5322 message, 7-bit, CRLF line endings.")
    attempt: Count = Field(default=0, description="Temporary failures so far.")


class OutboundBatch(Event):
    routing_key: ClassVar[str] = "outbound.batch"
    exchange: ClassVar[ExchangeName] = "work"
    publishers: ClassVar[tuple[str, ...]] = (
        "message_processor",
        "autoresponder",
        "outbound_sender",
    )
    summary: ClassVar[str] = (
        "Rendered emails, up to MAILROOM_BATCH_SIZE per message. Autoresponder batches "
        "(kind autoresponder) use routing key outbound.priority: the sender's priority "
        "lane; temporary failures come back from the retry tiers (the sender publishes "
        "them there)."
    )
    kind: ItemKind = "campaign"
    campaign_id: Id | None = None
    emails: list[OutboundEmail] = Field(min_length=1)


# --- events (events exchange) -------------------------------------------------------------


class DeliveryResult(Part):
    item_id: Id
    status: Literal["sent", "retry", "failed", "suppressed", "skipped"]
    smtp_code: int | None = None
    smtp_reply: str | None = None


class DeliveryResults(InboundEvent):
    routing_key: ClassVar[str] = "delivery.results"
    publishers: ClassVar[tuple[str, ...]] = ("outbound_sender", "message_processor")
    summary: ClassVar[str] = "What happened to each email of a batch."
    kind: ItemKind = "campaign"
    campaign_id: Id | None = None
    results: list[DeliveryResult]


class CampaignCreated(Event):
    """The answer to campaign.create: the draft campaign exists (made now, or before by the
    same idempotency key or the same broker message)."""

    routing_key: ClassVar[str] = "campaign.created"
    publishers: ClassVar[tuple[str, ...]] = ("item_generator",)
    listeners: ClassVar[str] = "the CRM"
    summary: ClassVar[str] = "The answer to campaign.create: the campaign id and correlation_id."
    campaign_id: Id
    correlation_id: str | None = Field(description="The correlation_id of the request.")
    idempotency_key: str | None = None
    replayed: bool = Field(
        default=False, description="True: an earlier request made it; nothing was created now."
    )


class CampaignUpdated(Event):
    """The answer to campaign.update: the draft campaign was changed."""

    routing_key: ClassVar[str] = "campaign.updated"
    publishers: ClassVar[tuple[str, ...]] = ("item_generator",)
    listeners: ClassVar[str] = "the CRM"
    summary: ClassVar[str] = "The answer to campaign.update: the fields that changed."
    campaign_id: Id
    correlation_id: str | None = Field(description="The correlation_id of the request.")
    changed: list[str] = Field(description="The fields whose stored value changed.")


class CampaignGenerated(InboundEvent):
    routing_key: ClassVar[str] = "campaign.generated"
    publishers: ClassVar[tuple[str, ...]] = ("item_generator",)
    summary: ClassVar[str] = "Every item of a campaign exists."
    campaign_id: Id
    item_count: Count


class CampaignCompleted(Event):
    """A campaign ended: completed (no item left open), failed (reason) or cancelled."""

    routing_key: ClassVar[str] = "campaign.completed"
    publishers: ClassVar[tuple[str, ...]] = ("completion", "item_generator", "message_processor")
    listeners: ClassVar[str] = "anyone (the CRM)"
    summary: ClassVar[str] = (
        "A campaign ended, with its final status (completed, failed, cancelled), its "
        "counts by item status and, for a failed one, the reason. Published by "
        "completion, by item_generator for a cancel, by message_processor for a broken "
        "template."
    )
    campaign_id: Id
    status: Literal["completed", "failed", "cancelled"]
    counts: dict[str, int]
    reason: str | None = Field(default=None, description="Why a failed campaign failed.")


class CampaignPaused(Event):
    routing_key: ClassVar[str] = "campaign.paused"
    publishers: ClassVar[tuple[str, ...]] = ("item_generator", "completion")
    listeners: ClassVar[str] = "anyone (the CRM)"
    summary: ClassVar[str] = (
        "A campaign was paused, and why (a person, or the circuit breaker): its work "
        "waits in the database until it resumes."
    )
    campaign_id: Id
    reason: str


class CampaignResumed(Event):
    routing_key: ClassVar[str] = "campaign.resumed"
    publishers: ClassVar[tuple[str, ...]] = ("item_generator",)
    listeners: ClassVar[str] = "anyone (the CRM)"
    summary: ClassVar[str] = "A paused campaign went back to the status it was paused from."
    campaign_id: Id
    status: Literal["scheduled", "generating", "sending"] = Field(
        description="The status it went back to: the one it was paused from."
    )


class SettingsChanged(InboundEvent):
    routing_key: ClassVar[str] = "settings.changed"
    publishers: ClassVar[tuple[str, ...]] = ("config",)
    summary: ClassVar[str] = "An administrator changed a settings group."
    group: Literal["smtp", "marketing", "bounce"]
    version: Count
    changed_keys: list[str]


class JobRun(InboundEvent):
    """An operator asks a job to run now (`mailroom jobs run`): every replica of it hears."""

    routing_key: ClassVar[str] = "job.run"
    publishers: ClassVar[tuple[str, ...]] = ("config", "cli")
    summary: ClassVar[str] = (
        "Run a job now: every replica of it wakes its periodic work (the generator's poll"
        " and page republishing, the completion sweep, the autoresponder scheduler, the "
        "bounce mailbox poll). Jobs whose work only arrives as messages have nothing to "
        "run."
    )
    job: str = Field(
        min_length=1, max_length=200, description='The job, e.g. "mark-campaigns-completed".'
    )


class ContactUnsubscribed(Event):
    routing_key: ClassVar[str] = "contact.unsubscribed"
    publishers: ClassVar[tuple[str, ...]] = ("subscriptions",)
    listeners: ClassVar[str] = "anyone (the CRM)"
    summary: ClassVar[str] = (
        "A contact unsubscribed from lists (or from everything: then also suppressed)."
    )
    contact_id: Id
    email: str
    list_ids: list[Id] = Field(description="The lists whose membership became unsubscribed.")
    source: str = Field(description='Where the link came from: "c<campaign id>", "a<id>".')
    everything: bool = Field(description="Unsubscribed from every list and suppressed.")


class BounceDetected(Event):
    routing_key: ClassVar[str] = "bounce.detected"
    publishers: ClassVar[tuple[str, ...]] = ("bounce_processor", "outbound_sender")
    listeners: ClassVar[str] = "anyone (the CRM)"
    summary: ClassVar[str] = (
        "A bounce or complaint proven (signed VERP address or Message-ID; for a provider "
        "webhook's event without a Message-ID, the recent send to its recipient) to be "
        "about one of our emails was recorded, from the bounce mailbox or a provider "
        "webhook; suppressed says whether the address will get nothing more. Unproven "
        "bounces are recorded but announce nothing. The outbound sender announces an "
        "address refused for good at send time (550 5.1.1 at RCPT or DATA)."
    )
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


# a trigger's id from its publisher: the same id again fires nothing more
EventId = Annotated[str, Field(min_length=1, max_length=200)]
SubscriptionEventId = Annotated[
    EventId,
    Field(description="Unique id of this subscription; the same id again sends nothing more."),
]


class ContactSubscribed(InboundEvent):
    routing_key: ClassVar[str] = "contact.subscribed"
    publishers: ClassVar[tuple[str, ...]] = ("crm", "cli")
    summary: ClassVar[str] = (
        "A contact subscribed to a list: autoresponders of that list fire once per event_id."
    )
    contact_id: Id
    list_id: Id
    event_id: SubscriptionEventId


MAX_SUBSCRIPTIONS = 10_000  # in one contacts.subscribed event


class Subscription(Part):
    contact_id: Id
    event_id: SubscriptionEventId


class ContactsSubscribed(InboundEvent):
    """Many contact.subscribed at once (a CSV import): the same effect, one message."""

    routing_key: ClassVar[str] = "contacts.subscribed"
    publishers: ClassVar[tuple[str, ...]] = ("cli",)
    summary: ClassVar[str] = (
        "Contacts subscribed to a list, up to 10,000 in one message (an import announces "
        "its new memberships in batches): the same as one contact.subscribed for each."
    )
    list_id: Id
    subscriptions: list[Subscription] = Field(min_length=1, max_length=MAX_SUBSCRIPTIONS)


class ContactEvent(InboundEvent):
    routing_key: ClassVar[str] = "contact.event"
    publishers: ClassVar[tuple[str, ...]] = ("crm",)
    summary: ClassVar[str] = (
        "Something a contact did (type): autoresponders of that type fire once per event_id."
    )
    contact_id: Id
    type: str = Field(min_length=1, max_length=200, description='What happened, e.g. "signup".')
    event_id: EventId = Field(
        description="Unique id of this event; the same id again sends nothing more."
    )
    data: dict[str, Any] = Field(default_factory=dict, description="Kept with the item.")


# --- activity for the CRM's timeline (events exchange, nobody in Mailroom listens) ------

ActivityKind = Literal[
    "sent", "failed", "bounced", "complained", "unsubscribed", "preferences_changed"
]
MAX_ACTIVITIES = 10_000  # in one contact.activity event (a batch of MAILROOM_BATCH_SIZE)


class Activity(Part):
    """One thing that happened to one contact."""

    kind: ActivityKind
    contact_id: Id = Field(description="Mailroom's id of the contact.")
    crm_contact_id: str | None = Field(
        description="The CRM's own id of the contact; null for a contact that came by CSV."
    )
    email: str = Field(description="The address the message went to, or that left the lists.")
    at: datetime = Field(
        description="When it happened (sent: when the relay took it; failed: when the item"
        " failed). The same entry published again has the same at."
    )
    bounce_kind: Literal["hard", "soft"] | None = Field(
        default=None, description="For bounced: hard (the address is suppressed) or soft."
    )
    campaign_id: Id | None = None
    autoresponder_id: Id | None = None
    item_id: Id | None = Field(
        default=None, description="The campaign item or autoresponder item, if any."
    )
    list_ids: list[Id] = Field(
        default_factory=list,
        description="unsubscribed, preferences_changed: the lists the contact left.",
    )
    joined_list_ids: list[Id] = Field(
        default_factory=list, description="preferences_changed: the lists it joined again."
    )
    detail: str | None = Field(
        default=None, description="failed: the SMTP reply; bounced: the RFC 3463 status."
    )


class ContactActivity(Event):
    """Per-contact activity for the CRM's timeline, many contacts in one message."""

    routing_key: ClassVar[str] = "contact.activity"
    publishers: ClassVar[tuple[str, ...]] = ("completion", "bounce_processor", "subscriptions")
    listeners: ClassVar[str] = (
        "the CRM, on a queue of its own bound to contact.activity (Mailroom declares none)"
    )
    summary: ClassVar[str] = (
        "What happened to each contact, batched: one message per delivery.results batch"
        " (sent, failed, a hard bounce at send time), per bounce message or webhook call"
        " (bounced, complained) and per unsubscribe or preferences change. Off with"
        " MAILROOM_ACTIVITY_EVENTS=false."
    )
    activities: list[Activity] = Field(min_length=1, max_length=MAX_ACTIVITIES)


# --- contacts from the CRM (events exchange, the subscriptions service) ---------------------

MAX_UPSERTED_CONTACTS = 1_000  # in one contact.upserted event
MAX_ERASED_CONTACTS = 1_000  # crm_ids and emails in one contact.erased event
CrmId = Annotated[str, Field(min_length=1, max_length=200, description="The CRM's own contact id.")]
AttributeName = Annotated[str, Field(min_length=1, max_length=200)]


class UpsertedContact(Part):
    """One contact of a contact.upserted batch. A contact that cannot be taken (an address
    Mailroom cannot send to, a NUL character, an erased CRM id) fails alone: the answer
    (contact.upserted.done) names it with the reason."""

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
    publishers: ClassVar[tuple[str, ...]] = ("crm",)
    summary: ClassVar[str] = (
        "The CRM's contacts by crm_id, in batches of at most 1,000; answered by"
        " contact.upserted.done. Unsubscribes win: subscribed never revives one."
    )
    correlation_id: CorrelationId | None = None
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
    publishers: ClassVar[tuple[str, ...]] = ("subscriptions",)
    listeners: ClassVar[str] = "the CRM"
    summary: ClassVar[str] = "The answer to one contact.upserted."
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
    publishers: ClassVar[tuple[str, ...]] = ("crm",)
    summary: ClassVar[str] = (
        "Erase people (GDPR article 17) by crm_id and/or address; answered by contact.erased.done."
    )
    correlation_id: CorrelationId | None = None
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
    publishers: ClassVar[tuple[str, ...]] = ("subscriptions",)
    listeners: ClassVar[str] = "the CRM"
    summary: ClassVar[str] = "The answer to one contact.erased, once everything is erased."
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


_NUL_FREE = "mailroom_nul_free"
_E = TypeVar("_E", bound=Event)


def event_from_json(model: type[_E], body: bytes) -> _E:
    """`model` from a message's JSON body. JSON can carry a NUL only as the escape
    `\\u0000` (the parser refuses a raw control character in a string), so a body without
    that text skips the walk through every string of the message: more than half of the
    decoding of a large batch."""
    return model.model_validate_json(body, context={_NUL_FREE: b"\\u0000" not in body})


def event_json(event: Event) -> bytes:
    return event.model_dump_json().encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every message, by routing key (for the AsyncAPI document)."""
    return {key: model.model_json_schema() for key, model in sorted(REGISTRY.items())}
