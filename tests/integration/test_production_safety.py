"""Production safety: migrations only where asked, a missing database or an older schema
refused in one line, and the delivery limit as a RabbitMQ policy (changing it between two
starts works, queues an older version declared with the argument keep starting, and a
management API that is down, silent or misconfigured never stops a start: one warning, the
gauge at 0, the policy put in the background once the API answers; `mailroom migrate` is
where a wrong MAILROOM_RABBITMQ_MANAGEMENT_URL fails)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import Awaitable, Iterator

import aio_pika
import httpx
import pytest
from mailroom_common.broker import Topology
from mailroom_common.broker_policy import ManagementApi, delivery_limit_policy_name
from mailroom_common.db import ensure_database
from mailroom_common.migrate import migration_files

from tests.support.cli import run_mailroom
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.ports import free_port
from tests.support.tcp_proxy import TcpProxy

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
        # the deployment's explicit step puts the delivery-limit policy too
        assert await _policy(install) is not None
        assert "delivery-limit policy" in created.stdout
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


async def _publish_probe(channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
    """A message no Mailroom consumer can read, straight into `queue`."""
    await channel.default_exchange.publish(
        aio_pika.Message(b'{"probe": true}', message_id="probe"), routing_key=queue
    )


async def _deliveries_until_dead_lettered(install: Installation) -> int:
    """Publish to the message processor's queue (not running here) and reject the message
    with requeue until the broker dead-letters it; return how often it was delivered."""
    name = Topology.from_settings(install.settings).item_pages.name
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await _publish_probe(channel, name)
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
        second = install.start_services("completion", log_name="limit-5")  # no PRECONDITION_FAILED
        await wait_for(
            lambda: _is(_effective_limit(install), 5), 20, "the policy to say 5", interval=0.5
        )
        assert await _deliveries_until_dead_lettered(install) == 5 + 1
        policy = await _policy(install)
        assert policy is not None
        print("\npolicy:", json.dumps(policy))
        assert _policy_gauge(second) == 1
        assert "cannot put the delivery-limit policy" not in install.log_text()
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


# --- the management API down, silent or misconfigured: the start goes on ---------------------


def _right_address(install: Installation) -> Installation:
    """`install`, its own settings asking the management API at the right address (the
    teardown removes its policy there)."""
    install.settings = install.settings.model_copy(update={"rabbitmq_management_url": None})
    return install


async def _policy(install: Installation) -> dict[str, object] | None:
    """The installation's policy as the broker has it (asked at the right address)."""
    settings = install.settings.model_copy(update={"rabbitmq_management_url": None})
    return await ManagementApi.from_settings(settings).get_policy(
        delivery_limit_policy_name(Topology.from_settings(settings))
    )


def _policy_gauge(process: subprocess.Popen[bytes]) -> float:
    text = httpx.get(Installation.metrics_url(process), timeout=5).text
    found = re.search(r"^mailroom_delivery_limit_policy_applied (\S+)$", text, re.MULTILINE)
    assert found is not None, "no mailroom_delivery_limit_policy_applied in /metrics"
    return float(found.group(1))


async def _gauge_is(process: subprocess.Popen[bytes], expected: float) -> bool:
    return await asyncio.to_thread(_policy_gauge, process) == expected


async def _consumes(install: Installation) -> None:
    """The message processor takes an unreadable page from its queue: intake dead-letters it
    at once, with its reason."""
    name = Topology.from_settings(install.settings).item_pages.name
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await _publish_probe(channel, name)

        async def dead_lettered() -> bool:
            dead = await channel.declare_queue(f"{name}.dlq", passive=True)
            return dead.declaration_result.message_count == 1

        await wait_for(dead_lettered, 20, "the probe to be consumed and dead-lettered")


@pytest.fixture(params=["nobody-listens", "never-answers"])
def silent_management_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback port where the management API does not answer: nothing listens there, or
    something takes connections (the kernel's backlog) and never says a word."""
    if request.param == "nobody-listens":
        yield free_port()
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield silent.getsockname()[1]


async def test_a_management_api_that_does_not_answer_never_stops_the_start(
    silent_management_port: int,
) -> None:
    secret = "n0t-in-the-logs"
    install = Installation(
        rabbitmq_management_url=f"http://guest:{secret}@127.0.0.1:{silent_management_port}"
    )
    await install.setup()
    try:
        begun = time.monotonic()
        process = install.start_services("message_processor", log_name="no-management")
        started_in = time.monotonic() - begun  # ready: /readyz answered 200
        await _consumes(install)
        assert _policy_gauge(process) == 0
        log = install.log_text()
        warnings = [line for line in log.splitlines() if "cannot put the delivery-limit" in line]
        assert len(warnings) == 1, log
        assert "MAILROOM_RABBITMQ_MANAGEMENT_URL" in warnings[0]
        assert f"127.0.0.1:{silent_management_port}" in warnings[0]
        assert secret not in log
        assert await _policy(install) is None
        begun = time.monotonic()
        assert Installation.terminate(process) == 0  # the retries end with the stop
        stopped_in = time.monotonic() - begun
        print(f"\nstarted in {started_in:.1f} s, stopped in {stopped_in:.1f} s; {warnings[0]}")
        assert stopped_in < 10
    finally:
        await _right_address(install).teardown()


async def test_the_policy_is_put_once_the_management_api_comes_back() -> None:
    """The broker's management API is down while the process starts (a proxy that does not
    listen yet), then comes back: the background retries put the policy, the gauge says 1."""
    proxy = TcpProxy(15672)
    install = Installation(rabbitmq_management_url=f"http://127.0.0.1:{proxy.port}")
    await install.setup()
    try:
        process = install.start_services("message_processor", log_name="management-back")
        assert _policy_gauge(process) == 0
        await proxy.start()
        await wait_for(lambda: _gauge_is(process, 1), 40, "the policy to be put", interval=0.5)
        policy = await _policy(install)
        assert policy is not None
        assert policy["definition"] == {"delivery-limit": install.settings.delivery_limit}
        assert re.search(r"put the delivery-limit policy \S+ \(attempt \d+\)", install.log_text())
        assert Installation.terminate(process) == 0
    finally:
        await proxy.cut()
        await _right_address(install).teardown()


async def test_migrate_fails_on_a_management_url_that_does_not_answer() -> None:
    """The deployment's one explicit step shows the wrong setting: migrations applied, the
    policy not, exit code 2 with the setting named (and no password)."""
    secret = "n0t-in-the-output"
    install = Installation(
        rabbitmq_management_url=f"http://guest:{secret}@127.0.0.1:{free_port()}",
        broker_wait_seconds=2,
    )
    try:
        begun = time.monotonic()
        failed = await run_mailroom(install.env, "migrate", "--create-database")
        assert time.monotonic() - begun < 30
        assert failed.returncode == 2, failed.stdout + failed.stderr
        assert "applied" in failed.stdout
        message = " ".join(failed.stderr.split())
        assert "cannot put the delivery-limit policy" in message
        assert "MAILROOM_RABBITMQ_MANAGEMENT_URL" in message
        assert secret not in failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr
        again = await run_mailroom(install.env, "migrate")  # the schema is current all the same
        assert "none pending" in again.stdout
        skipped = await run_mailroom(install.env, "migrate", "--skip-broker-policy")
        assert skipped.returncode == 0, skipped.stderr
        assert await _policy(install) is None
    finally:
        await _right_address(install).teardown()
