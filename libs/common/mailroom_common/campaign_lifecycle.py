"""The campaign lifecycle: every change of `campaigns.status`, and every announcement of one.

    draft ─launch─> scheduled ─due─> generating ─items made─> sending ─none open─> completed
    scheduled, generating, sending ─pause─> paused ─resume─> the status it was paused from
    generating, sending ─a broken template─> failed
    anything not final ─cancel─> cancelled

PostgreSQL refuses any other change (migration 0007, `campaign_transition_allowed`). Items
are rendered and sent only while their campaign `sends()`; a paused campaign's work is parked
in the database (`park_items`, `park_page`): its items back to pending and their pages
unpublished, handed over again by the item generator's republish sweep once it resumes.
The functions that end a campaign close its open items, count the finished campaign and
announce `campaign.completed` with its final status.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal, Protocol

from asyncpg.pool import Pool, PoolConnectionProxy

from mailroom_common.campaign_counts import item_counts
from mailroom_common.events import (
    CampaignCompleted,
    CampaignGenerated,
    CampaignPaused,
    CampaignResumed,
    Event,
)
from mailroom_common.metrics import CAMPAIGNS_COMPLETED

log = logging.getLogger(__name__)

CampaignStatus = Literal[
    "draft", "scheduled", "generating", "sending", "paused", "completed", "failed", "cancelled"
]
FinalStatus = Literal["completed", "failed", "cancelled"]
FINAL_STATUSES: tuple[FinalStatus, ...] = ("completed", "failed", "cancelled")
SENDING_STATUSES: tuple[CampaignStatus, ...] = ("generating", "sending")
PAUSABLE_STATUSES: tuple[CampaignStatus, ...] = ("scheduled", "generating", "sending")
CANCELLABLE_STATUSES: tuple[CampaignStatus, ...] = (
    "draft",
    "scheduled",
    "generating",
    "sending",
    "paused",
)

Connection = Pool | PoolConnectionProxy

# The transitions PostgreSQL allows (migration 0007), besides paused -> paused_from.
TRANSITIONS: frozenset[tuple[CampaignStatus, CampaignStatus]] = frozenset(
    {
        ("draft", "scheduled"),
        ("draft", "generating"),
        ("draft", "cancelled"),
        ("scheduled", "generating"),
        ("scheduled", "paused"),
        ("scheduled", "cancelled"),
        ("generating", "sending"),
        ("generating", "paused"),
        ("generating", "cancelled"),
        ("generating", "failed"),
        ("sending", "completed"),
        ("sending", "paused"),
        ("sending", "cancelled"),
        ("sending", "failed"),
        ("paused", "cancelled"),
    }
)


class Runtime(Protocol):
    """What a transition needs of a service's runtime (mailroom_common.runtime.Runtime)."""

    @property
    def pool(self) -> Pool: ...

    async def announce(self, event: Event) -> None: ...


class UnknownCampaign(LookupError):
    def __init__(self, campaign_id: int) -> None:
        super().__init__(f"unknown campaign {campaign_id}")
        self.campaign_id = campaign_id


def sends(status: str | None) -> bool:
    """Whether a campaign in `status` has its items rendered and sent."""
    return status in SENDING_STATUSES


async def status_of(conn: Connection, campaign_id: int) -> CampaignStatus:
    status: CampaignStatus | None = await conn.fetchval(
        "SELECT status FROM campaigns WHERE id = $1", campaign_id
    )
    if status is None:
        raise UnknownCampaign(campaign_id)
    return status


async def launch(runtime: Runtime, campaign_id: int, send_at: datetime) -> CampaignStatus | None:
    """draft -> scheduled (send_at in the future) or generating. None: it was not a draft."""
    await status_of(runtime.pool, campaign_id)
    status: CampaignStatus | None = await runtime.pool.fetchval(
        "UPDATE campaigns SET status = CASE WHEN $2 > now() THEN 'scheduled' ELSE 'generating' END,"
        " send_at = $2, launched_at = now() WHERE id = $1 AND status = 'draft' RETURNING status",
        campaign_id,
        send_at,
    )
    if status is not None:
        log.info("campaign %d launched (%s, send at %s)", campaign_id, status, send_at)
    return status


