"""Every campaign transition through the running services and the real broker, as the CRM
sees it: the commands it publishes and the lifecycle events it hears back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import CampaignCancel, CampaignLaunch, CampaignPause, CampaignResume

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
