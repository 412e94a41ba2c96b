"""Campaign commands: launch, pause, resume, cancel. Each is idempotent."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mailroom_common.archive import item_counts
from mailroom_common.events import (
    CampaignCancel,
    CampaignCompleted,
    CampaignLaunch,
    CampaignPause,
    CampaignResume,
    Event,
)
from mailroom_common.intake import Rejected
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)


async def _require_campaign(runtime: Runtime, campaign_id: int) -> str:
    status: str | None = await runtime.pool.fetchval(
        "SELECT status FROM campaigns WHERE id = $1", campaign_id
    )
    if status is None:
        raise Rejected(f"unknown campaign {campaign_id}")
    return status


async def launch(runtime: Runtime, command: CampaignLaunch) -> bool:
    """Mark a draft campaign for generation, now or at send_at. False if it was not a draft."""
    await _require_campaign(runtime, command.campaign_id)
    send_at = command.send_at or datetime.now(UTC)
    if send_at.tzinfo is None:
        raise Rejected("send_at must carry a time zone (e.g. 2026-12-01T09:00:00+00:00)")
    status = await runtime.pool.fetchval(
        "UPDATE campaigns SET status = CASE WHEN $2 > now() THEN 'scheduled' ELSE 'generating' END,"
        " send_at = $2, launched_at = now() WHERE id = $1 AND status = 'draft' RETURNING status",
        command.campaign_id,
        send_at,
    )
    if status is None:
        log.info("campaign %d was launched already: launch ignored", command.campaign_id)
        return False
    log.info("campaign %d launched (%s, send at %s)", command.campaign_id, status, send_at)
    return True


async def pause(runtime: Runtime, command: CampaignPause) -> None:
    await _require_campaign(runtime, command.campaign_id)
    await runtime.pool.execute(
        "UPDATE campaigns SET paused_from = status, status = 'paused', lease_owner = NULL,"
        " lease_until = NULL WHERE id = $1 AND status IN ('scheduled', 'generating', 'sending')",
        command.campaign_id,
    )


async def resume(runtime: Runtime, command: CampaignResume) -> None:
    await _require_campaign(runtime, command.campaign_id)
    await runtime.pool.execute(
        "UPDATE campaigns SET status = paused_from, paused_from = NULL"
        " WHERE id = $1 AND status = 'paused'",
        command.campaign_id,
    )


async def cancel(runtime: Runtime, command: CampaignCancel) -> None:
    await _require_campaign(runtime, command.campaign_id)
    async with runtime.pool.acquire() as conn, conn.transaction():
        cancelled = await conn.fetchval(
            "UPDATE campaigns SET status = 'cancelled', completed_at = now(), lease_owner = NULL"
            " WHERE id = $1 AND status IN ('draft', 'scheduled', 'generating', 'sending', 'paused')"
            " RETURNING id",
            command.campaign_id,
        )
        if cancelled is None:
            return
        await conn.execute(
            "UPDATE campaign_items SET status = 'skipped', error = 'campaign cancelled'"
            " WHERE campaign_id = $1 AND status IN ('pending', 'queued', 'retry')",
            command.campaign_id,
        )
        counts = await item_counts(conn, command.campaign_id)
    await runtime.announce(
        CampaignCompleted(campaign_id=command.campaign_id, status="cancelled", counts=counts)
    )


async def dispatch(runtime: Runtime, command: Event) -> None:
    match command:
        case CampaignLaunch():
            await launch(runtime, command)
        case CampaignPause():
            await pause(runtime, command)
        case CampaignResume():
            await resume(runtime, command)
        case CampaignCancel():
            await cancel(runtime, command)
        case _:
            raise Rejected(f"not a campaign command: {command.routing_key}")
