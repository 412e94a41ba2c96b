"""The items of finished campaigns, moved out of campaign_items into archived_items.

campaign_items then holds the items of running and recent campaigns only, so its indexes and
the statements on it (generation, the sender's claims, unsubscribes skipping open items)
cost the same after a hundred campaigns as after one. A campaign is archived in chunks, each
one transaction that moves its rows and adds them to the campaign's `archived_counts`: a
SIGKILL between two leaves a campaign whose counts are still exact (archived + not yet
moved), and archiving it again goes on where it stopped. An archived item keeps its id,
address, campaign and status: a late bounce still finds it (see the bounce processor).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asyncpg.pool import Pool, PoolConnectionProxy

from mailroom_common.campaign_counts import item_counts
from mailroom_common.campaign_lifecycle import FINAL_STATUSES
from mailroom_common.events import OPEN_STATUSES

# One chunk, in address order over campaign_items_one_per_address (campaign_id, lower(email)):
# each chunk reads only its own rows. {after} is empty for the first chunk. `= ANY(ARRAY(...))`
# deletes through the primary key (`IN (SELECT ...)` may hash-join a scan of the whole table).
MOVE_CHUNK = """
WITH moved AS (
    DELETE FROM campaign_items WHERE id = ANY(ARRAY(
        SELECT id FROM campaign_items WHERE campaign_id = $1 {after}
        ORDER BY lower(email) LIMIT $2))
    RETURNING id, campaign_id, contact_id, email, status, bounce_kind, smtp_code, sent_at
), archived AS (
    INSERT INTO archived_items
        (id, campaign_id, contact_id, email, status, bounce_kind, smtp_code, sent_at)
    SELECT id, campaign_id, contact_id, email, status, bounce_kind, smtp_code, sent_at
    FROM moved
), by_status AS (
    SELECT status, count(*) AS n FROM moved GROUP BY status
)
UPDATE campaigns c SET archived_counts = (
    SELECT coalesce(jsonb_object_agg(status, n), '{{}}'::jsonb) FROM (
        SELECT status, sum(n) AS n FROM (
            SELECT e.key AS status, e.value::bigint AS n
            FROM jsonb_each_text(coalesce(c.archived_counts, '{{}}'::jsonb)) e
            UNION ALL
            SELECT status, n FROM by_status
        ) s GROUP BY status
    ) t)
WHERE c.id = $1
RETURNING (SELECT coalesce(sum(n), 0) FROM by_status)::bigint AS moved,
          (SELECT max(lower(email)) FROM moved) AS last_address
"""
FIRST_CHUNK = MOVE_CHUNK.format(after="")
NEXT_CHUNK = MOVE_CHUNK.format(after="AND lower(email) > $3")

# Every item moved: the campaign is archived. Its item_pages rows stay: one per thousand
# items, and nothing reads the pages of a campaign that has ended.
FINISH = """
UPDATE campaigns SET archived_at = now(), archived_counts = coalesce(archived_counts, '{}')
WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM campaign_items WHERE campaign_id = $1)
RETURNING id
"""

# A late bounce of an archived item: the item and the campaign's counts change together.
BOUNCE_ARCHIVED = """
WITH changed AS (
    UPDATE archived_items SET status = 'bounced',
           bounce_kind = CASE WHEN status = 'bounced' AND bounce_kind = 'hard'
                              THEN 'hard' ELSE $2 END,
           smtp_code = COALESCE($3, smtp_code)
    WHERE id = $1 AND status = ANY($4::text[])
    RETURNING campaign_id
)
UPDATE campaigns SET archived_counts =
    (CASE WHEN coalesce((archived_counts ->> $5)::bigint, 0) > 1
          THEN archived_counts || jsonb_build_object($5::text, (archived_counts ->> $5)::bigint - 1)
          ELSE archived_counts - $5::text END)
    || jsonb_build_object('bounced', coalesce((archived_counts ->> 'bounced')::bigint, 0) + 1)
