"""How every consumer takes a message: parse, process, acknowledge; never lose, never loop.

Every subscriber gets the raw bytes (`broker.raw_body` is the decoder of every broker from
`make_broker`, and `subscribe` sets it on each subscriber too); this module parses them.

- Too big, not JSON, not UTF-8, nested too deeply, wrong content type, wrong schema,
  unknown routing key, `Rejected` from the handler, or data PostgreSQL refuses for good
  (`asyncpg.DataError`: a number out of range, a NUL character, ...): the message goes to
  its queue's dead-letter queue with the reason in `x-mailroom-error` (the handler's
  `give_up` runs first where the message was valid), and the consumer carries on.
- Every log line while a message is handled carries its queue, message id and the ids it
  names (campaign, page, item, contact: `log_fields`).
- Any other error (database down, broker hiccup): the message is requeued after a pause;
  once it has been delivered `delivery_limit` times the handler's `give_up` runs (e.g. fail
  the items it carried, so no campaign waits for ever) and it is dead-lettered with the error.
- Fields a message's model does not know are ignored (a newer publisher's), and each set of
  them is logged once per process (`_log_unknown_fields`); a newer major `schema_version`
  is refused like any invalid message (events.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitExchange, RabbitQueue, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from mailroom_common.broker import raw_body
from mailroom_common.events import Event, OutboundEmail, event_from_json, take_unknown_fields
from mailroom_common.jobs import job_of_queue
from mailroom_common.logs import add_log_fields, log_context
from mailroom_common.metrics import DEAD_LETTERS, MESSAGES_HANDLED, QUEUE_MESSAGE_AGE_SECONDS
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

ERROR_HEADER = "x-mailroom-error"
# a dead letter's origin, for `mailroom dlq show|replay`: the exchange and routing key it came
# by, how many times it was delivered, and when it was dead-lettered (unix seconds)
ORIGINAL_EXCHANGE_HEADER = "x-mailroom-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-mailroom-original-routing-key"
DELIVERIES_HEADER = "x-mailroom-deliveries"
DEAD_LETTERED_AT_HEADER = "x-mailroom-dead-lettered-at"
REQUEUE_PAUSE_SECONDS = 1.0
# far above any batch we publish (MAILROOM_BATCH_SIZE rendered emails); RabbitMQ's own
# limit is 128 MiB
MAX_BODY_BYTES = 16 * 1024 * 1024
JSON_CONTENT_TYPE = "application/json"
# the JSON parser's (pydantic-core's) nesting limit: deeper input is refused, never a
# RecursionError
MAX_JSON_DEPTH = 200
# errors PostgreSQL gives for the data itself: the same message fails the same way every time
PERMANENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,  # class 22: out of range, NUL, bad text representation, ...
    asyncpg.ProgramLimitExceededError,  # class 54: e.g. a value too big for an index
)


# (routing key, unknown fields) already logged by this process; bounded, as every message
# could bring a new set
_UNKNOWN_LOGGED: set[tuple[str, tuple[str, ...], str]] = set()
MAX_UNKNOWN_LOGGED = 1000
MAX_UNKNOWN_SHOWN = 20


class Rejected(Exception):
    """The message can never be processed (e.g. it names an unknown campaign)."""


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for issue in error.errors()[:5]:
        where = ".".join(str(p) for p in issue["loc"])
        message = issue["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def subscribe(
    router: RabbitRouter,
    runtime: Runtime,
    queue: RabbitQueue,
    exchange: RabbitExchange,
    models: Mapping[str, type[E]] | type[E],
    process: Callable[[E, RabbitMessage], Awaitable[None]],
    give_up: Callable[[E, str], Awaitable[None]] | None = None,
    *,
    dead_letter_key: str | None = None,
    prefetch: int | None = None,
) -> None:
    """Consume `queue` (bound to `exchange`) with `process`: the one way a service
    subscribes. Raw bytes in, manual acks, every message settled by `take`. At most
    `prefetch` messages (by default MAILROOM_PREFETCH) are delivered and handled at once
    (a channel of its own); each is in memory, as it came and decoded, until it is settled."""
    channel = Channel(
        prefetch_count=runtime.settings.prefetch if prefetch is None else prefetch,
        publisher_confirms=True,
        on_return_raises=True,
    )
    job = job_of_queue(runtime.topology, queue.name)
    if job is not None:  # each message handled is a run of its job (the heartbeats)
        process = runtime.jobs.tracked(job.name, process)

    @router.subscriber(
        queue,
        exchange,
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        title=queue.name,
        channel=channel,
    )
    async def consume(message: RabbitMessage) -> None:
        # FastStream keeps the message in a context variable while its handler runs, and
        # every task, timer or connection the handler starts copies that context: an SMTP
        # or database connection opened for one batch kept the whole batch alive for as
        # long as it lived. The handler runs in a context of its own, and nothing it
        # starts keeps the message.
        await asyncio.create_task(
            take(runtime, queue, message, models, process, give_up, dead_letter_key),
            context=contextvars.Context(),
        )


async def dead_letter(
    runtime: Runtime,
    queue: RabbitQueue,
    message: RabbitMessage,
    reason: str,
    routing_key: str | None = None,
) -> None:
    """Publish the message as it came to the dead-letter exchange, routed to the DLQ of
    `queue` (or to `routing_key`'s), with the reason."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers[ERROR_HEADER] = reason[:1000]
    headers["x-mailroom-queue"] = queue.name
    raw = message.raw_message
    headers[ORIGINAL_EXCHANGE_HEADER] = raw.exchange or ""
    headers[ORIGINAL_ROUTING_KEY_HEADER] = raw.routing_key or ""
    headers[DELIVERIES_HEADER] = delivery_count(message) + 1
    headers[DEAD_LETTERED_AT_HEADER] = int(time.time())
    await runtime.broker.publish(
        message.body,
        exchange=runtime.topology.dead_letters,
        routing_key=routing_key or queue.name,
        persist=True,
        headers=headers,
        content_type=raw.content_type,
        message_type=raw.type,
    )
    DEAD_LETTERS.labels(queue.name).inc()
    log.warning("dead-lettered a message from %s: %s", queue.name, reason)


def _observe_age(queue: RabbitQueue, message: RabbitMessage) -> None:
    """Since publication, or since it left a retry tier (its wait there is deliberate)."""
    published = message.raw_message.timestamp
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        published = deaths[0].get("time", published)
    if isinstance(published, datetime):
        if published.tzinfo is None:
            published = published.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - published).total_seconds()
        QUEUE_MESSAGE_AGE_SECONDS.labels(queue.name).observe(max(0.0, age))


