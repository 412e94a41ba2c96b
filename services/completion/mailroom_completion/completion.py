"""Marks a campaign completed once generation is done and no item is left open."""

from __future__ import annotations

import logging

from mailroom_common.archive import item_counts
from mailroom_common.events import CampaignCompleted
from mailroom_common.metrics import CAMPAIGNS_COMPLETED
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)

COMPLETE_IF_DONE = """
UPDATE campaigns SET status = 'completed', completed_at = now()
WHERE id = $1 AND status = 'sending' AND generation_done
  AND NOT EXISTS (SELECT 1 FROM campaign_items
                  WHERE campaign_id = $1 AND status IN ('pending', 'queued', 'sending', 'retry'))
RETURNING id
"""


class CompletionTracker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def check(self, campaign_id: int) -> bool:
        completed = await self.runtime.pool.fetchval(COMPLETE_IF_DONE, campaign_id)
        if completed is None:
            return False
        counts = await item_counts(self.runtime.pool, campaign_id)
        log.info("campaign %d completed: %s", campaign_id, counts)
        CAMPAIGNS_COMPLETED.labels("completed").inc()
        await self.runtime.announce(
            CampaignCompleted(campaign_id=campaign_id, status="completed", counts=counts)
        )
        return True

    async def sweep(self) -> None:
        """Catch anything the events missed (a lost event, items failed by a give-up)."""
        ids = await self.runtime.pool.fetch(
            "SELECT id FROM campaigns WHERE status = 'sending' AND generation_done ORDER BY id"
        )
        for row in ids:
            await self.check(row["id"])
