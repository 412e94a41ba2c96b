"""What the benchmark reads from PostgreSQL: the campaign's timings (from its own rows) and
the work the database did for it (pg_stat_database of the run's database, before and after)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

STAT_COLUMNS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")

TIMINGS = """
SELECT c.status,
       extract(epoch FROM c.generated_at - c.launched_at)::float8 AS generate_seconds,
       extract(epoch FROM c.completed_at - c.launched_at)::float8 AS seconds,
       (SELECT count(*) FROM campaign_items i WHERE i.campaign_id = c.id) AS items,
       s.sent, s.p50, s.p99
FROM campaigns c,
LATERAL (
    SELECT count(*) AS sent,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::float8 AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::float8 AS p99
    FROM (SELECT extract(epoch FROM i.sent_at - c.launched_at) AS lag
          FROM campaign_items i
          WHERE i.campaign_id = c.id AND i.status = 'sent') AS sent_items
) AS s
WHERE c.id = $1
"""


@dataclass(frozen=True)
class CampaignTimings:
    status: str
    items: int
    sent: int
    generate_seconds: float | None  # launched_at -> generated_at
    seconds: float | None  # launched_at -> completed_at
    p50: float | None  # launched_at -> sent_at (SMTP accepted), median over sent items
    p99: float | None

    @property
    def messages_per_second(self) -> float | None:
        return self.sent / self.seconds if self.seconds else None


async def campaign_timings(database_url: str, campaign_id: int) -> CampaignTimings:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(TIMINGS, campaign_id)
    finally:
        await conn.close()
    assert row is not None, f"no campaign {campaign_id}"
    return CampaignTimings(**dict(row))


async def database_stats(admin_url: str, database: str) -> dict[str, int]:
    """The run's database's counters, read from another database (`postgres`) so that reading
    them costs the run's database nothing. Each statement here is its own snapshot."""
    conn = await asyncpg.connect(admin_url)
    try:
        row = await conn.fetchrow(
            f"SELECT {', '.join(STAT_COLUMNS)} FROM pg_stat_database WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    return {k: int(row[k]) for k in STAT_COLUMNS} if row else dict.fromkeys(STAT_COLUMNS, 0)


class CampaignWatcher:
    """Reads the campaign's status on one connection to the run's database, and counts its
    own transactions (one per statement) so they can be taken out of the database's counts."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.conn: asyncpg.Connection | None = None
        self.transactions = 0

    async def __aenter__(self) -> CampaignWatcher:
        self.conn = await asyncpg.connect(self.database_url)
        self.transactions += 1  # asyncpg's introspection at connect
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def status(self, campaign_id: int) -> str:
        assert self.conn is not None
        self.transactions += 1
        status: str = await self.conn.fetchval(
            "SELECT status FROM campaigns WHERE id = $1", campaign_id
        )
        return status


async def backend_pids(admin_url: str, database: str) -> list[int]:
    """The PostgreSQL server processes serving the run's database (this machine's server)."""
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
    return [r["pid"] for r in rows]
