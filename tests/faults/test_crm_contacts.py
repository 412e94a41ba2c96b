"""The fault matrix, the CRM's contacts: RabbitMQ or PostgreSQL restarted while the
subscriptions service takes 50 batches of 1,000 contact.upserted. Every contact exists once,
every new membership is announced once (one welcome autoresponder item each), nothing is
dead-lettered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aio_pika
import pytest
from mailroom_common.broker import Topology

from tests.support.autoresponders import make_autoresponder, make_list
from tests.support.crm import crm
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.scenario import pool_of
from tests.support.server_restarts import Outage, restart_postgresql, restart_rabbitmq

BATCHES = 50
BATCH = 1_000
CONTACTS = BATCHES * BATCH

RESTARTS: dict[str, Callable[[], Awaitable[Outage]]] = {
    "rabbitmq": lambda: restart_rabbitmq(down_seconds=5),
    "postgresql": restart_postgresql,
}


def _batch(number: int) -> dict[str, object]:
    return {
        "correlation_id": f"batch-{number}",
        "contacts": [
            {
                "crm_id": f"crm-{number}-{i}",
                "email": f"person{number:03d}x{i:04d}@example.com",
                "first_name": f"P{i}",
                "lists": {"news": "subscribed"},
            }
            for i in range(BATCH)
        ],
    }


@pytest.mark.parametrize("server", sorted(RESTARTS))
async def test_contacts_upserted_while_a_server_restarts(
    install: Installation, server: str
) -> None:
    pool = pool_of(install)
    await make_list(pool, "news")
    # far in the future: each new membership makes one item, nothing is sent
    autoresponder = await make_autoresponder(
        install, "Welcome", list_name="news", delay_seconds=86_400
    )
    install.start_services("subscriptions", "autoresponder", log_name="crm-faults")
    async with crm(install) as client:  # every batch queued (durable) before the fault
        for number in range(BATCHES):
            await client.publish("contact.upserted", _batch(number))

    async def some_taken() -> bool:
        return bool(await pool.fetchval("SELECT count(*) >= $1 FROM contacts", CONTACTS // 5))

    await wait_for(some_taken, 120, "a fifth of the contacts")
    outage = await RESTARTS[server]()
    taken_at_restart = await pool.fetchval("SELECT count(*) FROM contacts")

    async def all_taken() -> bool:
        counts = await pool.fetchrow(
            "SELECT (SELECT count(*) FROM contacts WHERE crm_id IS NOT NULL),"
            " (SELECT count(*) FROM autoresponder_items WHERE autoresponder_id = $1)",
            autoresponder,
        )
        assert counts is not None
        return bool(counts[0] == CONTACTS and counts[1] == CONTACTS)

    await wait_for(all_taken, 300, "every contact and its welcome item", interval=1)
    print(
        f"\n{server} restart ({outage.seconds:.1f} s) with {taken_at_restart} of {CONTACTS}"
        " contacts taken: all taken after it"
    )
    assert taken_at_restart < CONTACTS, "every batch was taken before the restart"
    assert await pool.fetchval("SELECT count(*) = count(DISTINCT lower(email)) FROM contacts"), (
        "a contact made twice"
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM list_memberships m JOIN lists l ON l.id = m.list_id"
            " WHERE l.name = 'news' AND m.status = 'subscribed'"
        )
        == CONTACTS
    )
    assert await pool.fetchval(
        "SELECT count(*) = count(DISTINCT contact_id) FROM autoresponder_items"
        " WHERE autoresponder_id = $1",
        autoresponder,
    ), "a membership announced into two items"
    assert await pool.fetchval("SELECT count(*) FROM contact_announcements") == 0
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        dead_letters = f"{Topology.from_settings(install.settings).crm_contacts.name}.dlq"
        dead = await channel.declare_queue(dead_letters, passive=True)
        assert dead.declaration_result.message_count == 0, "a batch was dead-lettered"
