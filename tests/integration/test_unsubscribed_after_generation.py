"""An address that leaves the campaign's lists, or is suppressed, after its item was created
gets nothing: the sender looks again before it sends. (The subscriptions service skips the
items it finds as it unsubscribes someone; an item being created at that very moment, in a
snapshot that read the lists just before, is the one this catches.)"""

from __future__ import annotations

import pytest
from mailroom_common.events import CampaignLaunch

from mailroom.campaigns import send_command
from tests.support.environment import Installation, wait_for
from tests.support.scenario import campaign_reaches, pool_of
from tests.support.seed import Audience, make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration


async def generated_campaign(
    installation: Installation, smtp_server: SmtpServer, recipients: int, tag: str
) -> tuple[Audience, int]:
    """A campaign whose items exist, its generator stopped before anything is sent."""
    pool = pool_of(installation)
    audience = await make_audience(pool, recipients, tag=tag)
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    generator = installation.start_services("item_generator")
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))

    async def generated() -> bool:
        done: bool = await pool.fetchval(
            "SELECT generation_done FROM campaigns WHERE id = $1", campaign_id
        )
        return done

    await wait_for(generated, 60, "the campaign's items")
    assert Installation.terminate(generator) == 0
    return audience, campaign_id


async def test_unsubscribed_or_suppressed_after_generation_gets_nothing(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience, campaign_id = await generated_campaign(installation, smtp_server, 300, "late")
    left, suppressed = sorted(audience.eligible)[:2]
    # as an unsubscribe racing the snapshot leaves it: the membership changed, the item pending
    await pool.execute(
        "UPDATE list_memberships SET status = 'unsubscribed'"
        " WHERE contact_id IN (SELECT id FROM contacts WHERE lower(email) = $1)",
        left,
    )
    await pool.execute(
        "INSERT INTO suppressions (email, reason) VALUES ($1, 'complaint')", suppressed
    )
    installation.start_services(
        "item_generator", "message_processor", "outbound_sender", "completion"
    )
    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": 298, "skipped": 1, "suppressed": 1}
    assert set(smtp_server.handler.recipients()) == audience.eligible - {left, suppressed}


async def test_an_item_whose_contact_was_deleted_fails_and_the_campaign_completes(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience, campaign_id = await generated_campaign(installation, smtp_server, 50, "gone")
    gone = sorted(audience.eligible)[0]
    # as a delete racing the snapshot leaves it (the trigger that refuses it saw no item yet)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE contacts DISABLE TRIGGER contacts_keep_campaign_items")
        await conn.execute(
            "DELETE FROM contacts c USING campaign_items i"
            " WHERE i.contact_id = c.id AND i.campaign_id = $1 AND lower(i.email) = $2",
            campaign_id,
            gone,
        )
        await conn.execute("ALTER TABLE contacts ENABLE TRIGGER contacts_keep_campaign_items")
    installation.start_services(
        "item_generator", "message_processor", "outbound_sender", "completion"
    )
    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": 49, "failed": 1}
    assert gone not in smtp_server.handler.recipients()
