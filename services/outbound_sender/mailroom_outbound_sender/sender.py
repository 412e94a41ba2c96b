"""Delivers outbound batches: claim, rate-limit, send, record, retry later or fail.

Each item is claimed (pending/queued/retry -> sending) before it is sent, so a batch published
twice sends each email once. Pending counts too: the batch may arrive before the message
processor has marked its items queued. A batch redelivered after a crash first releases its
items still `sending` for another try: those are the in-flight messages, the only ones that
may reach a recipient twice.

Campaign batches claim and record campaign_items; autoresponder batches (the priority lane)
autoresponder_items, with the same statuses, and their retries go back to the priority lane.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from mailroom_common.events import (
    DeliveryResult,
    DeliveryResults,
    ItemKind,
    OutboundBatch,
    OutboundEmail,
    SettingsChanged,
)
from mailroom_common.metrics import DELIVERIES
from mailroom_common.rate_limit import SharedRateLimiter
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import SmtpAccount

from mailroom_outbound_sender.smtp_pool import Outcome, SmtpPool

log = logging.getLogger(__name__)

SUPPRESS_ITEMS = """
UPDATE {items} i SET status = 'suppressed', error = 'address suppressed: ' || s.reason
FROM suppressions s
WHERE i.id = ANY($1) AND s.email = lower(i.email)
  AND i.status IN ('pending', 'queued', 'retry')
RETURNING i.id
"""

# Not while the campaign is paused: a pause stops a batch between two chunks.
CLAIM_ITEMS = """
WITH claimed AS (
    UPDATE {items} SET status = 'sending', attempts = attempts + 1
    WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry')
      AND NOT EXISTS (SELECT 1 FROM campaigns WHERE id = $2::bigint AND status = 'paused')
    RETURNING id)
