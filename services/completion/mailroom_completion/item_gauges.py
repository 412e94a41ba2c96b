"""mailroom_campaign_items: the items of running campaigns by status, counted in one query.

Every completion replica reports the same figures: aggregate them with max(), not sum()."""

from __future__ import annotations

from typing import get_args

from mailroom_common.events import ItemStatus
from mailroom_common.metrics import CAMPAIGN_ITEMS
from mailroom_common.runtime import Runtime

RUNNING_ITEMS_BY_STATUS = """
SELECT i.status, count(*) AS n
FROM campaigns c JOIN campaign_items i ON i.campaign_id = c.id
WHERE c.status IN ('scheduled', 'generating', 'sending', 'paused')
GROUP BY i.status
"""


async def update_item_gauges(runtime: Runtime) -> None:
    counts = {row["status"]: row["n"] for row in await runtime.pool.fetch(RUNNING_ITEMS_BY_STATUS)}
    for status in get_args(ItemStatus):
        CAMPAIGN_ITEMS.labels(status).set(counts.get(status, 0))
