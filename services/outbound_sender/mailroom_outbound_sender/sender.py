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

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from asyncpg.pool import PoolConnectionProxy
from mailroom_common.broker import PRIORITY_ROUTING_KEY
from mailroom_common.events import (
    DeliveryResult,
    DeliveryResults,
    ItemKind,
    OutboundBatch,
    OutboundEmail,
    SettingsChanged,
)
from mailroom_common.intake import Rejected
from mailroom_common.metrics import DELIVERIES
from mailroom_common.rate_limit import SharedRateLimiter
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import SmtpAccount
from prometheus_client import Counter

from mailroom_outbound_sender.patience import broker_unavailable, database_unavailable, patiently
from mailroom_outbound_sender.recipients import to_header_problem
from mailroom_outbound_sender.smtp_pool import Outcome, SmtpPool

log = logging.getLogger(__name__)

T = TypeVar("T")

FORGED_EMAILS = Counter(
    "mailroom_outbound_forged_emails_total",
    "Emails dropped from outbound batches: not addressed to their item's recipient.",
    ["kind"],
)

SUPPRESS_ITEMS = """
UPDATE {items} i SET status = 'suppressed', error = 'address suppressed: ' || s.reason
FROM suppressions s
WHERE i.id = ANY($1) AND s.email = lower(i.email)
  AND i.status IN ('pending', 'queued', 'retry')
RETURNING i.id
"""

# Campaign items whose address left the lists the campaign goes to: unsubscribed from one of
# them, subscribed to none. The subscriptions service skips the open items of an address as it
# unsubscribes it, but not items that were being created at that moment (a snapshot reads
# the lists as they were when it began).
# Item by item from its address (contacts by lower(email), then that contact's memberships),
# never from the lists: the planner, given the lists first, read every membership of a
# million-address list for each chunk (32 s for 10 items with a generic plan); the chunk is
# read through the primary key alone (see CLAIM_ITEMS).
SKIP_UNSUBSCRIBED = """
WITH chunk AS MATERIALIZED (
    SELECT id, email, campaign_id, status FROM campaign_items WHERE id = ANY($1::bigint[])),
left_lists AS (
    SELECT c.id FROM chunk c
    CROSS JOIN LATERAL (
        SELECT bool_or(m.status = 'unsubscribed') AS left_one,
               bool_or(m.status = 'subscribed') AS still_on
        FROM (SELECT k.id FROM contacts k WHERE lower(k.email) = lower(c.email) OFFSET 0) k
        CROSS JOIN LATERAL (
            SELECT m.status FROM list_memberships m
            WHERE m.contact_id = k.id
              AND m.list_id = ANY(ARRAY(SELECT list_id FROM campaign_lists WHERE campaign_id = $2))
            OFFSET 0) m
    ) s
    WHERE c.campaign_id = $2 AND c.status IN ('pending', 'queued', 'retry')
      AND s.left_one AND NOT s.still_on)
UPDATE campaign_items i SET status = 'skipped', error = 'unsubscribed from the list before sending'
FROM left_lists l
WHERE i.id = l.id AND i.status IN ('pending', 'queued', 'retry')
RETURNING i.id
"""

# Not while the campaign is paused: a pause stops a batch between two chunks. Only items whose
# address is the email's envelope recipient (and, for campaigns, of the batch's campaign) are
# claimed; `matching` tells the sender which emails of the chunk are genuine.
# Through the primary key only, whatever the planner's statistics say: a campaign generated
# since the last ANALYZE looks empty to it, and it then read every item of the campaign (by
# campaign_id) and every open item (campaign_items_open) per chunk. Hence the materialized
# `chunk`, `= ANY(ARRAY(...))`, and the open statuses written as NOT IN (the same set: an
# IN list would let the planner scan the partial index of open items instead).
CLAIM_ITEMS = """
WITH chunk AS MATERIALIZED (
    SELECT id, email{chunk_campaign} FROM {items} WHERE id = ANY($1::bigint[])),
matching AS (
    SELECT i.id FROM chunk i
    JOIN unnest($1::bigint[], $3::text[]) AS w(id, recipient)
      ON i.id = w.id AND lower(i.email) = lower(w.recipient) {same_campaign}),
claimed AS (
    UPDATE {items} SET status = 'sending', attempts = attempts + 1
    WHERE id = ANY(ARRAY(SELECT id FROM matching))
      AND status NOT IN ('sending', 'sent', 'failed', 'suppressed', 'skipped', 'bounced')
      AND NOT EXISTS (SELECT 1 FROM campaigns WHERE id = $2::bigint AND status = 'paused')
    RETURNING id)
SELECT array(SELECT id FROM claimed) AS claimed, array(SELECT id FROM matching) AS matching
"""

