"""Delivers outbound batches: claim, rate-limit, send, record, retry later or fail.

Each item is claimed (pending/queued/retry -> sending) before it is sent, so a batch published
twice sends each email once. Pending counts too: the batch may arrive before the message
processor has marked its items queued. A batch redelivered after a crash first releases its
items still `sending` for another try: those are the in-flight messages, the only ones that
may reach a recipient twice.

A campaign's items are claimed only while it sends (campaign_lifecycle.sends). Each chunk
starts by asking whether it does: when it does not (paused), the rest of the batch is parked
in the database (its items back to pending, their pages unpublished: the item generator's
sweep hands them over again once it sends) and the message is settled; nothing is published.

Campaign batches claim and record campaign_items; autoresponder batches (the priority lane)
autoresponder_items, with the same statuses, and their retries go back to the priority lane
(items.py: one repository per table).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asyncpg.pool import PoolConnectionProxy
from mailroom_common.adaptive_rate import ACCOUNT_RATE_NAME
from mailroom_common.broker import PRIORITY_ROUTING_KEY
from mailroom_common.events import (
    BounceDetected,
    DeliveryResult,
    DeliveryResults,
    ItemKind,
    OutboundBatch,
    OutboundEmail,
    SettingsChanged,
)
from mailroom_common.intake import Rejected
from mailroom_common.metrics import DELIVERIES
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import SmtpAccount
from prometheus_client import Counter

from mailroom_outbound_sender.items import (
    AutoresponderItems,
    CampaignItems,
    Claim,
    ItemRepository,
    SyncBounce,
)
from mailroom_outbound_sender.patience import broker_unavailable, database_unavailable, patiently
from mailroom_outbound_sender.recipients import to_header_problem
from mailroom_outbound_sender.send_rate import SendRate
from mailroom_outbound_sender.smtp_pool import Outcome, SmtpPool

log = logging.getLogger(__name__)

T = TypeVar("T")

FORGED_EMAILS = Counter(
    "mailroom_outbound_forged_emails_total",
    "Emails dropped from outbound batches: not addressed to their item's recipient.",
    ["kind"],
)

RATE_LIMIT_NAME = ACCOUNT_RATE_NAME


def _bounce_detected(batch: OutboundBatch, bounce: SyncBounce) -> BounceDetected:
    """A hard bounce at send time, announced as the bounce processor announces one."""
    campaign = batch.kind == "campaign"
    return BounceDetected(
        item_id=bounce.item_id if campaign else None,
        autoresponder_item_id=None if campaign else bounce.item_id,
        campaign_id=batch.campaign_id,
        email=bounce.email,
        kind="hard",
        action="failed",
        status=bounce.status,
        suppressed=True,
    )


def items_of(batch: OutboundBatch) -> ItemRepository:
    """The repository of the batch's items."""
    if batch.kind == "autoresponder":
        return AutoresponderItems()
    if batch.campaign_id is None:
        raise Rejected("a campaign batch names no campaign")
    return CampaignItems(batch.campaign_id)


