"""Creating campaigns and reading their progress (the CLI's side of the database).

A campaign is checked and created by `mailroom_common.campaign_drafts`, the same code the
item generator runs for a `campaign.create` command."""

from __future__ import annotations

from typing import Any

from asyncpg.pool import Pool
from mailroom_common.adaptive_rate import ACCOUNT_RATE_NAME, AdaptiveRateLimiter
from mailroom_common.broker import Topology, declare_topology, make_broker, publish_event
from mailroom_common.campaign_counts import item_counts
from mailroom_common.campaign_drafts import (
    CampaignProblem,
    CreatedCampaign,
    NewCampaign,
    create_campaign,
    create_draft,
)
from mailroom_common.events import OPEN_STATUSES, Event
from mailroom_common.settings import Settings

__all__ = [
    "CampaignProblem",
    "CreatedCampaign",
    "NewCampaign",
    "campaign_exists",
    "campaign_status",
    "create_campaign",
    "create_draft",
    "list_campaigns",
    "send_command",
]


async def campaign_status(pool: Pool, campaign_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT id, name, status, pause_reason, generation_done, failure_reason, send_at,"
        " launched_at,"
        " generated_at, completed_at, archived_at FROM campaigns WHERE id = $1",
        campaign_id,
    )
    if row is None:
        return None
    counts = await item_counts(pool, campaign_id)
    total = sum(counts.values())
    open_items = sum(counts.get(s, 0) for s in OPEN_STATUSES)
    status = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}
    status.update(items=total, open=open_items, done=total - open_items, counts=counts)
    # the SMTP account's shared rate, as the senders adapt it to the relay (not the campaign's)
    status["send_rate"] = await AdaptiveRateLimiter(pool, ACCOUNT_RATE_NAME).summary()
    return status


async def send_command(settings: Settings, command: Event) -> None:
    """Publish a command the way the CRM would: to the commands exchange, confirmed."""
    broker = make_broker(settings)
    await broker.connect()
    try:
        await declare_topology(broker, Topology.from_settings(settings))
        await publish_event(broker, Topology.from_settings(settings).commands, command)
    finally:
        await broker.stop()


# the items by status of the campaigns $1, archived or not (campaign_counts.ITEM_COUNTS for
# several campaigns in one query)
ITEM_COUNTS_OF_CAMPAIGNS = """
SELECT campaign_id, status, sum(n)::bigint AS n FROM (
    SELECT campaign_id, status, count(*) AS n FROM campaign_items
    WHERE campaign_id = ANY($1::bigint[]) GROUP BY campaign_id, status
    UNION ALL
    SELECT c.id, e.key, e.value::bigint FROM campaigns c, jsonb_each_text(c.archived_counts) e
    WHERE c.id = ANY($1::bigint[])
) t GROUP BY campaign_id, status
"""


async def list_campaigns(pool: Pool, limit: int) -> list[dict[str, Any]]:
    """The `limit` newest campaigns, with their items by status and their progress."""
    rows = await pool.fetch(
        "SELECT id, name, status, send_at, launched_at, completed_at FROM campaigns"
        " ORDER BY id DESC LIMIT $1",
        limit,
    )
    counts: dict[int, dict[str, int]] = {}
    for row in await pool.fetch(ITEM_COUNTS_OF_CAMPAIGNS, [r["id"] for r in rows]):
        if row["n"]:
            counts.setdefault(row["campaign_id"], {})[row["status"]] = int(row["n"])
    listed = []
    for row in rows:
        mine = counts.get(row["id"], {})
        total = sum(mine.values())
        open_items = sum(mine.get(s, 0) for s in OPEN_STATUSES)
        listed.append(
            {
                **{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()},
                "items": total,
                "open": open_items,
                "done": total - open_items,
                "counts": mine,
            }
        )
    return listed


async def campaign_exists(pool: Pool, campaign_id: int) -> bool:
    return bool(await pool.fetchval("SELECT 1 FROM campaigns WHERE id = $1", campaign_id))
