"""The dead-letter queues (`mailroom dlq list|show|replay|purge`), over AMQP (aio-pika).

A dead letter says why (`x-mailroom-error`, set by the consumer that gave up on it), how many
times it was delivered (`x-mailroom-deliveries`; RabbitMQ's `x-death` for one the broker
dead-lettered itself) and where it came from (`x-mailroom-original-exchange` and
`-routing-key`, else `x-death`, else the bindings of the queue it was taken from).

Reading one (`show`) takes it and gives it back unacknowledged: RabbitMQ has no read that
leaves a message in place. A replay publishes each message, confirmed and mandatory, to the
exchange and routing key it came by, and acknowledges the dead letter only after the broker
confirmed the copy: interrupted at any point, a message is in the DLQ, or in its work queue,
or (between the confirm and the ack) in both, which every consumer takes as the duplicate it
is. A replay handles at most the messages the DLQ held when it started, so one that is
dead-lettered again at once is not replayed in a loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aiormq import spec
from mailroom_common.broker import Topology
from mailroom_common.intake import (
    DEAD_LETTERED_AT_HEADER,
    DELIVERIES_HEADER,
    ERROR_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
)
from mailroom_common.job_overview import queue_counts

REPLAYED_FROM_HEADER = "x-mailroom-replayed-from"
REPLAYS_HEADER = "x-mailroom-replays"
# headers of the dead-lettering, not of the message: a replayed copy starts afresh (a work
# queue's delivery count must not carry the old one)
DEAD_LETTER_HEADERS = {
    ERROR_HEADER,
    "x-mailroom-queue",
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    DELIVERIES_HEADER,
    DEAD_LETTERED_AT_HEADER,
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
}
BODY_PREVIEW = 300


class UnknownQueue(ValueError):
    """Not a dead-letter queue of this installation; str() lists them."""


def resolve_queue(topology: Topology, name: str) -> str:
    """The full name of a DLQ given as listed, or without the queue prefix, or as the work
    queue it serves (the `queue` label of mailroom_dead_letters_total, which the alert
    MailroomDeadLetters names)."""
    known = topology.dead_letter_queue_names()
    prefixed = f"{topology.prefix}.{name}"
    for candidate in (name, prefixed, f"{prefixed}.dlq", f"{name}.dlq"):
        if candidate in known:
            return candidate
    raise UnknownQueue(f"no dead-letter queue {name!r}; they are: {', '.join(known)}")


@dataclass(frozen=True)
class Origin:
    exchange: str
    routing_key: str


@dataclass
class DeadLetter:
    reason: str | None
    tries: int | None
    dead_lettered_at: datetime | None
    age_seconds: float | None
    origin: Origin | None
    message_type: str | None
    body_bytes: int
    body: str = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dead_lettered_at"] = (
            self.dead_lettered_at.isoformat() if self.dead_lettered_at else None
        )
        return data


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _deaths(headers: dict[str, Any]) -> list[dict[str, Any]]:
    deaths = headers.get("x-death")
    return [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []


def _topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: * is one word, # any number of words."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def origin_of(
    message: AbstractIncomingMessage, topology: Topology, dead_letter_queue: str
) -> Origin | None:
    """The exchange and routing key the message came by to the queue that gave up on it."""
    headers = dict(message.headers or {})
    exchange = _text(headers.get(ORIGINAL_EXCHANGE_HEADER))
    routing_key = _text(headers.get(ORIGINAL_ROUTING_KEY_HEADER))
    if exchange and routing_key:
        return Origin(exchange, routing_key)
    source = dead_letter_queue.removesuffix(".dlq")
    for death in _deaths(headers):
        keys = death.get("routing-keys") or []
        if _text(death.get("queue")) == source and death.get("exchange") and keys:
            return Origin(str(_text(death["exchange"])), str(_text(keys[0])))
    message_type = message.type or ""
    listeners = {
        topology.settings_dead_letters.name: "settings.changed",
        topology.job_run_dead_letters.name: "job.run",
    }
    if dead_letter_queue in listeners and message_type == listeners[dead_letter_queue]:
        return Origin(topology.events.name, message_type)
    for queue, bound_to, pattern in topology.bindings():
        if queue.name == source and message_type and _topic_matches(pattern, message_type):
            return Origin(bound_to.name, message_type)
    return None


def _tries(headers: dict[str, Any]) -> int | None:
    recorded = headers.get(DELIVERIES_HEADER)
    if isinstance(recorded, int):
        return recorded
    counts = [d.get("count") for d in _deaths(headers)]
    known = [c for c in counts if isinstance(c, int)]
    return sum(known) if known else None


def _dead_lettered_at(headers: dict[str, Any]) -> datetime | None:
    recorded = headers.get(DEAD_LETTERED_AT_HEADER)
    if isinstance(recorded, int | float):
        return datetime.fromtimestamp(recorded, UTC)
    for death in _deaths(headers):
        moment = death.get("time")
        if isinstance(moment, datetime):
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _reason(headers: dict[str, Any]) -> str | None:
    reason = _text(headers.get(ERROR_HEADER))
    if reason:
        return reason
    deaths = _deaths(headers)
    if deaths:
        death = deaths[0]
        return f"{_text(death.get('reason'))} in {_text(death.get('queue'))} (by RabbitMQ)"
    return None


def describe(
    message: AbstractIncomingMessage, topology: Topology, dead_letter_queue: str
) -> DeadLetter:
    headers = dict(message.headers or {})
    moment = _dead_lettered_at(headers)
    return DeadLetter(
        reason=_reason(headers),
        tries=_tries(headers),
        dead_lettered_at=moment,
        age_seconds=round(time.time() - moment.timestamp(), 1) if moment else None,
        origin=origin_of(message, topology, dead_letter_queue),
        message_type=message.type,
        body_bytes=len(message.body),
        body=message.body[:BODY_PREVIEW].decode("utf-8", "replace"),
    )


async def connect(rabbitmq_url: str, wait: float) -> AbstractConnection:
    return await aio_pika.connect(rabbitmq_url, timeout=wait)


async def depths(connection: AbstractConnection, topology: Topology) -> dict[str, int | None]:
    """Every DLQ with the messages in it (None: the queue does not exist)."""
    counts = await queue_counts(connection, topology.dead_letter_queue_names())
    return {name: (count[0] if count else None) for name, count in counts.items()}


async def _depth(connection: AbstractConnection, queue: str) -> int:
    count = (await queue_counts(connection, [queue]))[queue]
    if count is None:
        raise UnknownQueue(f"the queue {queue} does not exist (no service has declared it)")
    return count[0]


async def show(
    connection: AbstractConnection, topology: Topology, queue: str, limit: int, wait: float
) -> tuple[int, list[DeadLetter]]:
    """(messages in the queue, the first `limit` of them described); none is removed."""
    total = await _depth(connection, queue)
    described: list[DeadLetter] = []
    async with connection.channel() as channel:
        dlq = await channel.declare_queue(queue, passive=True)
        for _ in range(min(limit, total)):
            message = await dlq.get(no_ack=False, fail=False, timeout=wait)
            if message is None:
                break
            described.append(describe(message, topology, queue))
        # closing the channel gives every message taken back to the queue
    return total, described


@dataclass
class ReplayReport:
    queue: str
    replayed: int = 0
    # (what the message is, why it stayed in the DLQ)
    kept: list[tuple[str, str]] = field(default_factory=list)
    left: int = 0  # messages in the DLQ afterwards


def _replayed_copy(message: AbstractIncomingMessage, dead_letter_queue: str) -> aio_pika.Message:
    headers = {k: v for k, v in (message.headers or {}).items() if k not in DEAD_LETTER_HEADERS}
    replays = headers.get(REPLAYS_HEADER)
    headers[REPLAYS_HEADER] = (replays if isinstance(replays, int) else 0) + 1
    headers[REPLAYED_FROM_HEADER] = dead_letter_queue
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        app_id=message.app_id,
        timestamp=message.timestamp,
    )


def _what(message: AbstractIncomingMessage) -> str:
    preview = message.body[:120].decode("utf-8", "replace")
    try:
        event = json.loads(message.body)
    except ValueError:
        return f"{message.type or 'a message'} {preview!r}"
    keys = ("campaign_id", "page_id", "job", "group", "contact_id")
    ids = ", ".join(f"{k} {event[k]}" for k in keys if isinstance(event, dict) and k in event)
    return f"{message.type or 'a message'}" + (f" ({ids})" if ids else "")


async def replay(
    connection: AbstractConnection,
    topology: Topology,
    queue: str,
    limit: int | None,
    wait: float,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Publish up to `limit` dead letters (all of them when None) back where they came from,
    each acknowledged in the DLQ only once its copy is confirmed. `progress(done, wanted)`
    is called after each message."""
    report = ReplayReport(queue)
    total = await _depth(connection, queue)
    wanted = total if limit is None else min(limit, total)
    async with (
        connection.channel() as taking,
        connection.channel(publisher_confirms=True, on_return_raises=True) as publishing,
    ):
        dlq = await taking.declare_queue(queue, passive=True)
        for done in range(wanted):
            if progress is not None:
                progress(done, wanted)
            message = await dlq.get(no_ack=False, fail=False, timeout=wait)
            if message is None:
                break
            target = origin_of(message, topology, queue)
            if target is None:
                # kept unacknowledged until the channel closes: not taken again meanwhile
                report.kept.append((_what(message), "where it came from is not recorded"))
                continue
            exchange = await publishing.get_exchange(target.exchange, ensure=False)
            try:
                confirmed = await exchange.publish(
                    _replayed_copy(message, queue),
                    routing_key=target.routing_key,
                    mandatory=True,
                    timeout=wait,
                )
            except Exception as error:  # unroutable, refused, or the channel closed
                report.kept.append((_what(message), f"not published: {error!r}"))
                if publishing.is_closed:
                    break  # the rest stay for a next run
                continue
            if not isinstance(confirmed, spec.Basic.Ack):
                report.kept.append((_what(message), f"the broker answered {confirmed!r}"))
                continue
            await message.ack()
            report.replayed += 1
    report.left = await _depth(connection, queue)
    return report


async def purge(connection: AbstractConnection, queue: str) -> int:
    """Delete every message of the DLQ; how many there were."""
    await _depth(connection, queue)
    async with connection.channel() as channel:
        dlq = await channel.declare_queue(queue, passive=True)
        purged = await dlq.purge()
    return int(purged.message_count or 0)
