"""Campaign transitions through the running services and the real broker, as the CRM sees
them: the commands it publishes and the lifecycle events it hears back. Then every edge of the
state machine, each made by campaign_lifecycle on the real PostgreSQL and announced on the real
broker (some, such as a pause while items are generated, no service run can hit on purpose)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest
from mailroom_common import campaign_lifecycle as lifecycle
from mailroom_common.broker import Topology, declare_topology, make_broker
from mailroom_common.events import CampaignCancel, CampaignLaunch, CampaignPause, CampaignResume
from mailroom_common.metrics import CAMPAIGNS_COMPLETED
from mailroom_common.runtime import Runtime

from mailroom.campaigns import send_command
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.scenario import campaign_reaches, pool_of, smtp_received
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration


class Heard:
    """The campaign events announced on the run's events exchange."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def about(self, campaign_id: int) -> list[tuple[str, dict[str, Any]]]:
        return [(key, body) for key, body in self.events if body["campaign_id"] == campaign_id]

    def keys(self, campaign_id: int) -> list[str]:
        return [key for key, _ in self.about(campaign_id)]

    async def until(self, campaign_id: int, key: str) -> dict[str, Any]:
        async def heard() -> bool:
            return key in self.keys(campaign_id)

        await wait_for(heard, 60, f"{key} of campaign {campaign_id}")
        return next(body for k, body in self.about(campaign_id) if k == key)


