"""The effects of one message, in one transaction: the processed-message row (the dedupe key),
the bounce records, the items, the suppressions; or the unparsed record.

Only proof changes a person's state: a bounce or complaint changes an item and suppresses an
address only when a VERP address or Message-ID signed with our key names the item, and then
only for that item's own recipient. Every other recipient a message names is recorded
(`matched_by` null) for a person to look at, and changes nothing: anyone can send mail to the
bounce mailbox."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncpg.pool import Pool, PoolConnectionProxy
from mailroom_common.archive import bounce_archived_item
from mailroom_common.events import BounceDetected
from mailroom_common.runtime_settings import BounceMailbox
from mailroom_common.signing import Signer

from mailroom_bounce_processor.matching import (
    HEAD_BYTES,
    Analysis,
    SignedMatch,
    provider_signed_match,
    signed_match,
)
from mailroom_bounce_processor.metrics import BOUNCES, SUPPRESSIONS, UNVERIFIED
from mailroom_bounce_processor.parser import BouncedRecipient, BounceReport
from mailroom_bounce_processor.parser.models import COMPLAINT, DELAYED, FAILED, HARD, SOFT
from mailroom_bounce_processor.webhooks.events import REPLAY_WINDOW_SECONDS, ProviderEvent

log = logging.getLogger(__name__)

_REPLY_CODE = re.compile(r"\b([245]\d\d)\b")
# items a bounce can change: the trigger allows sent/failed -> bounced (and bounced stays)
BOUNCEABLE = ("sent", "failed", "bounced")


async def announce_bounces(
    announce: Callable[[BounceDetected], Awaitable[None]],
    events: Sequence[BounceDetected],
    activity: Callable[[Sequence[BounceDetected]], Awaitable[None]] | None = None,
) -> None:
    """Count and announce recorded bounces, from the mailbox or a webhook alike: the records
    are kept, so a broker that is away loses the news, never the bounce. `activity` then
    tells the CRM's timeline, all of them in one contact.activity."""
    for event in events:
        BOUNCES.labels(event.kind, event.action or "").inc()
        try:
            await announce(event)
        except Exception as error:
            log.warning(
                "could not publish bounce.detected (%s, item %s, campaign %s): %r",
                event.kind,
                event.item_id,
                event.campaign_id,
                error,
            )
    if activity is not None and events:
        await activity(events)


@dataclass(frozen=True)
class Outcome:
    outcome: str  # bounce, not_bounce, unparsed, duplicate
    events: tuple[BounceDetected, ...] = ()


@dataclass(frozen=True)
class ProviderOutcome:
    replayed: bool = False  # the call's one-time token was seen before: nothing was done
    recorded: int = 0
    duplicates: int = 0  # events recorded by an earlier delivery of the same call
    unproven: int = 0  # recorded without proof: they changed nothing
    events: tuple[BounceDetected, ...] = ()


RECENT_SEND_DAYS = 7
"""A provider event naming only a recipient is about the item last sent to that address
within this many days (docs/bounces.md, "Provider webhooks")."""


def _clean(text: str | None, limit: int = 2000) -> str | None:
    return None if text is None else text.replace("\x00", "")[:limit]


def _json(value: dict[str, str]) -> str:
    return json.dumps({k.replace("\x00", ""): _clean(v) for k, v in value.items()})


# An item is a campaign item, archived or not, or an autoresponder item ("a<id>");
# `item_table` says which. Locked: archiving cannot move it while its bounce is recorded.
CAMPAIGN_ITEM = (
    "SELECT id, lower(email) AS email, status, sent_at, campaign_id,"
    " 'campaign_items' AS item_table FROM campaign_items WHERE id = $1 FOR UPDATE"
)
ARCHIVED_ITEM = (
    "SELECT id, lower(email) AS email, status, sent_at, campaign_id,"
    " 'archived_items' AS item_table FROM archived_items WHERE id = $1 FOR UPDATE"
)
AUTORESPONDER_ITEM = (
    "SELECT id, lower(email) AS email, status, sent_at, NULL::bigint AS campaign_id,"
    " 'autoresponder_items' AS item_table FROM autoresponder_items WHERE id = $1 FOR UPDATE"
)

