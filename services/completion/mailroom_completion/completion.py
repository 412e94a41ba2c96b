"""Marks a campaign completed once generation is done and no item is left open."""

from __future__ import annotations

from mailroom_common import campaign_lifecycle
from mailroom_common.logs import log_context
from mailroom_common.runtime import Runtime


class CompletionTracker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def check(self, campaign_id: int) -> bool:
        return await campaign_lifecycle.complete_if_done(self.runtime, campaign_id)

    async def sweep(self) -> None:
        """Catch anything the events missed (a lost event, items failed by a give-up)."""
        ids = await self.runtime.pool.fetch(
            "SELECT id FROM campaigns WHERE status = 'sending' AND generation_done ORDER BY id"
        )
        for row in ids:
            with log_context(campaign_id=row["id"]):  # what it logs names the campaign
                await self.check(row["id"])