@asynccontextmanager
async def listening(install: Installation) -> AsyncIterator[Heard]:
    heard = Heard()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(Topology.from_settings(install.settings).events.name, "campaign.*")

        async def record(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                heard.events.append((message.routing_key or "", json.loads(message.body)))

        await queue.consume(record)
        yield heard


async def test_every_transition_is_made_and_announced_and_an_illegal_one_refused(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    settings = installation.settings
    audience = await make_audience(pool, 300, tag="life")
    await use_smtp_server(pool, smtp_server.port, messages_per_second=100)
    sent_through = await make_campaign(pool, audience, name="through")
    cancelled = await make_campaign(pool, audience, name="cancelled")
    broken = await make_campaign(pool, audience, name="broken")
    # written as a CRM could, past the create-time check: the processor fails the campaign
    await pool.execute(
        "UPDATE campaigns SET subject = '{{ contact.first_name' WHERE id = $1", broken
    )
    installation.start_services()
    async with listening(installation) as heard:
        # draft -> generating -> sending, paused and resumed on the way, -> completed
        await send_command(settings, CampaignLaunch(campaign_id=sent_through))
        await smtp_received(smtp_server, 50)
        await send_command(settings, CampaignPause(campaign_id=sent_through))
        await campaign_reaches(installation, sent_through, "paused", limit=30)
        await send_command(settings, CampaignResume(campaign_id=sent_through))
        status = await campaign_reaches(installation, sent_through)
        assert status["status"] == "completed", status
        assert status["counts"] == {"sent": 300}

        # draft -> scheduled, paused, resumed to scheduled -> cancelled
        later = datetime.now(UTC) + timedelta(hours=1)
        await send_command(settings, CampaignLaunch(campaign_id=cancelled, send_at=later))
        await campaign_reaches(installation, cancelled, "scheduled", limit=30)
        await send_command(settings, CampaignPause(campaign_id=cancelled))
        await heard.until(cancelled, "campaign.paused")
        await send_command(settings, CampaignResume(campaign_id=cancelled))
        resumed = await heard.until(cancelled, "campaign.resumed")
        assert resumed["status"] == "scheduled"
        await send_command(settings, CampaignCancel(campaign_id=cancelled))
        assert (await campaign_reaches(installation, cancelled))["status"] == "cancelled"

        # draft -> generating -> failed (a template that does not compile)
        await send_command(settings, CampaignLaunch(campaign_id=broken))
        status = await campaign_reaches(installation, broken)
        assert status["status"] == "failed", status

        ended = {
            campaign_id: await heard.until(campaign_id, "campaign.completed")
            for campaign_id in (sent_through, cancelled, broken)
        }
        await asyncio.sleep(1)  # nothing announced twice

    assert heard.keys(sent_through) == [
        "campaign.paused",
        "campaign.resumed",
        "campaign.generated",
        "campaign.completed",
    ] or heard.keys(sent_through) == [
        "campaign.generated",
        "campaign.paused",
        "campaign.resumed",
        "campaign.completed",
    ]
    assert (ended[sent_through]["status"], ended[sent_through]["counts"]) == (
        "completed",
        {"sent": 300},
    )
    assert heard.keys(cancelled) == [
        "campaign.paused",
        "campaign.resumed",
        "campaign.completed",
    ]
    assert (ended[cancelled]["status"], ended[cancelled]["counts"]) == ("cancelled", {})
    # failed while its items were made, or after
    assert heard.keys(broken) in (
        ["campaign.completed"],
        ["campaign.generated", "campaign.completed"],
    )
    assert ended[broken]["status"] == "failed"
    assert ended[broken]["reason"] == status["failure_reason"]
    assert "subject" in ended[broken]["reason"]
    assert sum(ended[broken]["counts"].values()) in (0, 300)  # failed before or after items
    assert set(ended[broken]["counts"]) <= {"failed"}

    # a completed campaign stays completed: PostgreSQL refuses anything else
    with pytest.raises(asyncpg.CheckViolationError, match="completed -> sending"):
        await pool.execute("UPDATE campaigns SET status = 'sending' WHERE id = $1", sent_through)
    assert max(smtp_server.handler.recipients().values()) == 1


# -- every edge of the state machine, through campaign_lifecycle and the real broker ----------


@asynccontextmanager
async def lifecycle_runtime(install: Installation) -> AsyncIterator[Runtime]:
    """A runtime of the test's own on the installation's database and broker: no service
    runs, so no generator takes a campaign the walk leaves generating."""
    broker = make_broker(install.settings)
    await broker.connect()
    try:
        await declare_topology(broker, Topology.from_settings(install.settings))
        yield Runtime.build(install.settings, pool_of(install), broker)
    finally:
        await broker.stop()


class Walk:
    """Transitions made through campaign_lifecycle, each edge taken recorded from the
    statuses PostgreSQL holds before and after."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.taken: set[tuple[str, str]] = set()

    async def status(self, campaign_id: int) -> str:
        return str(await lifecycle.status_of(self.runtime.pool, campaign_id))

    async def new(self) -> int:
        campaign_id: int = await self.runtime.pool.fetchval(
            "INSERT INTO campaigns (name, subject, from_email, html_template)"
            " VALUES ('walk', 's', 'news@mailroom.test', '<p>x</p>') RETURNING id"
        )
        return campaign_id

    async def step(self, campaign_id: int, to: str, transition: Awaitable[object]) -> None:
        """`transition` (a coroutine not yet awaited) takes `campaign_id` to `to`."""
        before = await self.status(campaign_id)
        result = await transition
        assert result is not None and result is not False, (campaign_id, before, to)
        assert await self.status(campaign_id) == to, (campaign_id, before, to)
        self.taken.add((before, to))

    async def generate(self, campaign_id: int, owner: str = "walk:1") -> None:
        """The generator's two steps: claimed (due, or its lease free), then finished."""
        claimed = await lifecycle.claim_generation(self.runtime.pool, owner, 15)
        assert claimed == campaign_id
        await self.step(
            campaign_id,
            "sending",
            lifecycle.finish_generation(self.runtime, campaign_id, owner),
        )


async def test_every_edge_of_the_state_machine_is_taken_and_announced(
    installation: Installation,
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    finished_before = {s: _finished(s) for s in lifecycle.FINAL_STATUSES}
    async with lifecycle_runtime(installation) as runtime, listening(installation) as heard:
        walk = Walk(runtime)
        rt = runtime
        ended: dict[int, str] = {}

        # draft -> cancelled
        c = await walk.new()
        await walk.step(c, "cancelled", lifecycle.cancel(rt, c))
        ended[c] = "cancelled"

        # draft -> scheduled -> cancelled
        c = await walk.new()
        await walk.step(c, "scheduled", lifecycle.launch(rt, c, later))
        await walk.step(c, "cancelled", lifecycle.cancel(rt, c))
        ended[c] = "cancelled"

        # draft -> scheduled -> paused -> scheduled -> (due) generating -> paused ->
        # generating -> sending -> paused -> sending -> completed
        c = await walk.new()
        await walk.step(c, "scheduled", lifecycle.launch(rt, c, later))
        await walk.step(c, "paused", lifecycle.pause(rt, c))
        await walk.step(c, "scheduled", lifecycle.resume(rt, c))
        await rt.pool.execute("UPDATE campaigns SET send_at = now() WHERE id = $1", c)  # due
        await walk.step(c, "generating", lifecycle.claim_generation(rt.pool, "w:1", 15))
        await walk.step(c, "paused", lifecycle.pause(rt, c))
        await walk.step(c, "generating", lifecycle.resume(rt, c))
        await walk.generate(c)  # the pause released the lease: claimed again
        await walk.step(c, "paused", lifecycle.pause(rt, c, "the breaker"))
        await walk.step(c, "sending", lifecycle.resume(rt, c))
        await walk.step(c, "completed", lifecycle.complete_if_done(rt, c))
        ended[c] = "completed"
        through = c

        # draft -> generating -> cancelled / failed
        for final in ("cancelled", "failed"):
            c = await walk.new()
            await walk.step(c, "generating", lifecycle.launch(rt, c, datetime.now(UTC)))
            if final == "cancelled":
                await walk.step(c, final, lifecycle.cancel(rt, c))
            else:
                await walk.step(c, final, lifecycle.fail(rt, c, "broken template"))
            ended[c] = final

        # draft -> generating -> sending -> failed / cancelled
        for final in ("failed", "cancelled"):
            c = await walk.new()
            await walk.step(c, "generating", lifecycle.launch(rt, c, datetime.now(UTC)))
            await walk.generate(c)
            if final == "cancelled":
                await walk.step(c, final, lifecycle.cancel(rt, c))
            else:
                await walk.step(c, final, lifecycle.fail(rt, c, "broken template"))
            ended[c] = final

        # draft -> generating -> paused -> cancelled
        c = await walk.new()
        await walk.step(c, "generating", lifecycle.launch(rt, c, datetime.now(UTC)))
        await walk.step(c, "paused", lifecycle.pause(rt, c))
        await walk.step(c, "cancelled", lifecycle.cancel(rt, c))
        ended[c] = "cancelled"

        completed = {c: await heard.until(c, "campaign.completed") for c in ended}
        await asyncio.sleep(1)  # nothing announced twice

    resumes = {("paused", s) for s in lifecycle.PAUSABLE_STATUSES}
    assert walk.taken == set(lifecycle.TRANSITIONS) | resumes
    assert {c: body["status"] for c, body in completed.items()} == ended
    assert [body["reason"] for c, body in completed.items() if ended[c] == "failed"] == [
        "broken template",
        "broken template",
    ]
    assert heard.keys(through) == [
        "campaign.paused",
        "campaign.resumed",
        "campaign.paused",
        "campaign.resumed",
        "campaign.generated",
        "campaign.paused",
        "campaign.resumed",
        "campaign.completed",
    ]
    for campaign_id in ended:
        assert heard.keys(campaign_id).count("campaign.completed") == 1
    finished = {s: _finished(s) - finished_before[s] for s in lifecycle.FINAL_STATUSES}
    assert finished == {"completed": 1, "failed": 2, "cancelled": 5}


def _finished(status: str) -> float:
    return float(CAMPAIGNS_COMPLETED.labels(status)._value.get())
