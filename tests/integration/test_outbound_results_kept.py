"""Results the sender knows are never thrown away: a redelivered batch resends nothing that
was recorded, a consumer cancelled by a broker outage still finishes its batch, and a
database or broker outage after the SMTP send is waited out (each outage is a proxy cut
between this sender and the real server, so nobody else's tests see it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.environment import RABBITMQ_URL, Installation
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.outbound import outbound_email, sender_bench
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 2.0


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def faulty_smtp() -> AsyncIterator[FaultySmtpServer]:
    with FaultySmtpServer() as server:
        yield server


async def stalled(server: FaultySmtpServer) -> None:
    assert await asyncio.to_thread(server.handler.stalled.wait, 10)


async def test_a_redelivered_batch_resends_only_what_was_in_flight(
    installation: Installation, faulty_smtp: FaultySmtpServer
) -> None:
    async with sender_bench(installation, faulty_smtp.port) as bench:
        done, lost, waiting = await bench.items(
            ["done@example.test", "lost@example.test", "waiting@example.test"]
        )
        await bench.pool.execute("UPDATE campaign_items SET status = 'sending' WHERE id = $1", done)
        await bench.pool.execute("UPDATE campaign_items SET status = 'sent' WHERE id = $1", done)
        # claimed by a sender that died before recording it
        await bench.pool.execute("UPDATE campaign_items SET status = 'sending' WHERE id = $1", lost)
        batch = bench.batch(
            [
                outbound_email(done, "done@example.test"),
                outbound_email(lost, "lost@example.test"),
                outbound_email(waiting, "waiting@example.test"),
            ]
        )
        await bench.sender.handle_batch(batch, redelivered=True)
        rows = await bench.rows([done, lost, waiting])

    assert faulty_smtp.handler.recipients() == {"lost@example.test": 1, "waiting@example.test": 1}
    assert {r["status"] for r in rows.values()} == {"sent"}


async def test_a_consumer_cancelled_mid_batch_still_finishes_it_and_the_redelivery_adds_nothing(
    installation: Installation, faulty_smtp: FaultySmtpServer
) -> None:
    """What a RabbitMQ restart does: the channel closes, the consumer's task is cancelled
    while its batch is half sent, and the batch comes back redelivered."""
    faulty_smtp.faults.stall_data.add("slow@example.test")
    faulty_smtp.faults.stall_seconds = 1.0
    async with sender_bench(installation, faulty_smtp.port, pool_size=1) as bench:
        addresses = ["slow@example.test", "next1@example.test", "next2@example.test"]
        items = await bench.items(addresses)
        batch = bench.batch([outbound_email(i, a) for i, a in zip(items, addresses, strict=True)])
        consumer = asyncio.create_task(bench.sender.handle_batch(batch, redelivered=False))
        await stalled(faulty_smtp)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await bench.sender.handle_batch(batch, redelivered=True)
        rows = await bench.rows(items)

    assert faulty_smtp.handler.recipients() == dict.fromkeys(addresses, 1)
    assert {r["status"] for r in rows.values()} == {"sent"}


async def test_results_wait_for_the_database_to_come_back(
    installation: Installation, faulty_smtp: FaultySmtpServer
) -> None:
    database = TcpProxy(urlsplit(installation.settings.database_url).port or 5432)
    await database.start()
    faulty_smtp.faults.stall_data.add("slow@example.test")
    faulty_smtp.faults.stall_seconds = 0.5
    async with sender_bench(
        installation,
        faulty_smtp.port,
        database_url=through(installation.settings.database_url, database),
    ) as bench:
        slow, other = await bench.items(["slow@example.test", "other@example.test"])
        batch = bench.batch(
            [outbound_email(slow, "slow@example.test"), outbound_email(other, "other@example.test")]
        )
        sending = asyncio.create_task(bench.sender.handle_batch(batch, redelivered=False))
        await stalled(faulty_smtp)
        await database.cut()  # while the message is in DATA: its result has nowhere to go
        await asyncio.sleep(OUTAGE_SECONDS)
        assert not sending.done()
        await database.start()
        await sending
        rows = await bench.rows([slow, other])
        await database.cut()

    assert faulty_smtp.handler.recipients() == {"slow@example.test": 1, "other@example.test": 1}
    assert {r["status"] for r in rows.values()} == {"sent"}


async def test_retries_wait_for_the_broker_to_come_back(
    installation: Installation, faulty_smtp: FaultySmtpServer
) -> None:
    broker = TcpProxy(urlsplit(RABBITMQ_URL).port or 5672)
    await broker.start()
    faulty_smtp.faults.stall_rcpt.add("later@example.test")
    faulty_smtp.faults.stall_seconds = 0.5
    faulty_smtp.faults.rcpt_replies["later@example.test"] = "451 4.3.0 Try again later"
    async with sender_bench(
        installation, faulty_smtp.port, rabbitmq_url=through(RABBITMQ_URL, broker)
    ) as bench:
        later, fine = await bench.items(["later@example.test", "fine@example.test"])
        batch = bench.batch(
            [outbound_email(later, "later@example.test"), outbound_email(fine, "fine@example.test")]
        )
        sending = asyncio.create_task(bench.sender.handle_batch(batch, redelivered=False))
        await stalled(faulty_smtp)
        await broker.cut()
        await asyncio.sleep(OUTAGE_SECONDS)
        # recorded while the broker is away; the retry waits to be published
        rows = await bench.rows([later, fine])
        assert (rows[later]["status"], rows[fine]["status"]) == ("retry", "sent")
        assert not sending.done()
        await broker.start()
        await sending
        retried = await bench.retry_messages()
        await broker.cut()

    assert [e.item_id for b in retried for e in b.emails] == [later]
    assert faulty_smtp.handler.recipients() == {"fine@example.test": 1}
