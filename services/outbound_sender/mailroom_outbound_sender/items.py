"""The sender's statements, one repository per item table: `CampaignItems` (campaign_items,
of one campaign) and `AutoresponderItems` (autoresponder_items). Both tables have the same
states, transition trigger and SMTP columns; each repository writes its statements out in
full, with no SQL text put together at run time (docs/architecture.md says why two tables
and not one with a kind).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from asyncpg import Record
from asyncpg.pool import Pool, PoolConnectionProxy
from mailroom_common import campaign_lifecycle
from mailroom_common.campaign_lifecycle import Connection
from mailroom_common.metrics import AUTORESPONDER_DUE_TO_SENT_SECONDS
from prometheus_client import Counter

from mailroom_outbound_sender.smtp_pool import Outcome

SMTP_SUPPRESSIONS = Counter(
    "mailroom_smtp_suppressions_total",
    "Addresses suppressed by the sender: refused for good at send time (a hard bounce).",
)


@dataclass(frozen=True)
class SyncBounce:
    """A hard bounce at send time: the item (campaign or autoresponder), its address
    (lower-cased), the reply's RFC 3463 status and the reply."""

    item_id: int
    email: str
    status: str | None
    reply: str


@dataclass(frozen=True)
class ChunkState:
    """A chunk's items still open, and whether their campaign sends now (an autoresponder's
    always do)."""

    open_ids: list[int]
    sends: bool


@dataclass(frozen=True)
class Claim:
    """A chunk's claim: the items claimed (id -> tries before this one, as PostgreSQL counts
    them), those whose address is their email's recipient, and whether the campaign sent at
    the claim (it claims nothing otherwise)."""

    claimed: dict[int, int]
    matching: set[int]
    sends: bool


class ItemRepository(Protocol):
    """What the sender does with one table's items."""

    async def release_in_flight(self, conn: Connection, ids: list[int], ours: list[int]) -> None:
        """A redelivered batch's items still `sending` (not those this process is sending,
        `ours`) were in flight when a sender stopped: `retry`."""

    async def suppress(self, conn: Connection, ids: list[int]) -> list[int]:
        """Open items whose address is suppressed: `suppressed`. Their ids."""

    async def open_items(self, conn: Connection, ids: list[int]) -> ChunkState: ...

    async def claim(self, conn: Connection, ids: list[int], recipients: list[str]) -> Claim:
        """Open items (pending, queued, retry) -> `sending`, one try more, if the address
        of the item is the recipient given with it."""

    async def record(self, conn: Connection, outcomes: list[Outcome]) -> list[SyncBounce]:
        """The outcomes of items `sending`; an item refused because of the account (not its
        recipient) gives its try back; one whose address was refused for good fails as a hard
        bounce, recorded and its address suppressed. Those hard bounces."""

    async def give_up(self, conn: Connection, ids: list[int], reason: str) -> None:
        """Items not yet finished: `failed`, with the reason."""


# --- campaign_items -----------------------------------------------------------------------

# A redelivered batch was taken by a sender that stopped without settling it: its items
# still 'sending' were in flight then (maybe delivered, maybe not) and are tried again.
# Not those this process is still sending ($2): their results are on their way.
CAMPAIGN_RELEASE_IN_FLIGHT = """
UPDATE campaign_items SET status = 'retry', error = 'in flight when a sender stopped'
WHERE id = ANY($1) AND status = 'sending' AND NOT id = ANY($2)
"""

CAMPAIGN_SUPPRESS = """
UPDATE campaign_items i SET status = 'suppressed', error = 'address suppressed: ' || s.reason
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
# read through the primary key alone (see CAMPAIGN_CLAIM).
CAMPAIGN_SKIP_UNSUBSCRIBED = """
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

# $3: campaign_lifecycle.SENDING_STATUSES.
CAMPAIGN_OPEN_ITEMS = """
SELECT array(SELECT id FROM campaign_items
             WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry')) AS open_ids,
       EXISTS (SELECT 1 FROM campaigns WHERE id = $2::bigint AND status = ANY($3::text[]))
           AS sends
"""

