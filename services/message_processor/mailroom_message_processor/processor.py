"""Renders a page of campaign items into outbound batches.

Items move pending -> queued only after their batch is confirmed by the broker, so a crash
loses nothing: the page is redelivered and the items still pending are rendered again (a
batch published twice is harmless: the sender claims each item once).

Compiling and rendering run in a worker thread (``asyncio.to_thread``): a slow template delays
its own page, never the event loop. A template that hits a rendering limit (time, size) for
``LIMIT_FAILURES`` recipients of a page fails its campaign with the reason (the page's batches
published before then were already on their way, as earlier pages' were).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from asyncpg import Record
from mailroom_common import campaign_lifecycle
from mailroom_common.events import (
    DeliveryResult,
    DeliveryResults,
    ItemsPage,
    OutboundBatch,
    OutboundEmail,
)
from mailroom_common.intake import Rejected
from mailroom_common.metrics import EMAILS_RENDERED, RENDER_FAILURES
from mailroom_common.outbound import Sending, render_outbound, sending_for
from mailroom_common.rendering import CompiledMessage, RecipientProblem, TemplateProblem
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import MarketingSettings, SmtpAccount

from mailroom_message_processor.campaign_content import compile_campaign

log = logging.getLogger(__name__)

LIMIT_FAILURES = 3  # recipients of one page for whom the template hit a rendering limit

# The page's rows through the primary key alone: given `campaign_id` and `status` the planner
# also read the campaign's whole partial index of open items (a million entries, 35 ms, for
# every page of a 1M campaign).
PENDING_ITEMS = """
WITH page AS MATERIALIZED (
    SELECT id, email, contact_id, campaign_id, status FROM campaign_items WHERE id = ANY($1))
SELECT i.id, i.email, i.contact_id, c.id IS NOT NULL AS contact_exists,
       c.first_name, c.last_name, c.attributes
FROM page i LEFT JOIN contacts c ON c.id = i.contact_id
WHERE i.campaign_id = $2 AND i.status = 'pending'
ORDER BY i.id
"""

# Only while the campaign sends, its row share-locked: a pause either waits for this statement
# (and the sender then parks the batch's queued items) or comes first (the items stay pending
# for the page to be handed over again). Read unlocked, a pause committed as this statement
# began let it mark queued the items a sender had just parked: queued for ever.
MARK_QUEUED = """
UPDATE campaign_items SET status = 'queued'
WHERE id = ANY($1) AND status = 'pending'
  AND EXISTS (SELECT 1 FROM campaigns WHERE id = $2 AND status = ANY($3::text[]) FOR SHARE)