async def claim_generation(pool: Pool, owner: str, lease_seconds: float) -> int | None:
    """A campaign to generate, leased to `owner`: one due (scheduled -> generating), or one
    being generated whose lease ran out. A lease of `owner`'s own is free too: it generates
    one campaign at a time, so its own was cut off (an outage) and is taken up at once."""
    campaign_id: int | None = await pool.fetchval(
        """
        UPDATE campaigns SET status = 'generating', lease_owner = $1,
               lease_until = now() + make_interval(secs => $2)
        WHERE id = (
            SELECT id FROM campaigns
            WHERE (status = 'generating'
                   AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $1))
               OR (status = 'scheduled' AND send_at <= now())
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        owner,
        lease_seconds,
    )
    return campaign_id


async def finish_generation(runtime: Runtime, campaign_id: int, owner: str) -> int | None:
    """generating -> sending, while `owner` holds the generation; announces
    campaign.generated. The number of items, or None if the generation was no longer ours."""
    total: int | None = await runtime.pool.fetchval(
        """
        UPDATE campaigns SET status = 'sending', generation_done = true, generated_at = now(),
               lease_owner = NULL, lease_until = NULL
        WHERE id = $1 AND status = 'generating' AND lease_owner = $2
        RETURNING (SELECT count(*) FROM campaign_items WHERE campaign_id = $1)
        """,
        campaign_id,
        owner,
    )
    if total is None:
        return None
    log.info("campaign %d: generation finished, %d items", campaign_id, total)
    await runtime.announce(CampaignGenerated(campaign_id=campaign_id, item_count=total))
    return total


async def pause(runtime: Runtime, campaign_id: int, reason: str = "paused by request") -> bool:
    """scheduled, generating or sending -> paused, the reason kept for `campaign status`.
    False: it was not running."""
    await status_of(runtime.pool, campaign_id)
    paused_from: CampaignStatus | None = await runtime.pool.fetchval(
        "UPDATE campaigns SET paused_from = status, status = 'paused', pause_reason = $3,"
        " lease_owner = NULL, lease_until = NULL"
        " WHERE id = $1 AND status = ANY($2::text[]) RETURNING paused_from",
        campaign_id,
        list(PAUSABLE_STATUSES),
        reason,
    )
    if paused_from is None:
        return False
    log.info("campaign %d paused (was %s): %s", campaign_id, paused_from, reason)
    await runtime.announce(CampaignPaused(campaign_id=campaign_id, reason=reason))
    return True


async def resume(runtime: Runtime, campaign_id: int) -> CampaignStatus | None:
    """paused -> the status it was paused from. None: it was not paused. The circuit
    breaker judges the campaign afresh: on what happens from now on (its counts now are
    those of the resume), and the account's failures are forgotten."""
    await status_of(runtime.pool, campaign_id)
    status: CampaignStatus | None = await runtime.pool.fetchval(
        "UPDATE campaigns SET status = paused_from, paused_from = NULL, pause_reason = NULL,"
        " resumed_attempts = delivery_attempts, resumed_hard_bounces = hard_bounces,"
        " resumed_complaints = complaints, account_failing_since = NULL"
        " WHERE id = $1 AND status = 'paused' RETURNING status",
        campaign_id,
    )
    if status is None:
        return None
    log.info("campaign %d resumed (%s)", campaign_id, status)
    await runtime.announce(CampaignResumed(campaign_id=campaign_id, status=status))
    return status


async def cancel(runtime: Runtime, campaign_id: int) -> bool:
    """Any status not final -> cancelled; its open items are skipped. False: it had ended."""
    await status_of(runtime.pool, campaign_id)
    return await _end(
        runtime,
        campaign_id,
        "cancelled",
        from_statuses=CANCELLABLE_STATUSES,
        item_status="skipped",
        item_error="campaign cancelled",
    )


async def fail(runtime: Runtime, campaign_id: int, reason: str) -> bool:
    """generating or sending -> failed, with the reason; its open items fail with it."""
    return await _end(
        runtime,
        campaign_id,
        "failed",
        from_statuses=SENDING_STATUSES,
        item_status="failed",
        item_error=f"campaign failed: {reason}",
        reason=reason,
    )


async def complete_if_done(runtime: Runtime, campaign_id: int) -> bool:
    """sending -> completed once generation is done and no item is open."""
    completed = await runtime.pool.fetchval(
        """
        UPDATE campaigns SET status = 'completed', completed_at = now()
        WHERE id = $1 AND status = 'sending' AND generation_done
          AND NOT EXISTS (SELECT 1 FROM campaign_items
                          WHERE campaign_id = $1
                            AND status IN ('pending', 'queued', 'sending', 'retry'))
        RETURNING id
        """,
        campaign_id,
    )
    if completed is None:
        return False
    await _announce_end(
        runtime, campaign_id, "completed", await item_counts(runtime.pool, campaign_id)
    )
    return True


async def _end(
    runtime: Runtime,
    campaign_id: int,
    status: FinalStatus,
    *,
    from_statuses: tuple[CampaignStatus, ...],
    item_status: Literal["skipped", "failed"],
    item_error: str,
    reason: str | None = None,
) -> bool:
    async with runtime.pool.acquire() as conn, conn.transaction():
        ended = await conn.fetchval(
            "UPDATE campaigns SET status = $2, failure_reason = coalesce($4, failure_reason),"
            " completed_at = now(), lease_owner = NULL, lease_until = NULL"
            " WHERE id = $1 AND status = ANY($3::text[]) RETURNING id",
            campaign_id,
            status,
            list(from_statuses),
            reason,
        )
        if ended is None:
            return False
        await conn.execute(
            "UPDATE campaign_items SET status = $2, error = $3"
            " WHERE campaign_id = $1 AND status IN ('pending', 'queued', 'retry')",
            campaign_id,
            item_status,
            item_error,
        )
        counts = await item_counts(conn, campaign_id)
    await _announce_end(runtime, campaign_id, status, counts, reason)
    return True


async def _announce_end(
    runtime: Runtime,
    campaign_id: int,
    status: FinalStatus,
    counts: dict[str, int],
    reason: str | None = None,
) -> None:
    log.info("campaign %d %s: %s%s", campaign_id, status, counts, f" ({reason})" if reason else "")
    CAMPAIGNS_COMPLETED.labels(status).inc()
    await runtime.announce(
        CampaignCompleted(campaign_id=campaign_id, status=status, counts=counts, reason=reason)
    )


# --- parking: a paused campaign's work waits in the database --------------------------------

# Open items not being sent go back to pending; the pages holding them (the campaign's page
# with the greatest first id at or below each item; before migration 0005, the item's
# page_id) are unpublished, so the republish sweep hands them over again after a resume.
PARK_ITEMS = """
WITH parked AS (
    UPDATE campaign_items SET status = 'pending'
    WHERE id = ANY($2::bigint[]) AND campaign_id = $1 AND status IN ('pending', 'queued', 'retry')
    RETURNING id, page_id
), pages AS (
    SELECT p.id FROM parked k CROSS JOIN LATERAL (
        SELECT id, last_item_id FROM item_pages
        WHERE campaign_id = $1 AND first_item_id <= k.id
        ORDER BY first_item_id DESC LIMIT 1) p
    WHERE p.last_item_id >= k.id
    UNION
    SELECT page_id FROM parked WHERE page_id IS NOT NULL
), unpublished AS (
    UPDATE item_pages SET published_at = NULL
    WHERE id = ANY(ARRAY(SELECT id FROM pages)) AND published_at IS NOT NULL
)
SELECT array(SELECT id FROM parked ORDER BY id)
"""


async def park_items(conn: Connection, campaign_id: int, item_ids: list[int]) -> list[int]:
    """Park these items of a campaign that does not send now (see PARK_ITEMS): the ids
    parked; those being sent or finished are left as they are."""
    parked: list[int] = list(await conn.fetchval(PARK_ITEMS, campaign_id, item_ids))
    if parked:
        log.info("campaign %d: %d items parked", campaign_id, len(parked))
    return parked


async def park_page(conn: Connection, page_id: int) -> None:
    """A page of a campaign that does not send now: handed over again once it does."""
    await conn.execute("UPDATE item_pages SET published_at = NULL WHERE id = $1", page_id)
