"""A campaign's items by status: the one query every count of a campaign comes from (and its
form for several campaigns at once, for the lists of `mailroom campaign list` and the console)."""

from __future__ import annotations

from typing import Any

from asyncpg.pool import Pool, PoolConnectionProxy

from mailroom_common.events import OPEN_STATUSES

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


async def campaign_progress(pool: Pool, limit: int) -> list[dict[str, Any]]:
    """The `limit` newest campaigns: status, items by status, open and done, and the running
    counts kept on the campaign (hard bounces, complaints, unsubscribes)."""
    rows = await pool.fetch(
        "SELECT id, name, status, pause_reason, send_at, launched_at, completed_at,"
        " hard_bounces, complaints, unsubscribes FROM campaigns ORDER BY id DESC LIMIT $1",
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