"""

FAIL_ITEMS = """
UPDATE campaign_items i SET status = 'failed', error = f.error
FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
WHERE i.id = f.id AND i.status = 'pending'
"""


@dataclass
class _Limits:
    """Recipients of a page for whom the template hit a rendering limit, and the last
    such problem."""

    hit: int = 0
    last: str = ""


class MessageProcessor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._compiled: dict[tuple[int, int], CompiledMessage] = {}

    async def _marketing(self) -> tuple[MarketingSettings, int]:
        return await self.runtime.settings_store.load(MarketingSettings)

    async def handle_page(self, page: ItemsPage) -> None:
        runtime = self.runtime
        campaign = await runtime.pool.fetchrow(
            "SELECT * FROM campaigns WHERE id = $1", page.campaign_id
        )
        if campaign is None:
            raise Rejected(f"unknown campaign {page.campaign_id}")
        if not await self._sends(page, campaign["status"]):
            return
        marketing, version = await self._marketing()
        try:
            compiled = await asyncio.to_thread(self._compiled_for, campaign, marketing, version)
        except TemplateProblem as problem:
            await self._fail_campaign(campaign["id"], str(problem))
            return
        account, _ = await runtime.settings_store.load(SmtpAccount)
        sending = sending_for(account, campaign["from_email"], runtime.settings)
        rows = await runtime.pool.fetch(PENDING_ITEMS, page.item_ids, page.campaign_id)
        # one batch rendered at a time, published, then the next: a page never holds all
        # its rendered emails at once (a page of 1,000 emails of 22 KB would be 22 MB,
        # twice over while they are encoded)
        failures: dict[int, str] = {}
        limits = _Limits()
        batch_size = runtime.settings.batch_size
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            emails = await asyncio.to_thread(
                self._render, campaign, compiled, marketing, sending, chunk, failures, limits
            )
            if limits.hit >= LIMIT_FAILURES:
                await self._fail_campaign(
                    campaign["id"],
                    f"the template hit a rendering limit for {limits.hit} recipients"
                    f" ({limits.last}); make its loops and values smaller",
                )
                return
            if not emails:
                continue
            if not await self._still_sends(page):
                return  # paused (or ended) while this page was rendered
            await runtime.send_work(
                OutboundBatch(kind="campaign", campaign_id=campaign["id"], emails=emails)
            )
            await runtime.pool.execute(
                MARK_QUEUED,
                [e.item_id for e in emails],
                campaign["id"],
                list(campaign_lifecycle.SENDING_STATUSES),
            )
            del emails  # not kept while the next batch is rendered
        if failures:
            await runtime.pool.execute(FAIL_ITEMS, list(failures), list(failures.values()))
            await runtime.announce(
                DeliveryResults(
                    kind="campaign",
                    campaign_id=campaign["id"],
                    results=[
                        DeliveryResult(item_id=i, status="failed", smtp_reply=None)
                        for i in failures
                    ],
                )
            )

    async def _still_sends(self, page: ItemsPage) -> bool:
        """Checked before each batch is published: a page of a campaign paused since it was
        taken is parked at its next batch, not published to the end."""
        status = await self.runtime.pool.fetchval(
            "SELECT status FROM campaigns WHERE id = $1", page.campaign_id
        )
        return await self._sends(page, status)

    async def _sends(self, page: ItemsPage, status: str | None) -> bool:
        """Whether the page's campaign, in `status`, sends: a paused one's page is parked (the
        item generator hands it over again after the resume); an ended one's open items were
        closed with it."""
        if campaign_lifecycle.sends(status):
            return True
        if status == "paused":
            await campaign_lifecycle.park_page(self.runtime.pool, page.page_id)
        return False

    def _compiled_for(
        self, campaign: Record, marketing: MarketingSettings, version: int
    ) -> CompiledMessage:
        key = (campaign["id"], version)
        compiled = self._compiled.get(key)
        if compiled is None:
            if len(self._compiled) > 64:
                self._compiled.clear()
            compiled = self._compiled[key] = compile_campaign(campaign, marketing)
        return compiled

    def _render(
        self,
        campaign: Record,
        compiled: CompiledMessage,
        marketing: MarketingSettings,
        sending: Sending,
        rows: list[Record],
        failures: dict[int, str],
        limits: _Limits,
    ) -> list[OutboundEmail]:
        """The emails of `rows`; those that failed go to `failures` (id -> reason), and
        those that hit a rendering limit (time, size: the template's fault, not the
        recipient's) are counted in `limits`."""
        signer = self.runtime.signer
        base_url = marketing.public_base_url.rstrip("/")
        source = f"c{campaign['id']}"
        emails: list[OutboundEmail] = []
        for row in rows:
            if not row["contact_exists"]:
                # deleted while the audience was snapshotted: fail it, or it stays open forever
                failures[row["id"]] = "the contact was deleted before its message was rendered"
                continue
            try:
                email = render_outbound(
                    compiled,
                    row,
                    item_ref=str(row["id"]),
                    source=source,
                    base_url=base_url,
                    signer=signer,
                    sending=sending,
                )
            except RecipientProblem as problem:
                RENDER_FAILURES.labels("recipient").inc()
                failures[row["id"]] = f"rendering failed: {problem}"
                if problem.limit:
                    limits.hit += 1
                    limits.last = str(problem)
                    if limits.hit >= LIMIT_FAILURES:
                        break  # the campaign fails
                continue
            emails.append(email)
        EMAILS_RENDERED.labels("campaign").inc(len(emails))
        return emails

    async def _fail_campaign(self, campaign_id: int, reason: str) -> None:
        RENDER_FAILURES.labels("campaign").inc()
        await campaign_lifecycle.fail(self.runtime, campaign_id, reason)

    async def give_up_page(self, page: ItemsPage, reason: str) -> None:
        await self.runtime.pool.execute(
            "UPDATE campaign_items SET status = 'failed', error = $2"
            " WHERE id = ANY($1) AND status = 'pending'",
            page.item_ids,
            f"could not be rendered: {reason}"[:2000],
        )