# Only while the campaign sends ($4: campaign_lifecycle.SENDING_STATUSES): a pause stops a
# batch between two chunks. Only items of the batch's campaign whose address is the email's
# envelope recipient are claimed; `matching` tells the sender which emails of the chunk are
# genuine.
# Through the primary key only, whatever the planner's statistics say: a campaign generated
# since the last ANALYZE looks empty to it, and it then read every item of the campaign (by
# campaign_id) and every open item (campaign_items_open) per chunk. Hence the materialized
# `chunk`, `= ANY(ARRAY(...))`, and the open statuses written as NOT IN (the same set: an IN
# list would let the planner scan the partial index of open items instead).
CAMPAIGN_CLAIM = """
WITH chunk AS MATERIALIZED (
    SELECT id, email, campaign_id FROM campaign_items WHERE id = ANY($1::bigint[])),
matching AS (
    SELECT i.id FROM chunk i
    JOIN unnest($1::bigint[], $3::text[]) AS w(id, recipient)
      ON i.id = w.id AND lower(i.email) = lower(w.recipient) AND i.campaign_id = $2::bigint),
campaign AS (
    SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $2::bigint AND status = ANY($4::text[]))
        AS sends),
claimed AS (
    UPDATE campaign_items SET status = 'sending', attempts = attempts + 1
    WHERE id = ANY(ARRAY(SELECT id FROM matching))
      AND status NOT IN ('sending', 'sent', 'failed', 'suppressed', 'skipped', 'bounced')
      AND (SELECT sends FROM campaign)
    RETURNING id, attempts)
SELECT array(SELECT id FROM claimed ORDER BY id) AS claimed,
       array(SELECT attempts FROM claimed ORDER BY id) AS attempts,
       array(SELECT id FROM matching) AS matching,
       (SELECT sends FROM campaign) AS sends
"""

# An item refused because of the account (not its recipient), or throttled by the relay,
# gives its try back; one whose address was refused for good (`bounced`, see smtp_pool) fails
# as a hard bounce. The campaign counts its attempts (final answers) and since when the
# account has refused all its sends (a throttling reply is an answer, not a refusal), for the
# circuit breaker (mailroom_completion.breaker). The hard bounces' ids and addresses.
CAMPAIGN_RECORD = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::bool[], $6::bool[],
                         $7::bool[])
        AS r(id, status, code, reply, gives_try_back, bounced, account_problem)),
recorded AS (
    UPDATE campaign_items i SET status = r.status, smtp_code = r.code, smtp_reply = r.reply,
           sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE i.sent_at END,
           attempts = i.attempts - CASE WHEN r.gives_try_back THEN 1 ELSE 0 END,
           bounce_kind = CASE WHEN r.bounced THEN 'hard' ELSE i.bounce_kind END,
           error = CASE WHEN r.bounced THEN 'hard bounce at send time' ELSE i.error END
    FROM r
    WHERE i.id = r.id AND i.status = 'sending'
    RETURNING i.id, lower(i.email) AS email, r.status, r.account_problem, r.bounced),
counted AS (
    UPDATE campaigns SET
        delivery_attempts = delivery_attempts
            + (SELECT count(*) FROM recorded WHERE status <> 'retry'),
        account_failing_since = CASE
            WHEN EXISTS (SELECT 1 FROM recorded WHERE NOT account_problem) THEN NULL
            ELSE coalesce(account_failing_since, now()) END
    WHERE id = $8::bigint AND EXISTS (SELECT 1 FROM recorded))
SELECT id, email FROM recorded WHERE bounced
"""

# Hard bounces at send time, recorded as the bounce processor records a proven hard bounce
# (records.py): a bounces row (source smtp, no bounce message) and the address suppressed.
CAMPAIGN_BOUNCES = """
WITH b AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
        AS b(id, email, status, reply)),
suppressed AS (
    INSERT INTO suppressions (email, reason, detail)
    SELECT DISTINCT ON (email) email, 'hard_bounce', left(concat_ws(' ', status, reply), 500)
    FROM b ORDER BY email
    ON CONFLICT (email) DO NOTHING
    RETURNING email),
recorded AS (
    INSERT INTO bounces (item_id, campaign_id, email, kind, action, status, diagnostic,
                         suppressed, source)
    SELECT id, $5::bigint, email, 'hard', 'failed', status, reply, true, 'smtp' FROM b)