def delivery_count(message: RabbitMessage) -> int:
    """How many times this message was delivered before (quorum queues count it)."""
    count = (message.headers or {}).get("x-delivery-count", 0)
    return int(count) if isinstance(count, int | str) and str(count).isdigit() else 0


async def take(
    runtime: Runtime,
    queue: RabbitQueue,
    message: RabbitMessage,
    models: Mapping[str, type[E]] | type[E],
    process: Callable[[E, RabbitMessage], Awaitable[None]],
    give_up: Callable[[E, str], Awaitable[None]] | None = None,
    dead_letter_key: str | None = None,
) -> None:
    """Handle one message from `queue` with `process`; the message is acked or requeued here."""
    _observe_age(queue, message)
    with log_context(queue=queue.name, message_id=message.message_id or None):
        try:
            outcome = await _handle(
                runtime, queue, message, models, process, give_up, dead_letter_key
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # dead-lettering or giving up failed (broker or database down): try again later,
            # the delivery limit of the queue stays the last resort
            log.warning("could not settle a message from %s: %r", queue.name, error)
            await _requeue(message)
            outcome = "requeued"
    MESSAGES_HANDLED.labels(queue.name, outcome).inc()


def log_fields(event: Event) -> dict[str, Any]:
    """The ids of `event` that every log line about it carries (never an address)."""
    fields = {
        name: getattr(event, name, None)
        for name in ("campaign_id", "page_id", "item_id", "contact_id", "list_id")
    }
    emails = getattr(event, "emails", None)
    # an outbound batch's emails (contact.erased has emails too: addresses, never logged)
    if isinstance(emails, list) and all(isinstance(e, OutboundEmail) for e in emails):
        fields["batch_items"] = len(emails)
        if len(emails) == 1:
            fields["item_id"] = emails[0].item_id
    item_ids = getattr(event, "item_ids", None)
    if isinstance(item_ids, list):
        fields["batch_items"] = len(item_ids)
    kind = getattr(event, "kind", None)
    if isinstance(kind, str):
        fields["kind"] = kind
    return fields


async def _requeue(message: RabbitMessage) -> None:
    await asyncio.sleep(REQUEUE_PAUSE_SECONDS)
    await message.reject(requeue=True)


async def _handle(
    runtime: Runtime,
    queue: RabbitQueue,
    message: RabbitMessage,
    models: Mapping[str, type[E]] | type[E],
    process: Callable[[E, RabbitMessage], Awaitable[None]],
    give_up: Callable[[E, str], Awaitable[None]] | None,
    dead_letter_key: str | None,
) -> str:
    async def refuse(reason: str) -> str:
        await dead_letter(runtime, queue, message, reason, dead_letter_key)
        await message.ack()
        return "dead_lettered"

    # everything between the body and the ack under one handling: an error of our own in
    # parsing or in the log fields counts towards the delivery limit like the handler's
    event: E | None = None
    try:
        event = parse(message, models)
        add_log_fields(**log_fields(event))
        await process(event, message)
    except Rejected as error:
        return await refuse(str(error))
    except PERMANENT_DATABASE_ERRORS as error:
        reason = f"the database refused the data for good ({type(error).__name__}): {error}"
        log.warning("giving up on a message from %s: %s", queue.name, reason)
        if give_up is not None and event is not None:
            await give_up(event, reason)
        return await refuse(reason)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        deliveries = delivery_count(message) + 1
        if deliveries < runtime.settings.delivery_limit:
            log.warning(
                "requeueing a message from %s (delivery %d): %r", queue.name, deliveries, error
            )
            await _requeue(message)
            return "requeued"
        reason = f"failed {deliveries} times, last error: {error!r}"
        log.exception("giving up on a message from %s", queue.name)
        if give_up is not None and event is not None:
            await give_up(event, reason)
        return await refuse(reason)
    await message.ack()
    return "ok"


def parse(message: RabbitMessage, models: Mapping[str, type[E]] | type[E]) -> E:
    """The event in `message`'s raw body; `Rejected` says in words why there is none."""
    if isinstance(models, Mapping):
        routing_key = message.raw_message.routing_key or ""
        if routing_key not in models:
            raise Rejected(f"unknown message type {routing_key!r}")
        model = models[routing_key]
    else:
        model = models
    problem = _problem(message)
    if problem is not None:
        raise Rejected(f"invalid {model.routing_key} message: {problem}")
    try:
        event = event_from_json(model, message.body)
    except ValidationError as error:
        raise Rejected(
            f"invalid {model.routing_key} message: {_why_not(message.body, error)}"
        ) from error
    _log_unknown_fields(event)
    return event


def _log_unknown_fields(event: Event) -> None:
    """Fields this version does not know are dropped; each set is logged once a process."""
    fields = take_unknown_fields(event)
    if not fields:
        return
    # a message may name thousands of fields, each of any length: remember and log a few
    shown = tuple(_printable(f) for f in fields[:MAX_UNKNOWN_SHOWN])
    key = (event.routing_key, shown, str(len(fields)))
    if key in _UNKNOWN_LOGGED or len(_UNKNOWN_LOGGED) >= MAX_UNKNOWN_LOGGED:
        return
    _UNKNOWN_LOGGED.add(key)
    more = len(fields) - len(shown)
    log.warning(
        "%s (schema_version %s) has fields this version does not know, ignored: %s%s"
        " (logged once per process for this set of fields)",
        event.routing_key,
        _printable(str(event.schema_version)),
        ", ".join(shown),
        f" and {more} more" if more else "",
    )


def _printable(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name[:100])


def _problem(message: RabbitMessage) -> str | None:
    """What is wrong with the body before it is parsed, if anything."""
    body = message.body
    if len(body) > MAX_BODY_BYTES:
        return f"body of {len(body)} bytes: the limit is {MAX_BODY_BYTES} bytes"
    content_type = (message.content_type or "").split(";")[0].strip().lower()
    if content_type not in ("", JSON_CONTENT_TYPE):
        return f"content type {content_type!r}: expected {JSON_CONTENT_TYPE}"
    if not body.strip():
        return "empty body: expected a JSON object"
    return None


def _why_not(body: bytes, error: ValidationError) -> str:
    issues = error.errors()
    if not any(issue["type"] == "json_invalid" for issue in issues):
        return describe_validation_error(error)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8 text: byte {body[bad.start]:#04x} at offset {bad.start}"
    detail = str(issues[0].get("ctx", {}).get("error", "")) or issues[0]["msg"]
    if "recursion limit" in detail:
        return f"not JSON we accept: nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    return f"not JSON: {detail}"