class OutboundSender:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.send_rate = SendRate(runtime.pool, RATE_LIMIT_NAME)
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
        self.send_rate.use(account)
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
        window): a few per connection, and a quarter-second of the send rate at most (the
        rate as lowered while the relay throttles)."""
        per_connections = self.runtime.settings.chunk_per_connection * self.account.pool_size
        rate = self.send_rate.current
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
        items = items_of(batch)
        ids = [email.item_id for email in batch.emails]
        if redelivered:
            ours = [i for i in ids if i in self.in_flight]
            await self._database(
                "releasing in-flight items", items.release_in_flight, pool, ids, ours
            )
        suppressed = await self._database("suppressing", items.suppress, pool, ids)
        results = [DeliveryResult(item_id=i, status="suppressed") for i in suppressed]
        if isinstance(items, CampaignItems):
            skipped = await self._database(
                "skipping unsubscribed", items.skip_unsubscribed, pool, ids
            )
            results += [DeliveryResult(item_id=i, status="skipped") for i in skipped]

        emails, forged = self._with_genuine_headers(batch)
        chunk = self._chunk_size()
        for start in range(0, len(emails), chunk):
            if self.runtime.stopping.is_set():
                await self._hand_back(batch, emails[start:])
                break
            part = emails[start : start + chunk]
            claim = await self._take_and_claim(items, part)
            if claim.sends:
                forged += self._drop_forged(
                    batch, [e for e in part if e.item_id not in claim.matching]
                )
            if not claim.sends:
                # the campaign is paused (or no longer sends): the rest of the batch waits
                # in the database, and this message is settled
                await self._park(batch, items, emails[start:])
                break
            if not claim.claimed:
                continue  # sent already, or skipped by a cancel: no tokens spent on them
            outcomes = await self._send_chunk(
                batch, items, [e for e in part if e.item_id in claim.claimed], claim.claimed
            )
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

    async def _park(
        self, batch: OutboundBatch, items: ItemRepository, emails: list[OutboundEmail]
    ) -> None:
        """The batch's campaign does not send now: these emails' items go back to pending
        and their pages are unpublished, for the item generator's sweep to hand over once
        it sends again. Nothing is published meanwhile."""
        if not isinstance(items, CampaignItems):
            raise AssertionError(f"{batch.kind} items always send")
        await self._database(
            "parking items", items.park, self.runtime.pool, [e.item_id for e in emails]
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

    async def _take_and_claim(self, items: ItemRepository, part: list[OutboundEmail]) -> Claim:
        """The chunk's rate tokens (one per open item, none for items sent or skipped
        already), then its claim. Without a rate limit the claim alone: it too claims only
        open items, and only while the campaign sends."""
        if self.send_rate.unlimited:
            return await self._claim(items, part)
        state = await self._database(
            "checking items", items.open_items, self.runtime.pool, [e.item_id for e in part]
        )
        if not (state.sends and state.open_ids):
            return Claim(claimed={}, matching=set(), sends=state.sends)
        await self._database("taking rate tokens", self.send_rate.take, len(state.open_ids))
        return await self._claim(items, part)

    async def _claim(self, items: ItemRepository, part: list[OutboundEmail]) -> Claim:
        """Claim the chunk's open items whose address is their email's recipient. The
        connection is checked first, so a database restart is waited out before the claim;
        a claim cut off half-way raises (its batch comes back, and the redelivery releases
        what it may have claimed)."""
        pool = self.runtime.pool
        connection = await self._database("connecting", self._checked_connection)
        try:
            return await items.claim(
                connection, [e.item_id for e in part], [e.recipient for e in part]
            )
        finally:
            await pool.release(connection)

    async def _checked_connection(self) -> PoolConnectionProxy:
        connection = await self.runtime.pool.acquire()
        try:
            await connection.fetchval("SELECT 1")
        except BaseException:
            await self.runtime.pool.release(connection)
            raise
        return connection

    async def _send_chunk(
        self,
        batch: OutboundBatch,
        items: ItemRepository,
        sending: list[OutboundEmail],
        tries_before: dict[int, int],
    ) -> list[Outcome]:
        """Send, record at once (waiting out a database restart), then publish the retries:
        a result known is never thrown away."""
        task = asyncio.current_task()
        assert task is not None
        for email in sending:
            self.in_flight[email.item_id] = task
        try:
            outcomes = await self.smtp.send_all(sending)
            await self._database("lowering the send rate", self.send_rate.after, outcomes)
            final, retries = self._plan_retries(sending, outcomes, tries_before)
            bounces = await self._database(
                "recording delivery results", lambda: self._record(batch.kind, items, final)
            )
        finally:
            for email in sending:
                self.in_flight.pop(email.item_id, None)
        for bounce in bounces:
            await self._announce(_bounce_detected(batch, bounce))
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
        self, sent: list[OutboundEmail], outcomes: list[Outcome], tries_before: dict[int, int]
    ) -> tuple[list[Outcome], dict[int, list[OutboundEmail]]]:
        """Temporary failures go to their back-off tier; past the last tier they fail. An
        account problem or a throttling reply waits in the first tier and keeps its tries.
        An email's tries are the item's as PostgreSQL counts them when the email counts
        fewer (rendered again after its campaign was parked, or in flight when a sender
        stopped)."""
        by_id = {
            e.item_id: e.model_copy(
                update={"attempt": max(e.attempt, tries_before.get(e.item_id, 0))}
            )
            for e in sent
        }
        tiers: dict[int, list[OutboundEmail]] = defaultdict(list)
        final: list[Outcome] = []
        for outcome in outcomes:
            if outcome.status != "retry":
                final.append(outcome)
                continue
            email = by_id[outcome.item_id]
            if outcome.account_problem or outcome.throttled:
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

    async def _hold(self, batch: OutboundBatch, emails: list[OutboundEmail], delay: int) -> None:
        """These emails of the batch (waiting for the account to be fixed) wait out a
        back-off tier, then are looked at again."""
        if not emails:
            return
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

    async def _announce(self, news: DeliveryResults | BounceDetected) -> None:
        """delivery.results and bounce.detected are news, the items are recorded: a broker
        gone for good loses the news, never the results."""
        try:
            await self._broker(
                f"announcing {news.routing_key}", lambda: self.runtime.announce(news)
            )
        except Exception as error:
            log.warning("%s not announced: %r", news.routing_key, error)

    async def _record(
        self, kind: ItemKind, items: ItemRepository, outcomes: list[Outcome]
    ) -> list[SyncBounce]:
        """Record the outcomes; the hard bounces among them (recorded, addresses suppressed)."""
        if not outcomes:
            return []
        bounces = await items.record(self.runtime.pool, outcomes)
        for outcome in outcomes:
            DELIVERIES.labels(kind, outcome.status).inc()
        return bounces

    @staticmethod
    async def _database(what: str, call: Callable[..., Awaitable[T]], *args: object) -> T:
        return await patiently(what, functools.partial(call, *args), database_unavailable)

    @staticmethod
    async def _broker(what: str, call: Callable[..., Awaitable[T]], *args: object) -> T:
        return await patiently(what, functools.partial(call, *args), broker_unavailable)

    async def give_up_batch(self, batch: OutboundBatch, reason: str) -> None:
        await items_of(batch).give_up(
            self.runtime.pool,
            [e.item_id for e in batch.emails],
            f"could not be sent: {reason}"[:2000],
        )
