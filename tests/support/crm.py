"""The CRM's side in tests: commands and contact events published as the CRM would, the
answers and the contact.activity timeline heard on a queue of its own, and the scan of every
column of the database for what must be gone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from mailroom_common.broker import Topology
from mailroom_common.events import Activity, ContactActivity

from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.seed import HTML, TEXT

ANSWERS = ("campaign.created", "contact.upserted.done", "contact.erased.done")


def json_message(body: dict[str, Any] | bytes, **properties: Any) -> aio_pika.Message:
    """A message as the CRM publishes one: JSON (or the bytes given), persistent."""
    return aio_pika.Message(
        body if isinstance(body, bytes) else json.dumps(body).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **properties,
    )


def campaign_create(**changes: Any) -> dict[str, Any]:
    """A campaign.create's body (a draft for the list "readers"), with `changes`."""
    return {
        "name": "Spring",
        "subject": "Hi {{ contact.first_name }}",
        "from_email": "news@mailroom.test",
        "from_name": "Mailroom News",
        "html_template": HTML,
        "text_template": TEXT,
        "lists": ["readers"],
        **changes,
    }


async def take(
    queue: AbstractQueue, count: int, limit: float = 60, quiet: float = 0.0
) -> list[AbstractIncomingMessage]:
    """`count` messages taken (acknowledged) from `queue`, and then none more, `quiet`
    seconds later."""
    found: list[AbstractIncomingMessage] = []

    async def enough() -> bool:
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            found.append(message)
        return len(found) >= count

    await wait_for(enough, limit, f"{count} messages in {queue.name}", interval=0.02)
    await asyncio.sleep(quiet)
    extra = await queue.get(fail=False)
    assert extra is None, f"one message more in {queue.name}: {extra.headers if extra else None}"
    return found


class Timeline:
    """contact.activity as the CRM hears it, every entry in the order heard."""

    def __init__(self) -> None:
        self.messages: list[ContactActivity] = []

    def add(self, body: bytes) -> None:
        self.messages.append(ContactActivity.model_validate_json(body))

    def entries(self, kind: str | None = None, campaign_id: int | None = None) -> list[Activity]:
        return [
            a
            for m in self.messages
            for a in m.activities
            if kind in (None, a.kind) and campaign_id in (None, a.campaign_id)
        ]

    async def until(
        self, kind: str | None, count: int, limit: float = 60, campaign_id: int | None = None
    ) -> list[Activity]:
        """The entries of that kind (any: None) and campaign, once there are `count` or more."""

        async def enough() -> bool:
            return len(self.entries(kind, campaign_id)) >= count

        await wait_for(enough, limit, f"{count} {kind or 'any'} activities")
        return self.entries(kind, campaign_id)


class Crm:
    """Publishes commands (commands exchange) and contact events (events exchange); hears
    the answers, contact.activity and the routing keys `also` on a queue of its own (Mailroom
    declares none for it)."""

    def __init__(
        self, channel: aio_pika.abc.AbstractChannel, topology: Topology, also: tuple[str, ...] = ()
    ) -> None:
        self.channel = channel
        self.topology = topology
        self.also = also
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.timeline = Timeline()
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    async def start(self) -> None:
        # declared as Mailroom declares them: a CRM may start before Mailroom's services
        for exchange in (self.topology.events, self.topology.commands):
            self._exchanges[exchange.name] = await self.channel.declare_exchange(
                exchange.name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        for key in (*ANSWERS, ContactActivity.routing_key, *self.also):
            await queue.bind(self.topology.events.name, routing_key=key)

        async def heard(message: AbstractIncomingMessage) -> None:
            async with message.process():
                if message.routing_key == ContactActivity.routing_key:
                    self.timeline.add(message.body)
                else:
                    self.answers.append((message.routing_key or "", json.loads(message.body)))

        await queue.consume(heard)

    async def publish(self, routing_key: str, body: dict[str, Any] | bytes) -> None:
        """A contact event, on the events exchange."""
        exchange = self._exchanges[self.topology.events.name]
        await exchange.publish(json_message(body), routing_key=routing_key)

    async def command(self, routing_key: str, body: dict[str, Any]) -> None:
        """A command (campaign.create, .launch, ...), on the commands exchange."""
        exchange = self._exchanges[self.topology.commands.name]
        await exchange.publish(json_message(body), routing_key=routing_key, mandatory=True)

    def heard(self, kind: str) -> list[dict[str, Any]]:
        return [a for k, a in self.answers if k == kind]

    async def answer(self, kind: str, correlation_id: str, limit: float = 60) -> dict[str, Any]:
        """The answer of that kind with that correlation id (the first one heard)."""
        found: list[dict[str, Any]] = []

        async def heard() -> bool:
            found[:] = [a for a in self.heard(kind) if a["correlation_id"] == correlation_id]
            return bool(found)

        await wait_for(heard, limit, f"{kind} for {correlation_id}")
        return found[0]

    async def dead_letters(self, expected: int, limit: float = 30) -> list[AbstractIncomingMessage]:
        """The contact events dead-lettered: `expected` of them, and no more."""
        queue = await self.channel.get_queue(f"{self.topology.crm_contacts.name}.dlq")
        return await take(queue, expected, limit, quiet=0.5)


@asynccontextmanager
async def crm(install: Installation, *also: str) -> AsyncIterator[Crm]:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        client = Crm(channel, Topology.from_settings(install.settings), also)
        await client.start()
        yield client


# every column that can hold text: text, varchar, char, jsonb/json, bytea, and arrays of text
SCANNED_TYPES = ("text", "character varying", "character", "jsonb", "json", "bytea", "ARRAY")


async def columns_holding(pool: asyncpg.Pool, needles: list[str]) -> dict[str, int]:
    """Every (table.column) of the database holding any of `needles` (case-insensitive), with
    how many rows do. Every column whose type can hold text is read, so a table or column
    added later is scanned too."""
    lowered = [n.lower() for n in needles]
    columns = await pool.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
        " AND c.data_type = ANY($1::text[]) ORDER BY 1, 2",
        list(SCANNED_TYPES),
    )
    assert columns, "no column to scan"
    found: dict[str, int] = {}
    for column in columns:
        name = f'"{column["table_name"]}"."{column["column_name"]}"'
        value = f"encode({name}, 'escape')" if column["data_type"] == "bytea" else f"{name}::text"
        rows = await pool.fetchval(
            f'SELECT count(*) FROM "{column["table_name"]}" WHERE EXISTS'
            f" (SELECT 1 FROM unnest($1::text[]) AS n WHERE strpos(lower({value}), n) > 0)",
            lowered,
        )
        if rows:
            found[f"{column['table_name']}.{column['column_name']}"] = rows
    return found