SELECT count(*) FROM suppressed
"""

CAMPAIGN_GIVE_UP = """
UPDATE campaign_items SET status = 'failed', error = $2
WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry', 'sending')
"""


@dataclass(frozen=True)
class CampaignItems:
    """The items of one campaign: claimed only while it sends, parked when it does not."""

    campaign_id: int

    async def release_in_flight(self, conn: Connection, ids: list[int], ours: list[int]) -> None:
        await conn.execute(CAMPAIGN_RELEASE_IN_FLIGHT, ids, ours)

    async def suppress(self, conn: Connection, ids: list[int]) -> list[int]:
        return [r["id"] for r in await conn.fetch(CAMPAIGN_SUPPRESS, ids)]

    async def skip_unsubscribed(self, conn: Connection, ids: list[int]) -> list[int]:
        """Open items whose address left every list of the campaign: `skipped`. Their ids."""
        rows = await conn.fetch(CAMPAIGN_SKIP_UNSUBSCRIBED, ids, self.campaign_id)
        return [r["id"] for r in rows]

    async def open_items(self, conn: Connection, ids: list[int]) -> ChunkState:
        row = await conn.fetchrow(
            CAMPAIGN_OPEN_ITEMS,
            ids,
            self.campaign_id,
            list(campaign_lifecycle.SENDING_STATUSES),
        )
        assert row is not None
        return ChunkState(open_ids=list(row["open_ids"]), sends=row["sends"])

    async def claim(self, conn: Connection, ids: list[int], recipients: list[str]) -> Claim:
        row = await conn.fetchrow(
            CAMPAIGN_CLAIM,
            ids,
            self.campaign_id,
            recipients,
            list(campaign_lifecycle.SENDING_STATUSES),
        )
        assert row is not None
        return Claim(
            claimed=_tries_before(row["claimed"], row["attempts"]),
            matching=set(row["matching"]),
            sends=row["sends"],
        )

    async def park(self, conn: Connection, ids: list[int]) -> list[int]:
        """These items, if open and not being sent, wait in the database until the campaign
        sends again (campaign_lifecycle.park_items)."""
        return await campaign_lifecycle.park_items(conn, self.campaign_id, ids)

    async def record(self, conn: Connection, outcomes: list[Outcome]) -> list[SyncBounce]:
        if not any(o.bounced for o in outcomes):  # one statement: no transaction around it
            await conn.fetch(CAMPAIGN_RECORD, *_result_columns(outcomes), self.campaign_id)
            return []
        async with _transaction(conn) as tx:
            rows = await tx.fetch(CAMPAIGN_RECORD, *_result_columns(outcomes), self.campaign_id)
            bounces = _sync_bounces(rows, outcomes)
            if bounces:
                columns = _bounce_columns(bounces)
                new = await tx.fetchval(CAMPAIGN_BOUNCES, *columns, self.campaign_id)
                SMTP_SUPPRESSIONS.inc(new)
        return bounces

    async def give_up(self, conn: Connection, ids: list[int], reason: str) -> None:
        await conn.execute(CAMPAIGN_GIVE_UP, ids, reason)


# --- autoresponder_items ------------------------------------------------------------------
# The same statements as the campaign's (their comments are there), for items that belong to
# no campaign: nothing to check of a campaign, nothing to park.

AUTORESPONDER_RELEASE_IN_FLIGHT = """
UPDATE autoresponder_items SET status = 'retry', error = 'in flight when a sender stopped'
WHERE id = ANY($1) AND status = 'sending' AND NOT id = ANY($2)
"""

AUTORESPONDER_SUPPRESS = """
UPDATE autoresponder_items i SET status = 'suppressed', error = 'address suppressed: ' || s.reason
FROM suppressions s
WHERE i.id = ANY($1) AND s.email = lower(i.email)
  AND i.status IN ('pending', 'queued', 'retry')
