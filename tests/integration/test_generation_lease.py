"""A generation cut off by an outage is taken up again by its own process at once, not when
its lease runs out (a RabbitMQ restart during generation stalled campaigns for a minute)."""

from __future__ import annotations

import pytest
from mailroom_item_generator.generator import CLAIM_CAMPAIGN, LEASE_SECONDS

from tests.support.environment import Installation

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
    assert await pool.fetchval(CLAIM_CAMPAIGN, "host:2", LEASE_SECONDS) is None
    assert await pool.fetchval(CLAIM_CAMPAIGN, "host:1", LEASE_SECONDS) == campaign_id
