"""The item state machine is enforced by PostgreSQL for every table of items."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support.environment import Installation
from tests.support.scenario import pool_of
from tests.support.seed import make_audience, make_campaign

pytestmark = pytest.mark.integration


async def test_a_transition_outside_the_state_machine_is_refused(
    installation: Installation,
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 2)
    campaign_id = await make_campaign(pool, audience)
    item_id = await pool.fetchval(
        "INSERT INTO campaign_items (campaign_id, contact_id, email)"
        " SELECT $1, id, email FROM contacts ORDER BY id LIMIT 1 RETURNING id",
        campaign_id,
    )
    for status in ("sending", "sent", "bounced"):
        await pool.execute("UPDATE campaign_items SET status = $2 WHERE id = $1", item_id, status)
    with pytest.raises(asyncpg.CheckViolationError, match="bounced -> pending is not allowed"):
        await pool.execute("UPDATE campaign_items SET status = 'pending' WHERE id = $1", item_id)
    autoresponder_item = await pool.fetchval(
        "WITH a AS (INSERT INTO autoresponders (name, trigger_kind, event_type, subject,"
        " html_template) VALUES ('x', 'contact.event', 'signup', 's', '<p>x</p>') RETURNING id)"
        " INSERT INTO autoresponder_items (autoresponder_id, contact_id, event_id, email, due_at)"
        " SELECT a.id, c.id, 'e', c.email, now() FROM a, contacts c ORDER BY c.id LIMIT 1"
        " RETURNING id"
    )
    with pytest.raises(
        asyncpg.CheckViolationError, match=r"autoresponder_items \d+: status pending -> sent"
    ):
        await pool.execute(
            "UPDATE autoresponder_items SET status = 'sent' WHERE id = $1", autoresponder_item
        )
