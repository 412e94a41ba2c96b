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


class EndedCounts:
    """The items by status of ended campaigns (completed, failed, cancelled), kept for
    `seconds`: they change no more (a late bounce aside), and counting a large campaign's
    items reads all of them (about 0.3 s a million), which a page refreshed every few
    seconds must not pay for every campaign it lists."""

    def __init__(self, seconds: float = 300.0, size: int = 1000) -> None:
        self.seconds = seconds
        self.size = size
        self.kept: dict[int, tuple[float, dict[str, int]]] = {}

    def get(self, campaign_id: int) -> dict[str, int] | None:
        found = self.kept.get(campaign_id)
        if found is None or found[0] < time.monotonic() - self.seconds:
            return None
        return found[1]

    def put(self, campaign_id: int, counts: dict[str, int]) -> None:
        if len(self.kept) >= self.size:
            self.kept.clear()
        self.kept[campaign_id] = (time.monotonic(), counts)


async def campaign_progress(
    pool: Pool, limit: int, ended: EndedCounts | None = None
) -> list[dict[str, Any]]:
    """The `limit` newest campaigns: status, items by status, open and done, and the running
    counts kept on the campaign (hard bounces, complaints, unsubscribes). With `ended`, the
    items of ended campaigns are counted once per its period."""
    rows = await pool.fetch(
        "SELECT id, name, status, pause_reason, send_at, launched_at, completed_at,"
        " hard_bounces, complaints, unsubscribes FROM campaigns ORDER BY id DESC LIMIT $1",
        limit,
    )
    counts: dict[int, dict[str, int]] = {}
    to_count = []
    for row in rows:
        kept = ended.get(row["id"]) if ended is not None else None
        if kept is not None and row["status"] in ENDED:
            counts[row["id"]] = kept
        else:
            to_count.append(row["id"])
    for row in await pool.fetch(ITEM_COUNTS_OF_CAMPAIGNS, to_count):
        if row["n"]:
            counts.setdefault(row["campaign_id"], {})[row["status"]] = int(row["n"])
    if ended is not None:
        for row in rows:
            if row["status"] in ENDED and row["id"] in to_count:
                ended.put(row["id"], counts.get(row["id"], {}))
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
