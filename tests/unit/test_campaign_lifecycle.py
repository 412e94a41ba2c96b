"""The campaign lifecycle on its own: PostgreSQL and a recording announcer, no broker."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import get_args

import asyncpg
import pytest
from asyncpg.pool import Pool
from mailroom_common import campaign_counts
from mailroom_common import campaign_lifecycle as lifecycle
from mailroom_common.campaign_lifecycle import CampaignStatus, UnknownCampaign
from mailroom_common.events import (
    CampaignCompleted,
    CampaignGenerated,
    CampaignPaused,
    CampaignResumed,
    Event,
)
from mailroom_common.metrics import CAMPAIGNS_COMPLETED
from mailroom_common.migrate import migrate

from tests.support.environment import POSTGRES_SERVER

STATUSES: tuple[CampaignStatus, ...] = get_args(CampaignStatus)


@dataclass
class RecordingRuntime:
    pool: Pool
    events: list[Event] = field(default_factory=list)

    async def announce(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
async def runtime() -> AsyncIterator[RecordingRuntime]:
    database = f"mailroom_test_{uuid.uuid4().hex[:10]}"
    await migrate(f"{POSTGRES_SERVER}/{database}", create_database=True)
    pool = await asyncpg.create_pool(f"{POSTGRES_SERVER}/{database}", min_size=1, max_size=4)
    assert pool is not None
    try:
        yield RecordingRuntime(pool)
    finally:
        await pool.close()
        admin = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


async def _campaign(pool: Pool, items: int = 0) -> int:
    campaign_id: int = await pool.fetchval(
        "INSERT INTO campaigns (name, subject, from_email, html_template)"
        " VALUES ('c', 's', 'news@mailroom.test', '<p>x</p>') RETURNING id"
    )
    if items:
        tag = f"-{campaign_id}@example.test"
        await pool.execute(
            "INSERT INTO contacts (email) SELECT 'u' || g || $1 FROM generate_series(1, $2) g",
            tag,
            items,
        )
        await pool.execute(
            "INSERT INTO campaign_items (campaign_id, contact_id, email)"
            " SELECT $1, id, email FROM contacts WHERE email LIKE '%' || $2",
            campaign_id,
            tag,
        )
    return campaign_id


async def _status(pool: Pool, campaign_id: int) -> str:
    return str(await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id))


def _finished(status: str) -> float:
    return float(CAMPAIGNS_COMPLETED.labels(status)._value.get())


async def test_postgresql_allows_exactly_the_transitions_of_the_module(
    runtime: RecordingRuntime,
) -> None:
    for old, new, paused_from in itertools.product(STATUSES, STATUSES, (None, *STATUSES)):
        allowed = await runtime.pool.fetchval(
            "SELECT campaign_transition_allowed($1, $2, $3)", old, new, paused_from
        )
        expected = (
            old == new
            or (old, new) in lifecycle.TRANSITIONS
            or (old == "paused" and new == paused_from)
        )
        assert allowed == expected, (old, new, paused_from)


def test_the_counts_know_the_final_statuses_of_the_lifecycle() -> None:
    """campaign_counts keeps its own copy (campaign_lifecycle imports it): the same."""
    assert campaign_counts.ENDED == lifecycle.FINAL_STATUSES
    assert set(lifecycle.FINAL_STATUSES) == set(get_args(lifecycle.FinalStatus))


async def test_a_campaign_from_draft_to_completed_announces_each_step(
    runtime: RecordingRuntime,
) -> None:
    pool = runtime.pool
    campaign_id = await _campaign(pool, items=3)
    completed_before = _finished("completed")

    assert await lifecycle.launch(runtime, campaign_id, datetime.now(UTC)) == "generating"
    assert await lifecycle.launch(runtime, campaign_id, datetime.now(UTC)) is None  # once
    assert await lifecycle.claim_generation(pool, "host:1", 15) == campaign_id
    assert await lifecycle.finish_generation(runtime, campaign_id, "host:2") is None  # not ours
    assert await lifecycle.finish_generation(runtime, campaign_id, "host:1") == 3
    assert await _status(pool, campaign_id) == "sending"
    assert lifecycle.sends("sending")

    assert await lifecycle.pause(runtime, campaign_id, "checking the list")
    assert not await lifecycle.pause(runtime, campaign_id)  # paused already
    assert not lifecycle.sends(await _status(pool, campaign_id))
    assert await lifecycle.resume(runtime, campaign_id) == "sending"
    assert await lifecycle.resume(runtime, campaign_id) is None

    assert not await lifecycle.complete_if_done(runtime, campaign_id)  # items still open
    await pool.execute(
        "UPDATE campaign_items SET status = 'sending' WHERE campaign_id = $1", campaign_id
    )
    await pool.execute(
        "UPDATE campaign_items SET status = 'sent' WHERE campaign_id = $1", campaign_id
    )
    assert await lifecycle.complete_if_done(runtime, campaign_id)
    assert not await lifecycle.complete_if_done(runtime, campaign_id)
    assert await _status(pool, campaign_id) == "completed"
    assert _finished("completed") == completed_before + 1

    assert [type(e) for e in runtime.events] == [
        CampaignGenerated,
        CampaignPaused,
        CampaignResumed,
        CampaignCompleted,
    ]
    paused, resumed, completed = runtime.events[1:]
    assert isinstance(paused, CampaignPaused) and paused.reason == "checking the list"
    assert isinstance(resumed, CampaignResumed) and resumed.status == "sending"
    assert completed == CampaignCompleted(
        campaign_id=campaign_id,
        status="completed",
        counts={"sent": 3},
        occurred_at=completed.occurred_at,
    )


async def test_a_scheduled_campaign_paused_resumes_to_scheduled(
    runtime: RecordingRuntime,
) -> None:
    pool = runtime.pool
    campaign_id = await _campaign(pool)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await lifecycle.launch(runtime, campaign_id, later) == "scheduled"
    assert await lifecycle.claim_generation(pool, "host:1", 15) is None  # not due
    assert await lifecycle.pause(runtime, campaign_id)
    assert await lifecycle.resume(runtime, campaign_id) == "scheduled"


async def test_cancel_skips_the_open_items_and_announces_cancelled(
    runtime: RecordingRuntime,
) -> None:
    pool = runtime.pool
    campaign_id = await _campaign(pool, items=4)
    await lifecycle.launch(runtime, campaign_id, datetime.now(UTC))
    await lifecycle.claim_generation(pool, "host:1", 15)
    await lifecycle.finish_generation(runtime, campaign_id, "host:1")
    first = await pool.fetchval(
        "SELECT min(id) FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    await pool.execute("UPDATE campaign_items SET status = 'sending' WHERE id = $1", first)
    await pool.execute("UPDATE campaign_items SET status = 'sent' WHERE id = $1", first)
    cancelled_before = _finished("cancelled")

    assert await lifecycle.pause(runtime, campaign_id)
    assert await lifecycle.cancel(runtime, campaign_id)
    assert not await lifecycle.cancel(runtime, campaign_id)
    assert not await lifecycle.pause(runtime, campaign_id)
    assert await lifecycle.resume(runtime, campaign_id) is None

    assert await _status(pool, campaign_id) == "cancelled"
    end = runtime.events[-1]
    assert isinstance(end, CampaignCompleted)
    assert (end.status, end.counts, end.reason) == ("cancelled", {"sent": 1, "skipped": 3}, None)
    assert _finished("cancelled") == cancelled_before + 1


async def test_fail_closes_the_open_items_with_the_reason(runtime: RecordingRuntime) -> None:
    pool = runtime.pool
    campaign_id = await _campaign(pool, items=2)
    await lifecycle.launch(runtime, campaign_id, datetime.now(UTC))
    await lifecycle.claim_generation(pool, "host:1", 15)
    failed_before = _finished("failed")

    assert await lifecycle.fail(runtime, campaign_id, "the template does not compile")
    assert not await lifecycle.fail(runtime, campaign_id, "again")
    row = await pool.fetchrow(
        "SELECT status, failure_reason, lease_owner FROM campaigns WHERE id = $1", campaign_id
    )
    assert row is not None
    assert dict(row) == {
        "status": "failed",
        "failure_reason": "the template does not compile",
        "lease_owner": None,
    }
    errors = await pool.fetch(
        "SELECT DISTINCT error FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    assert [r["error"] for r in errors] == ["campaign failed: the template does not compile"]
    end = runtime.events[-1]
    assert isinstance(end, CampaignCompleted)
    assert (end.status, end.counts, end.reason) == (
        "failed",
        {"failed": 2},
        "the template does not compile",
    )
    assert _finished("failed") == failed_before + 1


async def test_a_draft_cannot_fail_or_complete(runtime: RecordingRuntime) -> None:
    campaign_id = await _campaign(runtime.pool)
    assert not await lifecycle.fail(runtime, campaign_id, "no")
    assert not await lifecycle.complete_if_done(runtime, campaign_id)
    assert not await lifecycle.pause(runtime, campaign_id)
    assert await _status(runtime.pool, campaign_id) == "draft"
    assert runtime.events == []


@pytest.mark.parametrize(
    ("prepare", "illegal"),
    [
        ([], "sending"),  # draft -> sending skips generation
        ([], "completed"),
        (["generating"], "completed"),  # before every item exists
        (["generating", "sending", "completed"], "sending"),  # a finished campaign stays so
        (["generating", "sending", "cancelled"], "paused"),
        (["generating", "paused"], "sending"),  # resume goes back where it was paused from
    ],
)
async def test_postgresql_refuses_a_transition_outside_the_state_machine(
    runtime: RecordingRuntime, prepare: list[str], illegal: str
) -> None:
    pool = runtime.pool
    campaign_id = await _campaign(pool)
    for status in prepare:
        await pool.execute(
            "UPDATE campaigns SET paused_from = CASE WHEN $2 = 'paused' THEN status END,"
            " status = $2 WHERE id = $1",
            campaign_id,
            status,
        )
    before = await _status(pool, campaign_id)
    with pytest.raises(asyncpg.CheckViolationError, match=f"{before} -> {illegal} is not allowed"):
        await pool.execute("UPDATE campaigns SET status = $2 WHERE id = $1", campaign_id, illegal)
    assert await _status(pool, campaign_id) == before


async def test_an_unknown_campaign_is_named(runtime: RecordingRuntime) -> None:
    for transition in (lifecycle.pause, lifecycle.resume, lifecycle.cancel):
        with pytest.raises(UnknownCampaign, match="unknown campaign 424242"):
            await transition(runtime, 424242)
    with pytest.raises(UnknownCampaign):
        await lifecycle.launch(runtime, 424242, datetime.now(UTC))


async def test_parked_items_go_back_to_pending_and_their_pages_are_unpublished(
    runtime: RecordingRuntime,
) -> None:
    pool = runtime.pool
    campaign_id = await _campaign(pool, items=6)
    ids = [
        r["id"]
        for r in await pool.fetch(
            "SELECT id FROM campaign_items WHERE campaign_id = $1 ORDER BY id", campaign_id
        )
    ]
    for first, last in ((ids[0], ids[2]), (ids[3], ids[5])):
        await pool.execute(
            "INSERT INTO item_pages (campaign_id, item_count, first_item_id, last_item_id,"
            " published_at) VALUES ($1, 3, $2, $3, now())",
            campaign_id,
            first,
            last,
        )
    statuses = ["queued", "retry", "sending", "queued", "sent", "pending"]
    for item_id, status in zip(ids, statuses, strict=True):
        for step in {
            "queued": ["queued"],
            "retry": ["sending", "retry"],
            "sending": ["sending"],
            "sent": ["sending", "sent"],
            "pending": [],
        }[status]:
            await pool.execute("UPDATE campaign_items SET status = $2 WHERE id = $1", item_id, step)

    # only the second page's items reach this sender: the first page stays published
    parked = await lifecycle.park_items(pool, campaign_id, ids[3:])
    assert parked == [ids[3], ids[5]]
    pages = await pool.fetch(
        "SELECT first_item_id, published_at IS NOT NULL AS published FROM item_pages"
        " WHERE campaign_id = $1 ORDER BY first_item_id",
        campaign_id,
    )
    assert [p["published"] for p in pages] == [True, False]

    parked = await lifecycle.park_items(pool, campaign_id, ids[:3])
    assert parked == [ids[0], ids[1]]  # the one being sent is left to its sender
    after = await pool.fetch(
        "SELECT status FROM campaign_items WHERE campaign_id = $1 ORDER BY id", campaign_id
    )
    assert [r["status"] for r in after] == [
        "pending",
        "pending",
        "sending",
        "pending",
        "sent",
        "pending",
    ]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM item_pages WHERE campaign_id = $1 AND published_at IS NULL",
            campaign_id,
        )
        == 2
    )
    # another campaign's items are never touched
    assert await lifecycle.park_items(pool, campaign_id + 1, ids) == []
