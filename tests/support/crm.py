"""The CRM's side in tests: contact events published as the CRM would, answers heard, and
the scan of every column of the database for what must be gone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
from mailroom_common.broker import Topology

from tests.support.environment import RABBITMQ_URL, Installation, wait_for

ANSWERS = ("contact.upserted.done", "contact.erased.done")


class Crm:
    """Publishes to the events exchange; hears the answers on a queue of its own."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, topology: Topology) -> None:
        self.channel = channel
        self.topology = topology
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def start(self) -> None:
        self._exchange = await self.channel.get_exchange(self.topology.events.name)
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        for key in ANSWERS:
            await queue.bind(self._exchange, routing_key=key)

        async def heard(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.answers.append((message.routing_key or "", json.loads(message.body)))

        await queue.consume(heard)

    async def publish(self, routing_key: str, body: dict[str, Any] | bytes) -> None:
        assert self._exchange is not None
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self._exchange.publish(
            aio_pika.Message(
                data,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )

    async def answer(self, kind: str, correlation_id: str, limit: float = 60) -> dict[str, Any]:
        """The answer of that kind with that correlation id (the first one heard)."""
        found: list[dict[str, Any]] = []

        async def heard() -> bool:
            found[:] = [
                a for k, a in self.answers if k == kind and a["correlation_id"] == correlation_id
            ]
            return bool(found)

        await wait_for(heard, limit, f"{kind} for {correlation_id}")
        return found[0]

    async def dead_letters(
        self, expected: int, limit: float = 30
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        queue = await self.channel.get_queue(f"{self.topology.crm_contacts.name}.dlq")
        found: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def collect() -> bool:
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                found.append(message)
            return len(found) >= expected

        await wait_for(collect, limit, f"{expected} dead letters", interval=0.05)
        await asyncio.sleep(0.5)  # and no more than that
        extra = await queue.get(fail=False)
        assert extra is None, f"one dead letter more: {extra.headers if extra else None}"
        return found


@asynccontextmanager
async def crm(install: Installation) -> AsyncIterator[Crm]:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        client = Crm(channel, Topology.from_settings(install.settings))
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
