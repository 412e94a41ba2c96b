"""Archives the items of campaigns that ended more than MAILROOM_ARCHIVE_AFTER_DAYS ago."""

from __future__ import annotations

import logging

from mailroom_common.archive import ArchiveRefused, archive_campaign, due_for_archive
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)


class Retention:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def sweep(self) -> None:
        """Archive every due campaign, one chunk per transaction; stops between two chunks
        when the process stops (the next sweep, here or in another replica, goes on)."""
        settings = self.runtime.settings
        if settings.archive_after_days == 0:
            return
        stopping = self.runtime.stopping
        while not stopping.is_set():
            due = await due_for_archive(self.runtime.pool, settings.archive_after_days)
            if not due:
                return
            for campaign_id in due:
                if stopping.is_set():
                    return
                await self._archive(campaign_id)

    async def _archive(self, campaign_id: int) -> None:
        # days after its end, an item still open is lost (a crashed sender's): archived as is
        try:
            result = await archive_campaign(
                self.runtime.pool,
                campaign_id,
                self.runtime.settings.archive_chunk_items,
                force=True,
                stopping=self.runtime.stopping,
            )
        except ArchiveRefused as refused:  # changed under our feet (deleted): nothing to do
            log.info("campaign %d not archived: %s", campaign_id, refused)
            return
        if result.finished:
            log.info(
                "campaign %d archived (%d items moved): %s",
                campaign_id,
                result.moved,
                result.counts,
            )