# A final bounce of an item in place, one statement per table (written out, no table name
# put into SQL text): a hard bounce stays hard whatever comes after it. $6: BOUNCEABLE.
CAMPAIGN_ITEM_BOUNCED = """
UPDATE campaign_items SET status = 'bounced',
       bounce_kind = CASE WHEN status = 'bounced' AND bounce_kind = 'hard' THEN 'hard' ELSE $2 END,
       smtp_code = COALESCE($3, smtp_code), smtp_reply = COALESCE($4, smtp_reply), error = $5
WHERE id = $1 AND status = ANY($6::text[])
"""
AUTORESPONDER_ITEM_BOUNCED = """
UPDATE autoresponder_items SET status = 'bounced',
       bounce_kind = CASE WHEN status = 'bounced' AND bounce_kind = 'hard' THEN 'hard' ELSE $2 END,
       smtp_code = COALESCE($3, smtp_code), smtp_reply = COALESCE($4, smtp_reply), error = $5
WHERE id = $1 AND status = ANY($6::text[])
"""
ITEM_BOUNCED = {
    "campaign_items": CAMPAIGN_ITEM_BOUNCED,
    "autoresponder_items": AUTORESPONDER_ITEM_BOUNCED,
}


async def _item(conn: PoolConnectionProxy, item_ref: str) -> dict[str, Any] | None:
    item_id = int(item_ref.removeprefix("a"))
    queries = (AUTORESPONDER_ITEM,) if item_ref.startswith("a") else (CAMPAIGN_ITEM, ARCHIVED_ITEM)
    for query in queries:
        row = await conn.fetchrow(query, item_id)
        if row is not None:
            return dict(row)
    return None


async def _recent_item(conn: PoolConnectionProxy, email: str) -> str | None:
    """The item last sent to `email` within RECENT_SEND_DAYS, campaign ("123") or
    autoresponder ("a123"); campaign items are looked up campaign by campaign (the
    (campaign_id, lower(email)) index), among campaigns sending or ended lately."""
    campaign = await conn.fetchrow(
        "SELECT i.id, i.sent_at FROM campaigns c"
        " JOIN campaign_items i ON i.campaign_id = c.id AND lower(i.email) = $1"
        " WHERE c.launched_at IS NOT NULL AND c.archived_at IS NULL"
        " AND (c.completed_at IS NULL OR c.completed_at > now() - make_interval(days => $2))"
        " AND i.status = ANY($3::text[]) AND i.sent_at > now() - make_interval(days => $2)"
        " ORDER BY i.sent_at DESC LIMIT 1",
        email,
        RECENT_SEND_DAYS,
        list(BOUNCEABLE),
    )
    autoresponder = await conn.fetchrow(
        "SELECT id, sent_at FROM autoresponder_items WHERE lower(email) = $1"
        " AND status = ANY($3::text[]) AND sent_at > now() - make_interval(days => $2)"
        " ORDER BY sent_at DESC LIMIT 1",
        email,
        RECENT_SEND_DAYS,
        list(BOUNCEABLE),
    )
    if autoresponder is not None and (
        campaign is None or autoresponder["sent_at"] > campaign["sent_at"]
    ):
        return f"a{autoresponder['id']}"
    return None if campaign is None else str(campaign["id"])


def _campaign_item_id(item: dict[str, Any] | None) -> int | None:
    if item is None or item["item_table"] == "autoresponder_items":
        return None
    item_id: int = item["id"]
    return item_id


async def _suppress(conn: PoolConnectionProxy, email: str, reason: str, detail: str) -> None:
    inserted = await conn.fetchval(
        "INSERT INTO suppressions (email, reason, detail) VALUES ($1, $2, $3)"
        " ON CONFLICT (email) DO NOTHING RETURNING email",
        email,
        reason,
        detail[:500],
    )
    if inserted is not None:
        SUPPRESSIONS.labels(reason).inc()


