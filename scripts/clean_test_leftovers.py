"""Removes the queues, exchanges and delivery-limit policies of test runs that were killed
before their teardown.

A test run's broker names start with `t<tag>.` and its database is `mailroom_test_<tag>`;
a run whose database is gone has ended, so its queues (when nobody consumes them) and
exchanges go. Hundreds of leftover quorum queues make every RabbitMQ restart slow (and
ran the broker out of file handles once). Run by .ci/run before the tests.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess

import aio_pika
import asyncpg

POSTGRES = os.environ.get("MAILROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
RABBITMQ = os.environ.get("MAILROOM_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
TEST_NAME = re.compile(r"^t([0-9a-f]{10})\.")


def _listed(*command: str) -> list[list[str]]:
    output = subprocess.run(
        ["rabbitmqctl", "-q", *command, "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [line.split("\t") for line in output.splitlines() if line.strip()]


def _clear_policy(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "clear_policy", name], timeout=60, check=True)


async def main() -> None:
    connection = await asyncpg.connect(f"{POSTGRES}/postgres")
    try:
        databases = {
            r["datname"] for r in await connection.fetch("SELECT datname FROM pg_database")
        }
    finally:
        await connection.close()

    def ended(name: str) -> bool:
        match = TEST_NAME.match(name)
        return match is not None and f"mailroom_test_{match.group(1)}" not in databases

    queues = [
        q
        for q, consumers in _listed("list_queues", "name", "consumers")
        if ended(q) and consumers == "0"
    ]
    exchanges = [row[0] for row in _listed("list_exchanges", "name") if ended(row[0])]
    policies = [row[1] for row in _listed("list_policies") if len(row) > 1 and ended(row[1])]
    for policy in policies:
        _clear_policy(policy)
    broker = await aio_pika.connect(RABBITMQ)
    async with broker:
        channel = await broker.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    print(
        f"removed {len(queues)} queues, {len(exchanges)} exchanges and {len(policies)} policies"
        " of ended test runs"
    )


if __name__ == "__main__":
    asyncio.run(main())
