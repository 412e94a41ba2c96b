"""A pause parks a campaign's work in PostgreSQL: the sender puts the rest of each batch back
to pending and unpublishes its pages, settles the message and publishes nothing about the
campaign while it is paused; the resume hands the pages over again and every email is sent
exactly once. End to end through the real RabbitMQ, PostgreSQL and a slow SMTP server; then
the sender alone: a pause stops a batch at its next chunk, and an item rendered again after it
was parked keeps its tries."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest
from mailroom_common.broker import PRIORITY_ROUTING_KEY, Topology, declare_topology, make_broker
from mailroom_common.events import CampaignLaunch, CampaignPause, CampaignResume, ItemsPage
from mailroom_common.runtime import Runtime
from mailroom_message_processor.processor import MessageProcessor

from mailroom.campaigns import send_command
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.outbound import outbound_email, sender_bench
from tests.support.scenario import campaign_reaches, items_in, status_of
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

RECIPIENTS = 1000
QUIET_SECONDS = 30


@pytest.fixture
async def install() -> AsyncIterator[Installation]:
    # pages of 100 and batches of 50: many pages and batches in flight when the pause comes;
    # sweeps far apart and pages young to them for two minutes, so that sending again within a
    # second after the resume is the resume's doing, whatever the age of the parked pages
    install = Installation(
        items_page_size=100,
        batch_size=50,
        sweep_interval_seconds=30,
        republish_after_seconds=120,
    )
    await install.setup()
    try:
        yield install
    finally:
        await install.teardown()


def _work_routing_keys(topology: Topology) -> list[str]:
    """Every routing key of the work exchange (a direct one: '#' would match nothing)."""
    retries = [
        topology.retry_routing_key(delay, priority)
        for delay in topology.retry_delays_ms
        for priority in (False, True)
    ]
    return ["items.page", "outbound.batch", PRIORITY_ROUTING_KEY, *retries]


class CampaignMessages:
    """Every message published to the run's events exchange, to its work exchange (any
    routing key) and dead-lettered, kept in a queue of the test's own, read back as the ones
    about one campaign."""

    def __init__(self, queue: aio_pika.abc.AbstractQueue, campaign_id: int) -> None:
        self.queue = queue
        self.campaign_id = campaign_id

    async def take(self) -> list[str]:
        """The routing keys of the messages about the campaign published since the last
        call."""
        found: list[str] = []
        while (message := await self.queue.get(fail=False, no_ack=True)) is not None:
            body = json.loads(message.body)
            if isinstance(body, dict) and body.get("campaign_id") == self.campaign_id:
                found.append(message.routing_key or "")
        return found


def received_count(smtp: FaultySmtpServer) -> int:
    with smtp.handler.lock:
        return len(smtp.handler.received)


async def smtp_received(smtp: FaultySmtpServer, at_least: int, limit: float = 60) -> None:
    async def enough() -> bool:
        return received_count(smtp) >= at_least

    await wait_for(enough, limit, f"{at_least} messages received")


async def _published_pages_with_pending_items(pool: asyncpg.Pool, campaign_id: int) -> int:
    n: int = await pool.fetchval(
        "SELECT count(*) FROM item_pages p WHERE p.campaign_id = $1"
        " AND p.published_at IS NOT NULL AND EXISTS (SELECT 1 FROM campaign_items i"
        "   WHERE i.campaign_id = $1 AND i.id BETWEEN p.first_item_id AND p.last_item_id"
        "   AND i.status = 'pending')",
        campaign_id,
    )
    return n


async def test_a_paused_campaign_waits_in_the_database_and_publishes_nothing(
    install: Installation,
) -> None:
    pool = install.pool
    assert pool is not None
    topology = Topology.from_settings(install.settings)
    with FaultySmtpServer() as smtp:
        smtp.faults.data_delay = 0.02  # about 100 emails a second through 2 connections
        audience = await make_audience(pool, RECIPIENTS, tag="parked")
        await use_smtp_server(pool, smtp.port, pool_size=2)
        campaign_id = await make_campaign(pool, audience)
        install.start_services()

        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(topology.events.name, routing_key="#")
            for routing_key in _work_routing_keys(topology):
                await queue.bind(topology.work.name, routing_key=routing_key)
            for work_queue, _, _ in topology.bindings():  # and what is dead-lettered
                await queue.bind(topology.dead_letters.name, routing_key=work_queue.name)
            messages = CampaignMessages(queue, campaign_id)

            await send_command(install.settings, CampaignLaunch(campaign_id=campaign_id))
            await smtp_received(smtp, 200)
            # handed to the sender, not yet sent: those not sent before the pause took effect
            # only the sender's parking takes back to pending (the claim refuses them now)
            waiting = await items_in(pool, campaign_id, "queued", "retry")
            sent_before = received_count(smtp)
            await send_command(install.settings, CampaignPause(campaign_id=campaign_id))
            await campaign_reaches(install, campaign_id, "paused", limit=30)

            # settled: the batches that were queued or in flight reached the sender, which
            # parked what it had not sent, and the message processor parked its pages
            async def settled() -> bool:
                return await items_in(pool, campaign_id, "queued", "sending", "retry") == 0

            await wait_for(settled, 60, "the paused campaign's work to be parked")
            await asyncio.sleep(2)
            before = await messages.take()
            assert "outbound.batch" in before, "the counting queue saw the campaign's batches"
            sent = received_count(smtp)
            assert sent < RECIPIENTS, "the pause should have come before the end of the campaign"
            parked = waiting - (sent - sent_before)  # at least
            assert parked > 0, "batches should have been waiting for the sender at the pause"

            await asyncio.sleep(QUIET_SECONDS)
            while_paused = await messages.take()
            print(
                f"\npaused with {sent} of {RECIPIENTS} sent, at least {parked} parked by the"
                f" sender; messages about it in {QUIET_SECONDS} s of pause: {while_paused[:5]}"
            )
            assert while_paused == []
            assert received_count(smtp) == sent

            # the unsent items wait as pending, their pages unpublished for the sweep
            status = await status_of(install, campaign_id)
            assert status["status"] == "paused"
            assert status["counts"] == {"sent": sent, "pending": RECIPIENTS - sent}, status
            assert await _published_pages_with_pending_items(pool, campaign_id) == 0

            resumed_at = time.monotonic()
            await send_command(install.settings, CampaignResume(campaign_id=campaign_id))
            await smtp_received(smtp, sent + 1, limit=30)
            again_after = time.monotonic() - resumed_at
            print(f"sending again {again_after:.1f} s after the resume")
            # the resume hands the parked pages over at once, not at the next sweep
            assert again_after < 1.0
            status = await campaign_reaches(install, campaign_id, limit=120)

    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": RECIPIENTS}
    recipients = smtp.handler.recipients()
    assert set(recipients) == audience.eligible
    assert max(recipients.values()) == 1
    assert len(smtp.handler.message_ids()) == RECIPIENTS


# -- the sender alone, in the test's process -----------------------------------------------


async def test_a_paused_campaigns_batch_is_parked_and_settled_with_nothing_published(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    async with sender_bench(installation, smtp_server.port) as bench:
        addresses = ["one@example.test", "two@example.test", "three@example.test"]
        items = await bench.items(addresses[:2]) + await bench.items(addresses[2:], "retry")
        page = await bench.pool.fetchval(
            "INSERT INTO item_pages (campaign_id, item_count, first_item_id, last_item_id,"
            " published_at) VALUES ($1, 3, $2, $3, now()) RETURNING id",
            bench.campaign_id,
            min(items),
            max(items),
        )
        await bench.pool.execute(
            "UPDATE campaigns SET paused_from = status, status = 'paused' WHERE id = $1",
            bench.campaign_id,
        )
        batch = bench.batch([outbound_email(i, a) for i, a in zip(items, addresses, strict=True)])
        await bench.sender.handle_batch(batch, redelivered=False)

        rows = await bench.rows(items)
        published_at = await bench.pool.fetchval(
            "SELECT published_at FROM item_pages WHERE id = $1", page
        )
        assert {r["status"] for r in rows.values()} == {"pending"}
        assert {r["attempts"] for r in rows.values()} == {0}
        assert published_at is None, "the page is handed over again after the resume"
        assert await bench.retry_messages() == []
        assert await bench.published_results() == []
    assert smtp_server.handler.received == []


async def test_a_pause_stops_a_batch_at_its_next_chunk(installation: Installation) -> None:
    """A pause committed while a chunk is being sent: that chunk finishes (its items were
    claimed), the next one claims nothing, and the rest of the batch is parked."""
    with FaultySmtpServer() as smtp:
        smtp.faults.data_delay = 0.25  # one connection: a chunk of 4 takes a second
        async with sender_bench(installation, smtp.port, pool_size=1) as bench:
            addresses = [f"chunk{n}@example.test" for n in range(24)]
            items = await bench.items(addresses)
            chunk = installation.settings.chunk_per_connection  # one connection, no rate limit
            batch = bench.batch(
                [outbound_email(i, a) for i, a in zip(items, addresses, strict=True)]
            )
            delivery = asyncio.create_task(bench.sender.handle_batch(batch, redelivered=False))
            await smtp_received(smtp, 1, limit=10)  # the first chunk is being sent
            await bench.pool.execute(
                "UPDATE campaigns SET paused_from = status, status = 'paused' WHERE id = $1",
                bench.campaign_id,
            )
            paused_at = received_count(smtp)
            await asyncio.wait_for(delivery, 10)
            rows = await bench.rows(items)
            results = await bench.published_results()
        print(
            f"\npaused after {paused_at} of the first chunk of {chunk}: {received_count(smtp)} sent"
        )
    assert paused_at < chunk, "the pause should have come while the first chunk was sent"
    assert received_count(smtp) == chunk
    assert [rows[i]["status"] for i in items] == ["sent"] * chunk + ["pending"] * (24 - chunk)
    assert [r.item_id for result in results for r in result.results] == items[:chunk]


async def test_a_retry_counts_the_tries_the_database_knows(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    """An item parked after two tries is rendered again with attempt 0; its next temporary
    failure goes to the third tier, and one parked after every tier gives up."""
    smtp_server.handler.soft_fail = {"again@example.test", "done@example.test"}
    async with sender_bench(installation, smtp_server.port) as bench:
        again, done = await bench.items(["again@example.test", "done@example.test"], "pending")
        await bench.pool.execute(
            "UPDATE campaign_items SET attempts = CASE WHEN id = $1 THEN 2 ELSE $3 END"
            " WHERE id = ANY(ARRAY[$1, $2]::bigint[])",
            again,
            done,
            len(bench.topology.retry_delays_ms),
        )
        batch = bench.batch(
            [outbound_email(again, "again@example.test"), outbound_email(done, "done@example.test")]
        )
        await bench.sender.handle_batch(batch, redelivered=False)

        rows = await bench.rows([again, done])
        retried = await bench.retry_messages()
    assert (rows[again]["status"], rows[again]["attempts"]) == ("retry", 3)
    assert [(e.item_id, e.attempt) for b in retried for e in b.emails] == [(again, 3)]
    assert rows[done]["status"] == "failed"
    assert rows[done]["smtp_reply"].startswith(
        f"gave up after {len(bench.topology.retry_delays_ms) + 1} attempts"
    )


# -- the message processor alone, in the test's process --------------------------------------


@pytest.mark.parametrize(
    ("path", "published", "items", "page_published"),
    [
        (["generating", "paused"], 0, "pending", False),  # parked for the resume
        (["cancelled"], 0, "pending", True),  # ended: nothing to hand over again
        (["generating"], 1, "queued", True),  # sends: rendered and published
    ],
    ids=["paused", "cancelled", "generating"],
)
async def test_the_processor_parks_a_page_of_a_paused_campaign(
    installation: Installation,
    path: list[str],
    published: int,
    items: str,
    page_published: bool,
) -> None:
    pool = installation.pool
    assert pool is not None
    settings = installation.settings
    audience = await make_audience(pool, 3, tag="page")
    await use_smtp_server(pool, 2525)  # nothing is sent: the processor reads the From
    campaign_id = await make_campaign(pool, audience)
    item_ids = [
        r["id"]
        for r in await pool.fetch(
            "INSERT INTO campaign_items (campaign_id, contact_id, email)"
            " SELECT DISTINCT ON (lower(email)) $1, id, email FROM contacts"
            " WHERE email = ANY($2) ORDER BY lower(email), id RETURNING id",
            campaign_id,
            sorted(audience.eligible),
        )
    ]
    page_id = await pool.fetchval(
        "INSERT INTO item_pages (campaign_id, item_count, first_item_id, last_item_id,"
        " published_at) VALUES ($1, 3, $2, $3, now()) RETURNING id",
        campaign_id,
        min(item_ids),
        max(item_ids),
    )
    for status in path:
        await pool.execute(
            "UPDATE campaigns SET paused_from = CASE WHEN $2 = 'paused' THEN status END,"
            " status = $2 WHERE id = $1",
            campaign_id,
            status,
        )
    topology = Topology.from_settings(settings)
    broker = make_broker(settings)
    await broker.connect()
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        await declare_topology(broker, topology)
        channel = await connection.channel()
        batches = await channel.declare_queue(exclusive=True)
        await batches.bind(topology.work.name, routing_key="outbound.batch")
        processor = MessageProcessor(Runtime.build(settings, pool, broker))
        await processor.handle_page(
            ItemsPage(campaign_id=campaign_id, page_id=page_id, item_ids=sorted(item_ids))
        )
        await asyncio.sleep(0.5)
        found = CampaignMessages(batches, campaign_id)
        assert len(await found.take()) == published
    finally:
        await connection.close()
        await broker.stop()
    statuses = await pool.fetch(
        "SELECT DISTINCT status FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    assert [r["status"] for r in statuses] == [items]
    page = "SELECT published_at IS NOT NULL FROM item_pages WHERE id = $1"
    assert await pool.fetchval(page, page_id) is page_published
