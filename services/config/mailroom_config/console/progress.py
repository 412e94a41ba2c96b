"""The campaign list every open console tab refreshes. Each campaign's items are counted at
most once per period for all tabs (counting a running campaign reads all its items: 0.4 s a
million at EXPLAIN ANALYZE), a refresh arriving while a count runs waits for that count; the
campaigns themselves (status, counters, new ones) are read fresh every time."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncpg.pool import Pool
from mailroom_common.campaign_counts import KeptCounts, campaign_progress

RUNNING_SECONDS = 2.5  # under the pages' 3-s refresh: one tab sees a new count each time


class SharedProgress:
    def __init__(self, limit: int, running_seconds: float = RUNNING_SECONDS) -> None:
        self.limit = limit
        self.ended = KeptCounts()
        self.running = KeptCounts(running_seconds)
        self.lock = asyncio.Lock()

    async def campaigns(self, pool: Pool) -> list[dict[str, Any]]:
        async with self.lock:
            return await campaign_progress(pool, self.limit, self.ended, self.running)
