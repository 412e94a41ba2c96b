"""Creating campaigns and reading their progress (the CLI's side of the database).

A campaign is checked and created by `mailroom_common.campaign_drafts`, the same code the
item generator runs for a `campaign.create` command."""

from __future__ import annotations

from typing import Any

from asyncpg.pool import Pool
from mailroom_common.adaptive_rate import ACCOUNT_RATE_NAME, AdaptiveRateLimiter
from mailroom_common.campaign_counts import campaign_progress, item_counts
from mailroom_common.campaign_drafts import (
    CampaignProblem,
    CreatedCampaign,
    NewCampaign,
    create_campaign,
    create_draft,
)
from mailroom_common.events import OPEN_STATUSES, Event
from mailroom_common.settings import Settings

from mailroom.publishing import publisher

__all__ = [
    "CampaignProblem",
    "CreatedCampaign",
    "NewCampaign",
    "campaign_state",
    "campaign_status",
    "create_campaign",
    "create_draft",
    "list_campaigns",
    "send_command",
]

# what `campaign list --json` shows of each campaign
LISTED = (
    "id",
    "name",
    "status",
    "send_at",
    "launched_at",
    "completed_at",
    "items",
    "open",
    "done",
    "counts",
)


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
    async with publisher(settings, commands=True) as publish:
        await publish(command)


async def list_campaigns(pool: Pool, limit: int) -> list[dict[str, Any]]:
    """The `limit` newest campaigns, with their items by status and their progress."""
    listed = await campaign_progress(pool, limit)
    return [{k: v for k, v in c.items() if k in LISTED} for c in listed]


async def campaign_state(pool: Pool, campaign_id: int) -> str | None:
    """The campaign's status, None when there is no such campaign."""
    status: str | None = await pool.fetchval(
        "SELECT status FROM campaigns WHERE id = $1", campaign_id
    )
    return status