# A redelivered batch was taken by a sender that stopped without settling it: its items
# still 'sending' were in flight then (maybe delivered, maybe not) and are tried again.
# Not those this process is still sending ($2): their results are on their way.
RELEASE_IN_FLIGHT = """
UPDATE {items} SET status = 'retry', error = 'in flight when a sender stopped'
WHERE id = ANY($1) AND status = 'sending' AND NOT id = ANY($2)
"""

OPEN_ITEMS = """
SELECT array(SELECT id FROM {items}
             WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry')) AS open_ids,
       EXISTS (SELECT 1 FROM campaigns WHERE id = $2::bigint AND status = 'paused') AS paused
"""

# An item refused because of the account (not its recipient) gives its try back.
RECORD_RESULTS = """
UPDATE {items} i SET status = r.status, smtp_code = r.code, smtp_reply = r.reply,
       sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE i.sent_at END,
       attempts = i.attempts - CASE WHEN r.account_problem THEN 1 ELSE 0 END
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::bool[])
     AS r(id, status, code, reply, account_problem)
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
    def for_table(cls, items: str, same_campaign: str = "") -> ItemQueries:
        return cls(
            *(
                q.replace("{items}", items)
                .replace("{same_campaign}", same_campaign)
                .replace("{chunk_campaign}", ", campaign_id" if same_campaign else "")
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
    "campaign": ItemQueries.for_table("campaign_items", "AND i.campaign_id = $2::bigint"),
    "autoresponder": ItemQueries.for_table("autoresponder_items"),
}


class OutboundSender:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limiter = SharedRateLimiter(runtime.pool, RATE_LIMIT_NAME)
        self.account = SmtpAccount()
        self.smtp = SmtpPool(self.account)
        self.account_version = -1
        # item id -> the task sending it (claimed, result not yet recorded)
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        # the item ids of each batch being delivered -> its task
        self._running: dict[tuple[int, ...], asyncio.Task[None]] = {}

    async def start(self) -> None:
        await self.reload_account()

    async def stop(self) -> None:
        """Let the batches in flight finish (their results recorded), then close the pool."""
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=self.runtime.settings.graceful_timeout_seconds)
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
        per_connections = self.runtime.settings.chunk_per_connection * self.account.pool_size
        rate = self.account.messages_per_second
        if rate <= 0:
            return per_connections
        return max(1, min(per_connections, int(rate // 4)))

    async def handle_batch(self, batch: OutboundBatch, redelivered: bool) -> None:
        """Deliver `batch` in a task of its own: when the broker connection drops (and the
        consumer's task is cancelled) the batch still finishes, its results recorded and its
        retries published once the broker is back; its redelivered copy then waits for it
        and finds the work done."""
        key = tuple(e.item_id for e in batch.emails)
        earlier = self._running.get(key)
        if earlier is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(earlier)
        task = asyncio.create_task(self._deliver(batch, redelivered))
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        await asyncio.shield(task)

    def _finished(self, key: tuple[int, ...], task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled() and task.exception() is not None:
            log.debug("batch of %d emails ended with %r", len(key), task.exception())

    async def _deliver(self, batch: OutboundBatch, redelivered: bool) -> None:
        pool = self.runtime.pool
        queries = QUERIES[batch.kind]
        ids = [email.item_id for email in batch.emails]
        if redelivered:
            ours = [i for i in ids if i in self.in_flight]
            await self._database(
                "releasing in-flight items",
                lambda: pool.execute(queries.release_in_flight, ids, ours),
            )
        rows = await self._database("suppressing", lambda: pool.fetch(queries.suppress, ids))
        results = [DeliveryResult(item_id=r["id"], status="suppressed") for r in rows]
        if batch.kind == "campaign":
            rows = await self._database(
                "skipping unsubscribed",
                lambda: pool.fetch(SKIP_UNSUBSCRIBED, ids, batch.campaign_id),
            )
            results += [DeliveryResult(item_id=r["id"], status="skipped") for r in rows]

        emails, forged = self._with_genuine_headers(batch)
        chunk = self._chunk_size()
        for start in range(0, len(emails), chunk):
            if self.runtime.stopping.is_set():
                await self._hand_back(batch, emails[start:])
                break
            part = emails[start : start + chunk]
            state = await self._database(
                "checking items",
                pool.fetchrow,
                queries.open_items,
                [e.item_id for e in part],
                batch.campaign_id,
            )
            assert state is not None
            if state["paused"]:
                await self._hold(batch, emails[start:])
                break
            if not state["open_ids"]:
                continue  # sent already, or skipped by a cancel: no tokens spent on them
            await self._database(
                "taking rate tokens",
                self.limiter.take,
                len(state["open_ids"]),
                self.account.messages_per_second,
            )
            claimed, matching = await self._claim(batch, part)
            forged += self._drop_forged(batch, [e for e in part if e.item_id not in matching])
            if not claimed:
                if await self._paused(batch):
                    await self._hold(batch, emails[start:])
                    break
                continue
            outcomes = await self._send_chunk(batch, [e for e in part if e.item_id in claimed])
            results.extend(
                DeliveryResult(
                    item_id=o.item_id,
                    status=o.status,
                    smtp_code=o.smtp_code,
                    smtp_reply=o.smtp_reply,
                )
                for o in outcomes
            )
            if any(o.account_problem for o in outcomes):
                # the account is refused: the rest of the batch waits with its items
                await self._hold(batch, emails[start + chunk :], self._account_delay())
                break
        if forged == len(batch.emails):
            raise Rejected(
                f"no email of this batch is addressed to its item's recipient ({forged} forged)"
            )
        if results:
            await self._announce(
                DeliveryResults(kind=batch.kind, campaign_id=batch.campaign_id, results=results)
            )

    def _with_genuine_headers(self, batch: OutboundBatch) -> tuple[list[OutboundEmail], int]:
        genuine: list[OutboundEmail] = []
        forged: list[OutboundEmail] = []
        problems: list[str] = []
        for email in batch.emails:
            problem = to_header_problem(email)
            if problem is None:
                genuine.append(email)
            else:
                forged.append(email)
                problems.append(problem)
        if forged:
            self._drop_forged(batch, forged, f"the To header: {problems[0]}")
        return genuine, len(forged)

    def _drop_forged(
        self,
        batch: OutboundBatch,
        emails: list[OutboundEmail],
        problem: str = "the envelope recipient is not the item's address",
    ) -> int:
        """Emails that do not go to their item's recipient are neither sent nor recorded."""
        if not emails:
            return 0
        log.warning(
            "dropped %d forged emails from a %s batch (campaign %s), items %s: %s",
            len(emails),
            batch.kind,
            batch.campaign_id,
            ", ".join(str(e.item_id) for e in emails[:10]) + (" ..." if len(emails) > 10 else ""),
            problem,
        )
        FORGED_EMAILS.labels(batch.kind).inc(len(emails))
        return len(emails)

    async def _claim(
        self, batch: OutboundBatch, part: list[OutboundEmail]
    ) -> tuple[set[int], set[int]]:
        """Claim the chunk's open items whose address is their email's recipient: (claimed,
        genuine). The connection is checked first, so a database restart is waited out
        before the claim; a claim cut off half-way raises (its batch comes back, and the
        redelivery releases what it may have claimed)."""
        pool = self.runtime.pool
        connection = await self._database("connecting", self._checked_connection)
        try:
            row = await connection.fetchrow(
                QUERIES[batch.kind].claim,
                [e.item_id for e in part],
                batch.campaign_id,
                [e.recipient for e in part],
            )
        finally:
            await pool.release(connection)
        assert row is not None
        return set(row["claimed"]), set(row["matching"])

    async def _checked_connection(self) -> PoolConnectionProxy:
        connection = await self.runtime.pool.acquire()
        try:
            await connection.fetchval("SELECT 1")
        except BaseException:
            await self.runtime.pool.release(connection)
            raise
        return connection

    async def _send_chunk(
        self, batch: OutboundBatch, sending: list[OutboundEmail]
    ) -> list[Outcome]:
        """Send, record at once (waiting out a database restart), then publish the retries:
        a result known is never thrown away."""
        task = asyncio.current_task()
        assert task is not None
        for email in sending:
            self.in_flight[email.item_id] = task
        try:
            outcomes = await self.smtp.send_all(sending)
            final, retries = self._plan_retries(sending, outcomes)
            await self._database(
                "recording delivery results", lambda: self._record(batch.kind, final)
            )
        finally:
            for email in sending:
                self.in_flight.pop(email.item_id, None)
        priority = batch.kind == "autoresponder"  # back to the priority lane
        for delay, emails in retries.items():
            retry = OutboundBatch(kind=batch.kind, campaign_id=batch.campaign_id, emails=emails)
            routing_key = self.runtime.topology.retry_routing_key(delay, priority)
            await self._broker(
                "publishing retries",
                functools.partial(self.runtime.send_work, retry, routing_key=routing_key),
            )
        return final

    def _account_delay(self) -> int:
        return self.runtime.topology.retry_delays_ms[0]

    def _plan_retries(
        self, sent: list[OutboundEmail], outcomes: list[Outcome]
    ) -> tuple[list[Outcome], dict[int, list[OutboundEmail]]]:
        """Temporary failures go to their back-off tier; past the last tier they fail. An
        account problem waits in the first tier and keeps its tries."""
        by_id = {e.item_id: e for e in sent}
        tiers: dict[int, list[OutboundEmail]] = defaultdict(list)
        final: list[Outcome] = []
        for outcome in outcomes:
            if outcome.status != "retry":
                final.append(outcome)
                continue
            email = by_id[outcome.item_id]
            if outcome.account_problem:
                tiers[self._account_delay()].append(email)
                final.append(outcome)
                continue
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
        return final, tiers

    async def _paused(self, batch: OutboundBatch) -> bool:
        if batch.campaign_id is None:
            return False
        status = await self._database(
            "checking the campaign",
            lambda: self.runtime.pool.fetchval(
                "SELECT status FROM campaigns WHERE id = $1", batch.campaign_id
            ),
        )
        return bool(status == "paused")

    async def _hold(
        self, batch: OutboundBatch, emails: list[OutboundEmail], delay: int | None = None
    ) -> None:
        """These emails of the batch (a paused campaign's, or waiting for the account to be
        fixed) wait out a back-off tier, then are looked at again."""
        if not emails:
            return
        delay = self.runtime.topology.retry_delays_ms[0] if delay is None else delay
        rest = batch.model_copy(update={"emails": emails})
        priority = batch.kind == "autoresponder"
        routing_key = self.runtime.topology.retry_routing_key(delay, priority)
        await self._broker(
            "holding a batch", lambda: self.runtime.send_work(rest, routing_key=routing_key)
        )

    async def _hand_back(self, batch: OutboundBatch, emails: list[OutboundEmail]) -> None:
        """A stopping sender ends its batch at the chunk boundary: the emails not yet claimed
        go back to their queue at once, for a running sender (or this one once restarted),
        so a drain never outlasts the graceful timeout with a slow server."""
        rest = batch.model_copy(update={"emails": emails})
        routing_key = PRIORITY_ROUTING_KEY if batch.kind == "autoresponder" else None
        await self._broker(
            "handing back a batch", lambda: self.runtime.send_work(rest, routing_key=routing_key)
        )
        log.info("stopping: %d emails of a batch handed back to the queue", len(emails))

    async def _announce(self, results: DeliveryResults) -> None:
        """delivery.results is news, the items are recorded: a broker gone for good loses
        the news, never the results."""
        try:
            await self._broker(
                "announcing delivery results", lambda: self.runtime.announce(results)
            )
        except Exception as error:
            log.warning(
                "delivery results of %d items not announced: %r", len(results.results), error
            )

    async def _record(self, kind: ItemKind, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        await self.runtime.pool.execute(
            QUERIES[kind].record,
            [o.item_id for o in outcomes],
            [o.status for o in outcomes],
            [o.smtp_code for o in outcomes],
            [o.smtp_reply[:2000] for o in outcomes],
            [o.account_problem for o in outcomes],
        )
        for outcome in outcomes:
            DELIVERIES.labels(outcome.status).inc()

    @staticmethod
    async def _database(what: str, call: Callable[..., Awaitable[T]], *args: object) -> T:
        return await patiently(what, functools.partial(call, *args), database_unavailable)

    @staticmethod
    async def _broker(what: str, call: Callable[..., Awaitable[T]], *args: object) -> T:
        return await patiently(what, functools.partial(call, *args), broker_unavailable)

    async def give_up_batch(self, batch: OutboundBatch, reason: str) -> None:
        await self.runtime.pool.execute(
            QUERIES[batch.kind].give_up,
            [e.item_id for e in batch.emails],
            f"could not be sent: {reason}"[:2000],
        )
