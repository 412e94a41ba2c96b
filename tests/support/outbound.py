"""The outbound sender in the test's process, against the real PostgreSQL, RabbitMQ and an
SMTP server: items written as the generator would, batches handed over as the broker would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
from faststream.rabbit import RabbitBroker
from mailroom_common.broker import Topology, declare_topology, make_broker
from mailroom_common.db import create_pool
from mailroom_common.events import DeliveryResults, ItemKind, OutboundBatch, OutboundEmail
from mailroom_common.runtime import Runtime
from mailroom_outbound_sender.sender import OutboundSender

from tests.support.environment import RABBITMQ_URL, Installation
from tests.support.seed import add_contacts, use_smtp_server

FROM = "bounces+1-abc@bounces.mailroom.test"


def message_to(recipient: str, *, to: str | None = None, subject: str = "Hello") -> str:
    return (
        "From: News <news@mailroom.test>\r\n"
        f"To: {to if to is not None else recipient}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}.{recipient}@mailroom.test>\r\n"
        "\r\n"
        f"Hello {recipient}\r\n"
    )


def outbound_email(item_id: int, recipient: str, *, to: str | None = None) -> OutboundEmail:
    return OutboundEmail(
        item_id=item_id,
        recipient=recipient,
        envelope_from=FROM,
        message=message_to(recipient, to=to),
    )


@dataclass
class SenderBench:
    install: Installation
    pool: asyncpg.Pool
    broker: RabbitBroker
    runtime: Runtime
    sender: OutboundSender
    campaign_id: int
    results_queue: aio_pika.abc.AbstractQueue
    topology: Topology
    _next: list[int] = field(default_factory=lambda: [0])

    async def items(self, emails: list[str], status: str = "queued") -> list[int]:
        """Contacts and their campaign items, in the campaign's list."""
        async with self.pool.acquire() as conn:
            list_id = await conn.fetchval("SELECT id FROM lists WHERE name = 'bench'")
            await add_contacts(conn, [(e, "First", "Last") for e in emails], list_id)
            rows = await conn.fetch(
                "INSERT INTO campaign_items (campaign_id, contact_id, email, status)"
                " SELECT $1, c.id, c.email, $3 FROM contacts c WHERE c.email = ANY($2)"
                " RETURNING id, email",
                self.campaign_id,
                emails,
                status,
            )
        by_email = {r["email"]: r["id"] for r in rows}
        return [by_email[e] for e in emails]

    def batch(self, emails: list[OutboundEmail], kind: ItemKind = "campaign") -> OutboundBatch:
        campaign = self.campaign_id if kind == "campaign" else None
        return OutboundBatch(kind=kind, campaign_id=campaign, emails=emails)

    async def rows(self, item_ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, status, attempts, smtp_code, smtp_reply, error FROM campaign_items"
            " WHERE id = ANY($1)",
            item_ids,
        )
        return {r["id"]: dict(r) for r in rows}

    async def published_results(self) -> list[DeliveryResults]:
        found = []
        while (message := await self.results_queue.get(fail=False, no_ack=True)) is not None:
            found.append(DeliveryResults.model_validate(json.loads(message.body)))
        return found

    async def retry_messages(self) -> list[OutboundBatch]:
        """What waits in the back-off tiers (taken off them)."""
        found = []
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            for delay in self.topology.retry_delays_ms:
                queue = await channel.get_queue(self.topology.retry_queue(delay).name)
                while (message := await queue.get(fail=False, no_ack=True)) is not None:
                    found.append(OutboundBatch.model_validate(json.loads(message.body)))
        return found


@asynccontextmanager
async def sender_bench(
    install: Installation,
    smtp_port: int,
    *,
    database_url: str | None = None,
    rabbitmq_url: str | None = None,
    **smtp_changes: object,
) -> AsyncIterator[SenderBench]:
    """An OutboundSender for a campaign that is sending, its SMTP account at `smtp_port`;
    the sender reaches PostgreSQL and RabbitMQ at the URLs given (e.g. through a proxy)."""
    pool = install.pool
    assert pool is not None
    settings = install.settings.model_copy(
        update={
            "database_url": database_url or install.settings.database_url,
            "rabbitmq_url": rabbitmq_url or install.settings.rabbitmq_url,
        }
    )
    await use_smtp_server(pool, smtp_port, **smtp_changes)
    await pool.execute("INSERT INTO lists (name) VALUES ('bench')")
    campaign_id = await pool.fetchval(
        "INSERT INTO campaigns (name, subject, from_email, html_template, status)"
        " VALUES ('bench', 'Hello', 'news@mailroom.test', '<p>hi</p>', 'sending') RETURNING id"
    )
    broker = make_broker(settings)
    await broker.connect()
    topology = Topology.from_settings(settings)
    await declare_topology(broker, topology)
    sender_pool = await create_pool(settings) if database_url else pool
    runtime = Runtime.build(settings, sender_pool, broker)
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        results = await channel.declare_queue(exclusive=True)
        await results.bind(topology.events.name, routing_key="delivery.results")
        sender = OutboundSender(runtime)
        await sender.start()
        try:
            yield SenderBench(
                install, pool, broker, runtime, sender, campaign_id, results, topology
            )
        finally:
            await sender.stop()
    finally:
        await connection.close()
        await broker.stop()
        if sender_pool is not pool:
            await sender_pool.close()
