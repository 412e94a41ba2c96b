"""A campaign's items by status: the one query every count of a campaign comes from (and its
form for several campaigns at once, for the lists of `mailroom campaign list` and the console)."""

from __future__ import annotations

import time
from typing import Any

from asyncpg.pool import Pool, PoolConnectionProxy

from mailroom_common.events import OPEN_STATUSES

ENDED = ("completed", "failed", "cancelled")  # campaign_lifecycle.FINAL_STATUSES

# A campaign's items by status: those moved to archived_items plus those still in place.
ITEM_COUNTS = """
SELECT status, sum(n)::bigint AS n FROM (
    SELECT status, count(*) AS n FROM campaign_items WHERE campaign_id = $1 GROUP BY status
    UNION ALL
    SELECT e.key, e.value::bigint FROM campaigns c, jsonb_each_text(c.archived_counts) e
    WHERE c.id = $1
) t GROUP BY status
"""


async def item_counts(conn: Pool | PoolConnectionProxy, campaign_id: int) -> dict[str, int]:
    """A campaign's items by status, archived or not."""
    rows = await conn.fetch(ITEM_COUNTS, campaign_id)
    return {row["status"]: int(row["n"]) for row in rows if row["n"]}


# ITEM_COUNTS for the campaigns $1 in one query
ITEM_COUNTS_OF_CAMPAIGNS = """
SELECT campaign_id, status, sum(n)::bigint AS n FROM (
    SELECT campaign_id, status, count(*) AS n FROM campaign_items
    WHERE campaign_id = ANY($1::bigint[]) GROUP BY campaign_id, status
    UNION ALL
    SELECT c.id, e.key, e.value::bigint FROM campaigns c, jsonb_each_text(c.archived_counts) e
    WHERE c.id = ANY($1::bigint[])
) t GROUP BY campaign_id, status
"""


class KeptCounts:
    """Campaigns' items by status, each kept for `seconds` after it was counted: counting a
    large campaign's items reads all of them (0.4 s a million at EXPLAIN ANALYZE), which a
    page refreshed every few seconds, in every open tab, must not pay each time. Ended
    campaigns change no more (a late bounce aside): minutes; running ones: seconds."""

    def __init__(self, seconds: float = 300.0, size: int = 1000) -> None:
        self.seconds = seconds
        self.size = size
        # campaign id: (monotonic time, wall-clock ms, counts) of the count
        self.kept: dict[int, tuple[float, int, dict[str, int]]] = {}

    def found(self, campaign_id: int) -> tuple[int, dict[str, int]] | None:
        """(when it was counted, wall-clock ms; the counts) while still kept, else None."""
        found = self.kept.get(campaign_id)
        if found is None or found[0] < time.monotonic() - self.seconds:
            return None
        return found[1], found[2]

    def get(self, campaign_id: int) -> dict[str, int] | None:
        found = self.found(campaign_id)
        return None if found is None else found[1]

    def put(self, campaign_id: int, counts: dict[str, int], counted_at_ms: int = 0) -> None:
        if len(self.kept) >= self.size:
            self.kept.clear()
        self.kept[campaign_id] = (time.monotonic(), counted_at_ms or _now_ms(), counts)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def campaign_progress(
    pool: Pool,
    limit: int,
    ended: KeptCounts | None = None,
    running: KeptCounts | None = None,
) -> list[dict[str, Any]]:
    """The `limit` newest campaigns: status, items by status, open and done, when those were
    counted (counted_at_ms), and the running counts kept on the campaign (hard bounces,
    complaints, unsubscribes). The items of a campaign found in `ended` (an ended one) or
    `running` (any other) are not counted again; those counted are kept there."""
    rows = await pool.fetch(
        "SELECT id, name, status, pause_reason, send_at, launched_at, completed_at,"
        " hard_bounces, complaints, unsubscribes FROM campaigns ORDER BY id DESC LIMIT $1",
        limit,
    )
    counts: dict[int, tuple[int, dict[str, int]]] = {}
    to_count = []
    for row in rows:
        kept = ended if row["status"] in ENDED else running
        found = kept.found(row["id"]) if kept is not None else None
        if found is not None:
            counts[row["id"]] = found
        else:
            to_count.append(row["id"])
    counted_at = _now_ms()
    fresh: dict[int, dict[str, int]] = {campaign_id: {} for campaign_id in to_count}
    for row in await pool.fetch(ITEM_COUNTS_OF_CAMPAIGNS, to_count):
        if row["n"]:
            fresh[row["campaign_id"]][row["status"]] = int(row["n"])
    for row in rows:
        if row["id"] in fresh:
            counts[row["id"]] = (counted_at, fresh[row["id"]])
            kept = ended if row["status"] in ENDED else running
            if kept is not None:
                kept.put(row["id"], fresh[row["id"]], counted_at)
    listed = []
    for row in rows:
        when, mine = counts[row["id"]]
        total = sum(mine.values())
        open_items = sum(mine.get(s, 0) for s in OPEN_STATUSES)
        listed.append(
            {
                **{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()},
                "items": total,
                "open": open_items,
                "done": total - open_items,
                "counts": mine,
                "counted_at_ms": when,
            }
        )
    return listed