# the hashed form of an erased address (its suppression keeps only the hash); NULL otherwise
ERASED_ADDRESS_HASH = """
SELECT s.email FROM suppressions s WHERE s.email = mailroom_address_hash($1)
"""


def _erased(item: dict[str, Any] | None) -> bool:
    """The item's recipient was erased (contact.erased): its address is gone for good."""
    return item is not None and str(item["email"]).startswith("erased:")


def _proven_recipient(
    report: BounceReport, recipients: list[BouncedRecipient], item: dict[str, Any] | None
) -> BouncedRecipient | None:
    """The recipient the signed item's proof is about: the one with the item's address, else
    the only recipient (an address rewritten by forwarding; the effects still go to the
    item's own address), else, when the message names nobody, the item's address itself."""
    if item is None:
        return None
    for recipient in recipients:
        if recipient.address.lower() == item["email"]:
            return recipient
    if len(recipients) == 1:
        return recipients[0]
    if not recipients:
        return BouncedRecipient(item["email"], report.action, report.status, None, report.kind)
    return None


@dataclass(frozen=True)
class _Recorded:
    detected: BounceDetected
    matched: bool


class Recorder:
    def __init__(self, pool: Pool, signer: Signer) -> None:
        self.pool = pool
        self.signer = signer

    async def record(self, raw: bytes, analysis: Analysis, mailbox: BounceMailbox) -> Outcome:
        report = analysis.report
        if analysis.unreadable is not None:
            return await self.record_unparsed(raw, analysis, analysis.unreadable)
        bounce = report.is_bounce or report.kind == COMPLAINT
        outcome = "bounce" if bounce else "not_bounce"
        async with self.pool.acquire() as conn, conn.transaction():
            if not await self._claim(conn, analysis, outcome):
                return Outcome("duplicate")
            if not bounce:
                return Outcome(outcome)
            events = await self._bounces(conn, raw, analysis, mailbox)
        return Outcome(outcome, tuple(events))

    async def record_provider(
        self,
        events: list[ProviderEvent],
        mailbox: BounceMailbox,
        size: int,
        nonce: tuple[str, str] | None = None,
    ) -> ProviderOutcome:
        """The events of one authenticated provider call, in one transaction with its
        one-time token (`nonce`: provider, token), when it has one."""
        recorded = duplicates = unproven = 0
        announced: list[BounceDetected] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if nonce is not None:
                await conn.execute(
                    "DELETE FROM webhook_nonces WHERE seen_at < now() - make_interval(secs => $1)",
                    2 * REPLAY_WINDOW_SECONDS,
                )
                fresh = await conn.fetchval(
                    "INSERT INTO webhook_nonces (provider, nonce) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING RETURNING nonce",
                    *nonce,
                )
                if fresh is None:
                    return ProviderOutcome(replayed=True)
            for event in events:
                found = await self._provider_event(conn, event, mailbox, size)
                if found is None:
                    duplicates += 1
                    continue
                recorded += 1
                if found.matched:
                    announced.append(found.detected)
                else:
                    unproven += 1
        return ProviderOutcome(False, recorded, duplicates, unproven, tuple(announced))

    async def _provider_event(
        self, conn: PoolConnectionProxy, event: ProviderEvent, mailbox: BounceMailbox, size: int
    ) -> _Recorded | None:
        """One event (None when an earlier delivery recorded it). Proof, in order: our
        signed VERP address or Message-ID, when the provider passes one on; else, when it
        gives no Message-ID at all, the item last sent to the recipient (RECENT_SEND_DAYS).
        A Message-ID that is not ours says the message was not ours: nothing changes."""
        kind = COMPLAINT if event.kind == "complaint" else event.kind
        action = None if kind == COMPLAINT else FAILED
        recipient = BouncedRecipient(
            event.email.lower(), action, event.status, event.diagnostic, kind
        )
        report = BounceReport(
            is_bounce=kind != COMPLAINT,
            kind=kind,
            action=action,
            status=event.status,
            recipients=(recipient,),
            original_message_id=event.message_id,
            reason=f"{event.provider} webhook",
        )
        headers = {
            "provider": event.provider,
            "event": event.detail,
            "event id": event.event_id[:200],
            "message-id": event.message_id or "",
        }
        analysis = Analysis(event.digest, size, report, headers, None)
        if not await self._claim(conn, analysis, "bounce"):
            return None
        signed = provider_signed_match(event.return_path, event.message_id, self.signer)
        if signed is None and event.message_id is None:
            ref = await _recent_item(conn, recipient.address)
            signed = SignedMatch(ref, "recipient") if ref is not None else None
        item = await _item(conn, signed.item_ref) if signed else None
        if _erased(item):
            return None  # about a person erased since: nothing of the event is kept
        if item is not None and signed is not None and signed.matched_by == "recipient":
            proven: BouncedRecipient | None = recipient
        else:
            proven = _proven_recipient(report, [recipient], item)
        if item is None or proven is None:
            detected = await self._one(
                conn, analysis, recipient, recipient.address, None, None, headers, mailbox
            )
            UNVERIFIED.labels(detected.kind).inc()
            log.info(
                "%s webhook event %s: %s recorded without proof (no Message-ID or VERP address"
                " of ours, no recent send to the address): nothing changed",
                event.provider,
                event.digest[:16],
                detected.kind,
            )
            return _Recorded(detected, matched=False)
        detected = await self._one(
            conn, analysis, proven, item["email"], item, signed, headers, mailbox
        )
        return _Recorded(detected, matched=True)

    async def record_unparsed(self, raw: bytes, analysis: Analysis, reason: str) -> Outcome:
        async with self.pool.acquire() as conn, conn.transaction():
            if not await self._claim(conn, analysis, "unparsed"):
                return Outcome("duplicate")
            await conn.execute(
                "INSERT INTO unparsed_messages (digest, size, head, headers, reason)"
                " VALUES ($1, $2, $3, $4::jsonb, $5)",
                analysis.digest,
                analysis.size,
                raw[:HEAD_BYTES],
                _json(analysis.headers),
                _clean(reason, 1000),
            )
        return Outcome("unparsed")

    async def _claim(self, conn: PoolConnectionProxy, analysis: Analysis, outcome: str) -> bool:
        digest = await conn.fetchval(
            "INSERT INTO processed_messages (digest, outcome, size) VALUES ($1, $2, $3)"
            " ON CONFLICT (digest) DO NOTHING RETURNING digest",
            analysis.digest,
            outcome,
            analysis.size,
        )
        return digest is not None

    async def _bounces(
        self, conn: PoolConnectionProxy, raw: bytes, analysis: Analysis, mailbox: BounceMailbox
    ) -> list[BounceDetected]:
        """Effects for the signed item's own recipient; a row and nothing else for the rest.
        Only the signed item's bounce.detected is published."""
        report = analysis.report
        signed = signed_match(report, raw, self.signer)
        item = await _item(conn, signed.item_ref) if signed else None
        if _erased(item):
            return []  # about a person erased since: nothing of the message is kept
        recipients = list(report.recipients)
        proven = _proven_recipient(report, recipients, item)
        headers = {
            **analysis.headers,
            **{f"original {k}": v for k, v in report.original_headers.items()},
        }
        events: list[BounceDetected] = []
        if proven is not None and item is not None and signed is not None:
            events.append(
                await self._one(
                    conn, analysis, proven, item["email"], item, signed, headers, mailbox
                )
            )
        for recipient in recipients:
            if recipient is proven:
                continue
            email = recipient.address.lower()
            unverified = await self._one(
                conn, analysis, recipient, email, None, None, headers, mailbox
            )
            UNVERIFIED.labels(unverified.kind).inc()
            # no address at info level: the digest finds the bounce record (and the address)
            log.info(
                "bounce message %s: %s recorded without proof (no signed VERP address"
                " or Message-ID of its own): nothing changed",
                analysis.digest[:16],
                unverified.kind,
            )
        return events

    async def _one(
        self,
        conn: PoolConnectionProxy,
        analysis: Analysis,
        recipient: BouncedRecipient,
        email: str,
        item: dict[str, Any] | None,
        signed: SignedMatch | None,
        headers: dict[str, str],
        mailbox: BounceMailbox,
    ) -> BounceDetected:
        """Record one recipient; change its item and suppress its address only with proof
        (`item` is the signed item, `email` its address)."""
        report = analysis.report
        matched_by = signed.matched_by if signed and item else None
        status = recipient.status or report.status
        if report.kind == COMPLAINT:
            kind, action = COMPLAINT, None
        else:
            found = recipient.kind or report.kind
            kind = (
                found
                if found in (HARD, SOFT)
                else (HARD if status and status.startswith("5") else SOFT)
            )
            action = recipient.action or report.action
            if action not in (FAILED, DELAYED):
                action = FAILED
        diagnostic = _clean(recipient.diagnostic)
        # a warning (delayed) changes nothing: the server is still trying
        final = action != DELAYED
        if item is not None and final and kind in (HARD, SOFT):
            code = _REPLY_CODE.search(diagnostic or "")
            smtp_code = int(code.group(1)) if code else None
            if item["item_table"] == "archived_items":
                await bounce_archived_item(
                    conn, item["id"], item["status"], kind, smtp_code, BOUNCEABLE
                )
            else:
                await conn.execute(
                    ITEM_BOUNCED[item["item_table"]],
                    item["id"],
                    kind,
                    smtp_code,
                    diagnostic,
                    _clean(f"bounced ({kind}): {status or 'no status'} {diagnostic or ''}".strip()),
                    list(BOUNCEABLE),
                )
        if item is None:
            hashed = await conn.fetchval(ERASED_ADDRESS_HASH, email)
            if hashed is not None:
                # a person erased since (contact.erased): an unproven record keeps no trace
                # of the address, neither the address nor what quotes it
                email, diagnostic, headers = hashed, None, {}
        await conn.execute(
            "INSERT INTO bounces (item_id, campaign_id, email, kind, action, status, diagnostic,"
            " matched_by, digest, headers, autoresponder_item_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)",
            _campaign_item_id(item),
            item["campaign_id"] if item else None,
            email,
            kind,
            action,
            _clean(status, 20),
            diagnostic,
            matched_by,
            analysis.digest,
            _json(headers),
            item["id"] if item and item["item_table"] == "autoresponder_items" else None,
        )
        # only a bounce proven to be about an email we sent suppresses: a forged bounce
        # naming any address cannot silence it
        if item is not None and final:
            if kind == HARD:
                await _suppress(conn, email, "hard_bounce", f"{status or ''} {diagnostic or ''}")
            elif kind == COMPLAINT:
                await _suppress(conn, email, "complaint", "feedback report (ARF)")
            else:
                soft = await conn.fetchval(
                    "SELECT count(*) FROM bounces WHERE lower(email) = $1 AND kind = 'soft'"
                    " AND action = 'failed'"
                    " AND (item_id IS NOT NULL OR autoresponder_item_id IS NOT NULL)"
                    " AND received_at > now() - make_interval(days => $2)",
                    email,
                    mailbox.soft_bounce_window_days,
                )
                if soft >= mailbox.soft_bounce_threshold:
                    await _suppress(
                        conn,
                        email,
                        "soft_bounces",
                        f"{soft} soft bounces within {mailbox.soft_bounce_window_days} days",
                    )
        suppressed = bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM suppressions WHERE email = $1)", email
            )
        )
        if suppressed:
            await conn.execute(
                "UPDATE bounces SET suppressed = true WHERE digest = $1 AND email = $2",
                analysis.digest,
                email,
            )
        return BounceDetected(
            item_id=_campaign_item_id(item),
            autoresponder_item_id=(
                item["id"] if item and item["item_table"] == "autoresponder_items" else None
            ),
            campaign_id=item["campaign_id"] if item else None,
            email=email,
            kind=kind,
            action=action,
            status=status,
            suppressed=suppressed,
        )
