"""Production safety: migrations only where asked, a missing database or an older schema
refused in one line, and the delivery limit as a RabbitMQ policy (changing it between two
starts works, and queues an older version declared with the argument keep starting)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import aio_pika
import pytest
from mailroom_common.broker import Topology
from mailroom_common.broker_policy import ManagementApi, delivery_limit_policy_name
from mailroom_common.db import ensure_database
from mailroom_common.migrate import migration_files

from tests.support.cli import run_mailroom
from tests.support.environment import RABBITMQ_URL, Installation, wait_for

pytestmark = pytest.mark.integration


# --- migrations ---------------------------------------------------------------------------


async def test_migrate_creates_the_database_only_when_asked() -> None:
    install = Installation()
    try:
        refused = await run_mailroom(install.env, "migrate")
        assert refused.returncode == 2
        message = " ".join(refused.stderr.split())
        assert f"database '{install.database}' does not exist (MAILROOM_DATABASE_URL)" in message
        assert "Traceback" not in refused.stderr

        # any other command says the same, and creates nothing
        status = await run_mailroom(install.env, "campaign", "status", "1")
        assert status.returncode == 2 and "MAILROOM_DATABASE_URL" in status.stderr
        assert len(status.stderr.strip().splitlines()) <= 2, status.stderr

        created = await run_mailroom(install.env, "migrate", "--create-database")
        assert created.returncode == 0, created.stderr
        assert "applied" in created.stdout and "none pending" not in created.stdout
        again = await run_mailroom(install.env, "migrate")
        assert again.returncode == 0 and "none pending" in again.stdout
    finally:
        await install.teardown()


async def test_a_service_does_not_start_on_a_missing_database() -> None:
    install = Installation()
    try:
        with pytest.raises(RuntimeError, match="exited early") as refused:
            install.start_services("completion", log_name="no-database")
        assert "refusing to start: database" in str(refused.value)
        assert "MAILROOM_DATABASE_URL" in str(refused.value)
        assert "Traceback" not in install.log_text()
    finally:
        await install.teardown()


async def test_a_service_refuses_an_older_schema_unless_told_to_migrate() -> None:
    install = Installation()
    pool = await install.setup()
    try:
        latest = await pool.fetchval("SELECT max(version) FROM schema_migrations")
        await pool.execute("DELETE FROM schema_migrations WHERE version = $1", latest)
        with pytest.raises(RuntimeError, match="exited early") as refused:
            install.start_services("completion", log_name="old-schema")
        assert f"1 migration(s) not applied: {latest}" in str(refused.value)
        assert "run `mailroom migrate` first" in str(refused.value)
    finally:
        await install.teardown()


async def test_migrate_on_start_when_asked() -> None:
    install = Installation(migrate_on_start="true")
    await ensure_database(install.settings.database_url)  # empty: no table at all
    try:
        install.start_services("completion", log_name="migrate-on-start")
        pool = await install.setup()  # nothing left to apply
        applied = await pool.fetchval("SELECT count(*) FROM schema_migrations")
        assert applied == len(migration_files())
        assert "applied migration" in install.log_text()
    finally:
        await install.teardown()


# --- the delivery limit, a policy ------------------------------------------------------------


async def _effective_limit(install: Installation) -> object:
    api = ManagementApi.from_settings(install.settings)
    queue = await api.queue(Topology.from_settings(install.settings).item_pages.name)
    definition = queue.get("effective_policy_definition") or {}
    assert isinstance(definition, dict)
    return definition.get("delivery-limit")


async def _deliveries_until_dead_lettered(install: Installation) -> int:
    """Publish to the message processor's queue (not running here) and reject the message
    with requeue until the broker dead-letters it; return how often it was delivered."""
    name = Topology.from_settings(install.settings).item_pages.name
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"probe": true}', message_id="probe"), routing_key=name
        )
        queue = await channel.declare_queue(name, passive=True)
        deliveries = 0
        for _ in range(400):
            message = await queue.get(no_ack=False, fail=False)
            if message is not None:
                deliveries += 1
                await message.reject(requeue=True)
                continue
            dead = await channel.declare_queue(f"{name}.dlq", passive=True)
            if dead.declaration_result.message_count:
                await dead.purge()
                return deliveries
            await asyncio.sleep(0.05)
    raise AssertionError(f"not dead-lettered after {deliveries} deliveries")


async def test_changing_the_delivery_limit_between_two_starts() -> None:
    install = Installation(delivery_limit=3)
    await install.setup()
    try:
        first = install.start_services("completion", log_name="limit-3")
        await wait_for(
            lambda: _is(_effective_limit(install), 3), 20, "the policy to say 3", interval=0.5
        )
        # RabbitMQ dead-letters a message returned more than `delivery-limit` times: the
        # first delivery and `limit` redeliveries (intake gives up at `limit` deliveries)
        assert await _deliveries_until_dead_lettered(install) == 3 + 1
        assert Installation.terminate(first) == 0

        install.env["MAILROOM_DELIVERY_LIMIT"] = "5"
        install.start_services("completion", log_name="limit-5")  # no PRECONDITION_FAILED
        await wait_for(
            lambda: _is(_effective_limit(install), 5), 20, "the policy to say 5", interval=0.5
        )
        assert await _deliveries_until_dead_lettered(install) == 5 + 1
        policy = await ManagementApi.from_settings(install.settings).get_policy(
            delivery_limit_policy_name(Topology.from_settings(install.settings))
        )
        assert policy is not None
        print("\npolicy:", json.dumps(policy))
    finally:
        await install.teardown()


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_queues_declared_with_the_old_argument_keep_starting() -> None:
    install = Installation(delivery_limit=4)
    await install.setup()
    topology = Topology.from_settings(install.settings)
    old = topology.item_pages
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            old.name,
            durable=True,
            arguments={**(old.arguments or {}), "x-delivery-limit": 2},
        )
    try:
        install.start_services("message_processor", log_name="old-queue")
        log = install.log_text()
        assert f"queue {old.name} was declared by an older Mailroom" in log
        assert "delete the queue once it is empty" in log
    finally:
        await install.teardown()
