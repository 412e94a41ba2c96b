"""Broker wiring: exchanges, quorum work queues with dead-letter queues, retry delay tiers.

Names all start with the deployment's queue prefix, so installs (and test runs) sharing a
broker never see each other's messages.

- `<p>.commands` (topic): campaign.create/update/launch/pause/resume/cancel, from marketers
  and the CRM.
- `<p>.events` (topic): delivery.results, campaign.completed, settings.changed, ...
- `<p>.work` (direct): internal hand-offs, items.page and outbound.batch.
- Work queues: their delivery limit is the policy `<p>.delivery-limit` (`broker_policy`).
- `<p>.dlx` (direct): dead letters, routed by the name of the queue they came from to
  `<queue>.dlq`, a queue nobody consumes: it keeps what needs a person. The per-process
  settings.changed queues share one, `<p>.settings-changed.dlq`.
- `<p>.outbound.retry.<ms>ms`: one queue per back-off tier, no consumer; messages wait out
  the queue's TTL and are dead-lettered back to the work exchange as outbound.batch.
- `<p>.subscriptions.contacts`: the CRM's contact.upserted and contact.erased.
- `<p>.outbound_sender.priority`: the priority lane (outbound.priority, autoresponders), a
  queue of its own with its own consumer, so a campaign backlog never delays it; its retries
  wait in `<p>.outbound.priority-retry.<ms>ms` and come back to it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.exceptions import ChannelPreconditionFailed
from faststream.message import StreamMessage
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from prometheus_client import REGISTRY

from mailroom_common.events import Event, event_json
from mailroom_common.settings import Settings

log = logging.getLogger(__name__)

JSON = "application/json"
PRIORITY_ROUTING_KEY = "outbound.priority"


@dataclass(frozen=True)
class Topology:
    prefix: str
    delivery_limit: int
    retry_delays_ms: tuple[int, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            prefix=settings.queue_prefix,
            delivery_limit=settings.delivery_limit,
            retry_delays_ms=tuple(int(s * 1000) for s in settings.retry_delays_seconds),
        )

    @property
    def commands(self) -> RabbitExchange:
        return RabbitExchange(f"{self.prefix}.commands", type=ExchangeType.TOPIC, durable=True)

    @property
    def events(self) -> RabbitExchange:
        return RabbitExchange(f"{self.prefix}.events", type=ExchangeType.TOPIC, durable=True)

    @property
    def work(self) -> RabbitExchange:
        return RabbitExchange(f"{self.prefix}.work", type=ExchangeType.DIRECT, durable=True)

    @property
    def dead_letters(self) -> RabbitExchange:
        return RabbitExchange(f"{self.prefix}.dlx", type=ExchangeType.DIRECT, durable=True)

    def exchanges(self) -> list[RabbitExchange]:
        return [self.commands, self.events, self.work, self.dead_letters]

    # --- the work queues of every service, each with its bindings ---

    @property
    def campaign_commands(self) -> RabbitQueue:
        return self.work_queue("item_generator", "commands", "campaign.*")

    @property
    def item_pages(self) -> RabbitQueue:
        return self.work_queue("message_processor", "pages", "items.page")

    @property
    def outbound_batches(self) -> RabbitQueue:
        return self.work_queue("outbound_sender", "batches", "outbound.batch")

    @property
    def completion_events(self) -> RabbitQueue:
        return self.work_queue("completion", "events", "delivery.results")

    @property
    def outbound_priority(self) -> RabbitQueue:
        return self.work_queue("outbound_sender", "priority", PRIORITY_ROUTING_KEY)

    @property
    def autoresponder_triggers(self) -> RabbitQueue:
        return self.work_queue("autoresponder", "triggers", "contact.subscribed")

    @property
    def crm_contacts(self) -> RabbitQueue:
        """contact.upserted and contact.erased from the CRM (the subscriptions service)."""
        return self.work_queue("subscriptions", "contacts", "contact.upserted")

    def settings_listener(self, instance: str) -> RabbitQueue:
        """Each process's own queue of settings.changed (fan-out: every process hears every
        change). Exclusive and auto-deleted: a process that was down reads the current
        settings when it starts."""
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", instance)
        return RabbitQueue(
            f"{self.prefix}.settings-changed.{tag}",
            exclusive=True,
            auto_delete=True,
            routing_key="settings.changed",
        )

    @property
    def settings_dead_letter_key(self) -> str:
        """Where every process's settings listener dead-letters what it cannot read."""
        return f"{self.prefix}.settings-changed"

    @property
    def settings_dead_letters(self) -> RabbitQueue:
        return RabbitQueue(
            f"{self.settings_dead_letter_key}.dlq",
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=self.settings_dead_letter_key,
        )

    def job_run_listener(self, instance: str) -> RabbitQueue:
        """Each process's own queue of job.run (every replica of a job hears each one);
        exclusive and auto-deleted like the settings listener's."""
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", instance)
        return RabbitQueue(
            f"{self.prefix}.job-run.{tag}",
            exclusive=True,
            auto_delete=True,
            routing_key="job.run",
        )

    @property
    def job_run_dead_letter_key(self) -> str:
        """Where every process's job.run listener dead-letters what it cannot read."""
        return f"{self.prefix}.job-run"

    @property
    def job_run_dead_letters(self) -> RabbitQueue:
        return RabbitQueue(
            f"{self.job_run_dead_letter_key}.dlq",
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=self.job_run_dead_letter_key,
        )

    def dead_letter_queue_names(self) -> list[str]:
        """Every dead-letter queue: one per work queue, and the listeners' shared ones."""
        work = sorted({q.name for q, _, _ in self.bindings()})
        return [f"{name}.dlq" for name in work] + [
            self.settings_dead_letters.name,
            self.job_run_dead_letters.name,
        ]

    def bindings(self) -> list[tuple[RabbitQueue, RabbitExchange, str]]:
        """Every (queue, exchange, routing key): declared by every process, whichever
        services it runs, so no message is published before its queue exists."""
        return [
            (self.campaign_commands, self.commands, "campaign.*"),
            (self.item_pages, self.work, "items.page"),
            (self.outbound_batches, self.work, "outbound.batch"),
            (self.completion_events, self.events, "delivery.results"),
            (self.completion_events, self.events, "campaign.generated"),
            (self.outbound_priority, self.work, PRIORITY_ROUTING_KEY),
            (self.autoresponder_triggers, self.events, "contact.subscribed"),
            (self.autoresponder_triggers, self.events, "contacts.subscribed"),
            (self.autoresponder_triggers, self.events, "contact.event"),
            (self.crm_contacts, self.events, "contact.upserted"),
            (self.crm_contacts, self.events, "contact.erased"),
        ]

    def all_queue_names(self) -> list[str]:
        work = {q.name for q, _, _ in self.bindings()}
        names = sorted(work) + sorted(f"{n}.dlq" for n in work)
        names.append(self.settings_dead_letters.name)
        names.append(self.job_run_dead_letters.name)
        return names + [
            self.retry_queue(d, priority).name
            for d in self.retry_delays_ms
            for priority in (False, True)
        ]

    def work_queue(self, service: str, purpose: str, routing_key: str) -> RabbitQueue:
        """A durable quorum queue whose rejected or over-delivered messages go to its DLQ.

        Its delivery limit is a policy (`broker_policy`), not an argument, so it can change.
        `declare=False`: `declare_topology` declares and binds it, a subscriber only checks
        that it exists (a queue of an older version, declared with `x-delivery-limit`, would
        refuse a declaration without it)."""
        name = f"{self.prefix}.{service}.{purpose}"
        arguments: Any = {
            "x-dead-letter-exchange": self.dead_letters.name,
            "x-dead-letter-routing-key": name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=routing_key,
            arguments=arguments,
            declare=False,
        )

    @staticmethod
    def dead_letter_queue(work_queue: RabbitQueue) -> RabbitQueue:
        return RabbitQueue(
            f"{work_queue.name}.dlq",
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=work_queue.name,
        )

    def retry_queue(self, delay_ms: int, priority: bool = False) -> RabbitQueue:
        """A back-off tier; the priority lane's tiers send their messages back to it."""
        lane = "priority-retry" if priority else "retry"
        return RabbitQueue(
            f"{self.prefix}.outbound.{lane}.{delay_ms}ms",
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=self.retry_routing_key(delay_ms, priority),
            arguments={
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": self.work.name,
                "x-dead-letter-routing-key": PRIORITY_ROUTING_KEY if priority else "outbound.batch",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )

    @staticmethod
    def retry_routing_key(delay_ms: int, priority: bool = False) -> str:
        return f"{'priority-retry' if priority else 'retry'}.{delay_ms}"

    def retry_tier(self, attempt: int) -> int | None:
        """The delay (ms) before try number `attempt + 1`, or None once the tiers run out."""
        if attempt >= len(self.retry_delays_ms):
            return None
        return self.retry_delays_ms[attempt]


async def raw_body(message: StreamMessage[Any]) -> bytes:
    """The decoder of every subscriber: the body as it came, decoded by our own code.

    FastStream's default decoder parses an application/json body before the handler runs;
    when that fails nothing can settle the message (manual acks), and a prefetch-full of
    them stops the consumer for good. `intake.take` parses and dead-letters instead."""
    return message.body


def make_broker(settings: Settings, connect_timeout: float | None = None) -> RabbitBroker:
    return RabbitBroker(
        settings.rabbitmq_url,
        timeout=connect_timeout,
        # every subscriber of this broker gets the raw bytes (see raw_body)
        decoder=raw_body,
        # publisher confirms are on by default; an unroutable message is an error, not silence
        default_channel=Channel(
            publisher_confirms=True, on_return_raises=True, prefetch_count=settings.prefetch
        ),
        graceful_timeout=settings.graceful_timeout_seconds,
        logger=None,
        # faststream_received_messages_total, _processing_time_seconds, _published_... per queue
        middlewares=[RabbitPrometheusMiddleware(registry=REGISTRY, app_name="mailroom")],
    )


async def declare_topology(broker: RabbitBroker, topology: Topology) -> None:
    """Declare every exchange, work queue (with its DLQ and bindings) and retry tier.

    On a channel of its own, not through the broker's declarer: the declarer remembers each
    queue with the channel it was first declared on, and a subscriber would then consume
    on that channel instead of its own, without its own prefetch."""
    connection = await broker.connect()
    async with connection.channel() as channel:
        exchanges = {
            e.name: await channel.declare_exchange(
                e.name, type=e.type.value, durable=e.durable, auto_delete=e.auto_delete
            )
            for e in topology.exchanges()
        }

        async def queue(q: RabbitQueue, exchange: str, routing_key: str | None) -> None:
            nonlocal channel
            try:
                declared = await channel.declare_queue(
                    q.name,
                    durable=q.durable,
                    exclusive=q.exclusive,
                    auto_delete=q.auto_delete,
                    arguments=q.arguments,
                )
            except ChannelPreconditionFailed as error:
                if "x-delivery-limit" not in str(error):
                    raise
                # the error closed the channel; the queue exists: take it as it is
                channel = await connection.channel()
                declared = await channel.declare_queue(q.name, passive=True)
                log.warning(
                    "queue %s was declared by an older Mailroom with the argument"
                    " x-delivery-limit; it is used as it is, but RabbitMQ applies the lower of"
                    " that argument and MAILROOM_DELIVERY_LIMIT (policy %s.delivery-limit):"
                    " delete the queue once it is empty and the next start declares it"
                    " without the argument",
                    q.name,
                    topology.prefix,
                )
            await declared.bind(exchanges[exchange], routing_key=routing_key)

        dlx = topology.dead_letters.name
        done: set[str] = set()
        for work_queue, exchange, routing_key in topology.bindings():
            await queue(work_queue, exchange.name, routing_key)
            if work_queue.name not in done:
                dlq = topology.dead_letter_queue(work_queue)
                await queue(dlq, dlx, dlq.routing_key)
                done.add(work_queue.name)
        settings_dlq = topology.settings_dead_letters
        await queue(settings_dlq, dlx, settings_dlq.routing_key)
        job_run_dlq = topology.job_run_dead_letters
        await queue(job_run_dlq, dlx, job_run_dlq.routing_key)
        for delay in topology.retry_delays_ms:
            for priority in (False, True):
                retry = topology.retry_queue(delay, priority)
                await queue(retry, topology.work.name, retry.routing_key)


async def publish_event(
    broker: RabbitBroker,
    exchange: RabbitExchange,
    event: Event,
    *,
    routing_key: str | None = None,
    mandatory: bool = True,
) -> None:
    """Publish persistently; returns once the broker confirmed it.

    With `mandatory` an unroutable message raises; events are broadcasts, published with
    mandatory=False, since having no listener is not an error.
    """
    await broker.publish(
        event_json(event),
        exchange=exchange,
        routing_key=routing_key or event.routing_key,
        persist=True,
        content_type=JSON,
        message_type=event.routing_key,
        mandatory=mandatory,
        timestamp=datetime.now(UTC),  # its age when consumed: mailroom_queue_message_age_seconds
    )