WHERE id IN (SELECT campaign_id FROM changed) AND $5::text <> 'bounced'
"""


class ArchiveRefused(ValueError):
    """A campaign that cannot be archived (yet); str() says what a person can do."""


@dataclass
class ArchiveResult:
    campaign_id: int
    moved: int = 0
    finished: bool = False
    counts: dict[str, int] = field(default_factory=dict)


async def _lock_archivable(conn: PoolConnectionProxy, campaign_id: int, force: bool) -> bool:
    """Lock the campaign row; False when it is archived already, ArchiveRefused when it
    cannot be."""
    row = await conn.fetchrow(
        "SELECT status, archived_at FROM campaigns WHERE id = $1 FOR UPDATE", campaign_id
    )
    if row is None:
        raise ArchiveRefused(f"no campaign {campaign_id}")
    if row["archived_at"] is not None:
        return False
    if row["status"] not in FINAL_STATUSES:
        raise ArchiveRefused(
            f"campaign {campaign_id} is {row['status']}: only a completed, cancelled or failed"
            f" campaign can be archived (wait for it to end, or cancel it first:"
            f" mailroom campaign cancel {campaign_id})"
        )
    if not force:
        counts = await item_counts(conn, campaign_id)
        open_items = {status: counts[status] for status in OPEN_STATUSES if counts.get(status)}
        if open_items:
            found = ", ".join(f"{n} {status}" for status, n in open_items.items())
            raise ArchiveRefused(
                f"campaign {campaign_id} still has items in flight ({found}): their results"
                " are on their way; archive it in a few minutes, or with --force to archive"
                " them as they are (a result that arrives later is then dropped)"
            )
    return True


async def archive_campaign(
    pool: Pool,
    campaign_id: int,
    chunk_items: int,
    force: bool = False,
    stopping: asyncio.Event | None = None,
    progress: Callable[[int], Any] | None = None,
) -> ArchiveResult:
    """Move the campaign's items to archived_items, `chunk_items` per transaction.
    Idempotent: an archived campaign is left as it is, a half-archived one is finished.
    Stops between two chunks when `stopping` is set (finished stays False)."""
    result = ArchiveResult(campaign_id)
    after: str | None = None
    while stopping is None or not stopping.is_set():
        async with pool.acquire() as conn, conn.transaction():
            if not await _lock_archivable(conn, campaign_id, force):
                result.finished = True
                break
            if after is None:
                row = await conn.fetchrow(FIRST_CHUNK, campaign_id, chunk_items)
            else:
                row = await conn.fetchrow(NEXT_CHUNK, campaign_id, chunk_items, after)
            assert row is not None
            moved = int(row["moved"])
            done = False
            if moved < chunk_items:
                done = await conn.fetchval(FINISH, campaign_id) is not None
        result.moved += moved
        if progress is not None and moved:
            progress(moved)
        if done:
            result.finished = True
            break
        if moved < chunk_items:
            if moved == 0 and after is None:
                raise RuntimeError(f"campaign {campaign_id}: items left that no chunk moves")
            after = None  # the end of the addresses: once more from the start for any left
        else:
            after = row["last_address"]
    result.counts = await item_counts(pool, campaign_id)
    return result


async def due_for_archive(pool: Pool, after_days: int, limit: int = 10) -> list[int]:
    """Finished campaigns that ended more than `after_days` days ago and are not archived."""
    rows = await pool.fetch(
        "SELECT id FROM campaigns WHERE status = ANY($1::text[]) AND archived_at IS NULL"
        " AND completed_at < now() - make_interval(days => $2) ORDER BY completed_at, id"
        " LIMIT $3",
        list(FINAL_STATUSES),
        after_days,
        limit,
    )
    return [r["id"] for r in rows]


async def bounce_archived_item(
    conn: PoolConnectionProxy,
    item_id: int,
    old_status: str,
    kind: str,
    smtp_code: int | None,
    bounceable: tuple[str, ...],
) -> None:
    await conn.execute(BOUNCE_ARCHIVED, item_id, kind, smtp_code, list(bounceable), old_status)
