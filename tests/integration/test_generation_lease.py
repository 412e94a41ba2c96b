"""A generation cut off by an outage is taken up again by its own process at once, not when
its lease runs out (a RabbitMQ restart during generation stalled campaigns for a minute)."""

from __future__ import annotations

import asyncpg
import pytest
from mailroom_common.campaign_lifecycle import claim_generation
from mailroom_common.events import CampaignLaunch

from mailroom.campaigns import send_command
from tests.support.environment import Installation, wait_for
from tests.support.seed import make_audience, make_campaign

pytestmark = pytest.mark.integration


async def test_a_process_takes_up_its_own_cut_off_generation_and_nobody_elses(
    installation: Installation,
) -> None:
    pool = installation.pool
    assert pool is not None
    campaign_id = await pool.fetchval(
        "INSERT INTO campaigns (name, subject, from_email, html_template, status, lease_owner,"
        " lease_until) VALUES ('c', 's', 'news@mailroom.test', '<p>x</p>', 'generating',"
        " 'host:1', now() + interval '60 seconds') RETURNING id"
    )
    lease = installation.settings.generation_lease_seconds
    assert await claim_generation(pool, "host:2", lease) is None
    assert await claim_generation(pool, "host:1", lease) == campaign_id


async def test_a_stopping_generator_hands_its_campaign_over_at_once() -> None:
    """SIGTERM mid-generation: the page in hand is finished and published, the lease is
    released (another replica goes on at once, not after the lease), and nothing is
    published after the broker connection closed."""
    install = Installation(items_page_size=50)
    pool = await install.setup()
    try:
        audience = await make_audience(pool, 6000)
        campaign_id = await make_campaign(pool, audience)
        generator = install.start_services("item_generator")
        await send_command(install.settings, CampaignLaunch(campaign_id=campaign_id))
        await wait_for(lambda: _has_items(pool, campaign_id), 60, "the first page of the campaign")
        assert Installation.terminate(generator) == 0
        campaign = await pool.fetchrow(
            "SELECT status, lease_owner, generation_done FROM campaigns WHERE id = $1",
            campaign_id,
        )
        assert campaign is not None
        if not campaign["generation_done"]:
            assert campaign["status"] == "generating"
            assert campaign["lease_owner"] is None, "the lease must be handed over"
        log = install.log_text()
        assert "connect broker first" not in log
        unpublished = await pool.fetchval(
            "SELECT count(*) FROM item_pages WHERE campaign_id = $1 AND published_at IS NULL",
            campaign_id,
        )
        assert unpublished == 0, log[-3000:]
    finally:
        await install.teardown()


async def _has_items(pool: asyncpg.Pool, campaign_id: int) -> bool:
    count = await pool.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    return bool(count)