SELECT coalesce(array_agg(id), '{}') FROM claimed
"""

# A redelivered batch was taken by a sender that stopped without settling it: its items
# still 'sending' were in flight then (maybe delivered, maybe not) and are tried again.
RELEASE_IN_FLIGHT = """
UPDATE {items} SET status = 'retry', error = 'in flight when a sender stopped'
WHERE id = ANY($1) AND status = 'sending'
"""

OPEN_ITEMS = """
SELECT array(SELECT id FROM {items}
             WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry')) AS open_ids,
       EXISTS (SELECT 1 FROM campaigns WHERE id = $2::bigint AND status = 'paused') AS paused
"""

RECORD_RESULTS = """
UPDATE {items} i SET status = r.status, smtp_code = r.code, smtp_reply = r.reply,
       sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE i.sent_at END
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[]) AS r(id, status, code, reply)
WHERE i.id = r.id AND i.status = 'sending'
"""

GIVE_UP = """
UPDATE {items} SET status = 'failed', error = $2
WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry', 'sending')
"""

RATE_LIMIT_NAME = "smtp:global"


@dataclass(frozen=True)
class ItemQueries:
    """The statements above for one item table."""

    suppress: str
    claim: str
    release_in_flight: str
    open_items: str
    record: str
    give_up: str

    @classmethod
    def for_table(cls, items: str) -> ItemQueries:
        return cls(
            *(
                q.replace("{items}", items)
                for q in (
                    SUPPRESS_ITEMS,
                    CLAIM_ITEMS,
                    RELEASE_IN_FLIGHT,
                    OPEN_ITEMS,
                    RECORD_RESULTS,
                    GIVE_UP,
                )
            )
        )


QUERIES: dict[ItemKind, ItemQueries] = {
    "campaign": ItemQueries.for_table("campaign_items"),
    "autoresponder": ItemQueries.for_table("autoresponder_items"),
}


class OutboundSender:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limiter = SharedRateLimiter(runtime.pool, RATE_LIMIT_NAME)
        self.account = SmtpAccount()
        self.smtp = SmtpPool(self.account)

        self.account_version = -1

    async def start(self) -> None:
        await self.reload_account()

    async def stop(self) -> None:
        await self.smtp.close()

    async def reload_account(self) -> None:
        """Use the current SMTP account: chunks started from now on go through new
        connections; sends in flight finish on the old ones, which then close."""
        account, version = await self.runtime.settings_store.load(SmtpAccount)
        if version == self.account_version:
            return
        old_pool = self.smtp
        self.account, self.account_version = account, version
        self.smtp = SmtpPool(account)
        await old_pool.close()
        log.info(
            "SMTP account version %d: %s:%d (%s)",
            version,
            account.host,
            account.port,
            account.security,
        )

    async def on_settings_changed(self, change: SettingsChanged) -> None:
        if change.group == "smtp":
            await self.reload_account()

    def _chunk_size(self) -> int:
        """Emails claimed, sent and recorded together. Small, so that a pause or cancel stops
        a batch at its next chunk and a crash leaves few results unrecorded (the in-flight
        window): a few per connection, and a quarter-second of the send rate at most."""
        per_connections = 4 * self.account.pool_size
        rate = self.account.messages_per_second
        if rate <= 0:
            return per_connections
        return max(1, min(per_connections, int(rate // 4)))

    async def handle_batch(self, batch: OutboundBatch, redelivered: bool) -> None:
        runtime = self.runtime
        queries = QUERIES[batch.kind]
        ids = [email.item_id for email in batch.emails]
        if redelivered:
            await runtime.pool.execute(queries.release_in_flight, ids)
        suppressed = [r["id"] for r in await runtime.pool.fetch(queries.suppress, ids)]
        results = [DeliveryResult(item_id=i, status="suppressed") for i in suppressed]
        chunk = self._chunk_size()
        for start in range(0, len(batch.emails), chunk):
            part = batch.emails[start : start + chunk]
            part_ids = [e.item_id for e in part]
            state = await runtime.pool.fetchrow(queries.open_items, part_ids, batch.campaign_id)
            assert state is not None
            if state["paused"]:
                await self._hold(batch, start)
                break
            if not state["open_ids"]:
                continue  # sent already, or skipped by a cancel: no tokens spent on them
            await self.limiter.take(len(state["open_ids"]), self.account.messages_per_second)
            claimed = set(await runtime.pool.fetchval(queries.claim, part_ids, batch.campaign_id))
            if not claimed:
                if await self._paused(batch):
                    await self._hold(batch, start)
                    break
                continue
            sending = [e for e in part if e.item_id in claimed]
            outcomes = await self.smtp.send_all(sending)
            outcomes = await self._schedule_retries(batch, sending, outcomes)
            await self._record(batch.kind, outcomes)
            results.extend(
                DeliveryResult(
                    item_id=o.item_id,
                    status=o.status,
                    smtp_code=o.smtp_code,
                    smtp_reply=o.smtp_reply,
                )
                for o in outcomes
            )
        if results:
            await runtime.announce(
                DeliveryResults(kind=batch.kind, campaign_id=batch.campaign_id, results=results)
            )

    async def _schedule_retries(
        self, batch: OutboundBatch, sent: list[OutboundEmail], outcomes: list[Outcome]
    ) -> list[Outcome]:
        """Publish temporary failures to their back-off tier; past the last tier they fail."""
        by_id = {e.item_id: e for e in sent}
        tiers: dict[int, list[OutboundEmail]] = defaultdict(list)
        final: list[Outcome] = []
        for outcome in outcomes:
            if outcome.status != "retry":
                final.append(outcome)
                continue
            email = by_id[outcome.item_id]
            delay = self.runtime.topology.retry_tier(email.attempt)
            if delay is None:
                final.append(
                    Outcome(
                        outcome.item_id,
                        "failed",
                        outcome.smtp_code,
                        f"gave up after {email.attempt + 1} attempts: {outcome.smtp_reply}",
                    )
                )
                continue
            tiers[delay].append(email.model_copy(update={"attempt": email.attempt + 1}))
            final.append(outcome)
        priority = batch.kind == "autoresponder"  # back to the priority lane
        for delay, emails in tiers.items():
            await self.runtime.send_work(
                OutboundBatch(kind=batch.kind, campaign_id=batch.campaign_id, emails=emails),
                routing_key=self.runtime.topology.retry_routing_key(delay, priority),
            )
        return final

    async def _paused(self, batch: OutboundBatch) -> bool:
        if batch.campaign_id is None:
            return False
        status = await self.runtime.pool.fetchval(
            "SELECT status FROM campaigns WHERE id = $1", batch.campaign_id
        )
        return bool(status == "paused")

    async def _hold(self, batch: OutboundBatch, start: int = 0) -> None:
        """The rest of a paused campaign's batch (from `start`) waits out the first back-off
        tier, then is looked at again."""
        delay = self.runtime.topology.retry_delays_ms[0]
        rest = batch.model_copy(update={"emails": batch.emails[start:]})
        await self.runtime.send_work(rest, routing_key=f"retry.{delay}")

    async def _record(self, kind: ItemKind, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        await self.runtime.pool.execute(
            QUERIES[kind].record,
            [o.item_id for o in outcomes],
            [o.status for o in outcomes],
            [o.smtp_code for o in outcomes],
            [o.smtp_reply[:2000] for o in outcomes],
        )
        for outcome in outcomes:
            DELIVERIES.labels(outcome.status).inc()

    async def give_up_batch(self, batch: OutboundBatch, reason: str) -> None:
        await self.runtime.pool.execute(
            QUERIES[batch.kind].give_up,
            [e.item_id for e in batch.emails],
            f"could not be sent: {reason}"[:2000],
        )
