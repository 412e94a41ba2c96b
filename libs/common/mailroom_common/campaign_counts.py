"""A campaign's items by status: the one query every count of a campaign comes from."""

from __future__ import annotations

from asyncpg.pool import Pool, PoolConnectionProxy

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