RETURNING i.id
"""

AUTORESPONDER_OPEN_ITEMS = """
SELECT array(SELECT id FROM autoresponder_items
             WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry')) AS open_ids
"""

AUTORESPONDER_CLAIM = """
WITH chunk AS MATERIALIZED (
    SELECT id, email FROM autoresponder_items WHERE id = ANY($1::bigint[])),
matching AS (
    SELECT i.id FROM chunk i
    JOIN unnest($1::bigint[], $2::text[]) AS w(id, recipient)
      ON i.id = w.id AND lower(i.email) = lower(w.recipient)),
claimed AS (
    UPDATE autoresponder_items SET status = 'sending', attempts = attempts + 1
    WHERE id = ANY(ARRAY(SELECT id FROM matching))
      AND status NOT IN ('sending', 'sent', 'failed', 'suppressed', 'skipped', 'bounced')
    RETURNING id, attempts)
SELECT array(SELECT id FROM claimed ORDER BY id) AS claimed,
       array(SELECT attempts FROM claimed ORDER BY id) AS attempts,
       array(SELECT id FROM matching) AS matching
"""

AUTORESPONDER_RECORD = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::bool[], $6::bool[],
                         $7::bool[])
        AS r(id, status, code, reply, gives_try_back, bounced, account_problem))
UPDATE autoresponder_items i SET status = r.status, smtp_code = r.code, smtp_reply = r.reply,
       sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE i.sent_at END,
       attempts = i.attempts - CASE WHEN r.gives_try_back THEN 1 ELSE 0 END,
       bounce_kind = CASE WHEN r.bounced THEN 'hard' ELSE i.bounce_kind END,
       error = CASE WHEN r.bounced THEN 'hard bounce at send time' ELSE i.error END
FROM r
WHERE i.id = r.id AND i.status = 'sending'
RETURNING i.id, lower(i.email) AS email, r.bounced,
          CASE WHEN i.status = 'sent' THEN extract(epoch FROM i.sent_at - i.due_at)::float8 END
              AS due_to_sent
"""

AUTORESPONDER_BOUNCES = """
WITH b AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
        AS b(id, email, status, reply)),
suppressed AS (
    INSERT INTO suppressions (email, reason, detail)
    SELECT DISTINCT ON (email) email, 'hard_bounce', left(concat_ws(' ', status, reply), 500)
    FROM b ORDER BY email
    ON CONFLICT (email) DO NOTHING
    RETURNING email),
recorded AS (
    INSERT INTO bounces (autoresponder_item_id, email, kind, action, status, diagnostic,
                         suppressed, source)
    SELECT id, email, 'hard', 'failed', status, reply, true, 'smtp' FROM b)
SELECT count(*) FROM suppressed
"""

AUTORESPONDER_GIVE_UP = """
UPDATE autoresponder_items SET status = 'failed', error = $2
WHERE id = ANY($1) AND status IN ('pending', 'queued', 'retry', 'sending')
"""


@dataclass(frozen=True)
class AutoresponderItems:
    """Autoresponder items: they belong to no campaign, so they always send."""

    async def release_in_flight(self, conn: Connection, ids: list[int], ours: list[int]) -> None:
        await conn.execute(AUTORESPONDER_RELEASE_IN_FLIGHT, ids, ours)

    async def suppress(self, conn: Connection, ids: list[int]) -> list[int]:
        return [r["id"] for r in await conn.fetch(AUTORESPONDER_SUPPRESS, ids)]

    async def open_items(self, conn: Connection, ids: list[int]) -> ChunkState:
        open_ids = await conn.fetchval(AUTORESPONDER_OPEN_ITEMS, ids)
        return ChunkState(open_ids=list(open_ids), sends=True)

    async def claim(self, conn: Connection, ids: list[int], recipients: list[str]) -> Claim:
        row = await conn.fetchrow(AUTORESPONDER_CLAIM, ids, recipients)
        assert row is not None
        return Claim(
            claimed=_tries_before(row["claimed"], row["attempts"]),
            matching=set(row["matching"]),
            sends=True,
        )

    async def record(self, conn: Connection, outcomes: list[Outcome]) -> list[SyncBounce]:
        async with _transaction(conn) as tx:
            rows = await tx.fetch(AUTORESPONDER_RECORD, *_result_columns(outcomes))
            bounces = _sync_bounces([r for r in rows if r["bounced"]], outcomes)
            if bounces:
                new = await tx.fetchval(AUTORESPONDER_BOUNCES, *_bounce_columns(bounces))
                SMTP_SUPPRESSIONS.inc(new)
        for row in rows:
            if row["due_to_sent"] is not None:
                AUTORESPONDER_DUE_TO_SENT_SECONDS.observe(max(0.0, row["due_to_sent"]))
        return bounces

    async def give_up(self, conn: Connection, ids: list[int], reason: str) -> None:
        await conn.execute(AUTORESPONDER_GIVE_UP, ids, reason)


def _tries_before(ids: list[int], attempts: list[int]) -> dict[int, int]:
    """Claimed id -> its tries before this one (the claim counted this one)."""
    return {item_id: tries - 1 for item_id, tries in zip(ids, attempts, strict=True)}


def _result_columns(
    outcomes: list[Outcome],
) -> tuple[list[int], list[str], list[int | None], list[str], list[bool], list[bool], list[bool]]:
    return (
        [o.item_id for o in outcomes],
        [o.status for o in outcomes],
        [o.smtp_code for o in outcomes],
        [o.smtp_reply[:2000] for o in outcomes],
        [o.account_problem or o.throttled for o in outcomes],
        [o.bounced for o in outcomes],
        [o.account_problem for o in outcomes],
    )


def _sync_bounces(rows: list[Record], outcomes: list[Outcome]) -> list[SyncBounce]:
    """The recorded items (`rows`: id, email) whose outcome is a hard bounce."""
    by_id = {o.item_id: o for o in outcomes}
    return [
        SyncBounce(r["id"], r["email"], by_id[r["id"]].enhanced_status, by_id[r["id"]].smtp_reply)
        for r in rows
    ]


def _bounce_columns(
    bounces: list[SyncBounce],
) -> tuple[list[int], list[str], list[str | None], list[str]]:
    return (
        [b.item_id for b in bounces],
        [b.email for b in bounces],
        [b.status for b in bounces],
        [b.reply[:2000] for b in bounces],
    )


@contextlib.asynccontextmanager
async def _transaction(conn: Connection) -> AsyncIterator[PoolConnectionProxy]:
    if isinstance(conn, Pool):
        async with conn.acquire() as acquired, acquired.transaction():
            yield acquired
    else:
        async with conn.transaction():
            yield conn
