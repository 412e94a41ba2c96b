"""Archiving finished campaigns: `mailroom campaign archive ID` and the completion service's
retention move a campaign's items out of campaign_items; its counts stay, a late bounce of
one of its messages still bounces the item and suppresses the address, its unsubscribe links
still work, a campaign that is still running is refused, and an archive killed midway
leaves exact counts and finishes when run again."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from mailroom_bounce_processor.processor import BounceProcessor
from mailroom_common.archive import ArchiveRefused, archive_campaign
from mailroom_common.broker import make_broker
from mailroom_common.campaign_counts import item_counts
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import BounceMailbox

from tests.support import bounce_messages as bm
from tests.support.cli import run_mailroom
from tests.support.environment import ROOT, Installation, wait_for
from tests.support.scenario import campaign_reaches, launched_campaign
from tests.support.seed import make_campaign
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

UNSUBSCRIBE = re.compile(r"/unsubscribe/([\w.-]+)")


@pytest.fixture
async def small_chunks() -> AsyncIterator[Installation]:
    """Archiving 7 items per transaction: a campaign of 30 takes several chunks."""
    install = Installation(archive_chunk_items=7)
    await install.setup()
    try:
        yield install
    finally:
        await install.teardown()


async def late_bounce(install: Installation, verp: str, recipient: str) -> None:
    """A DSN to the message's VERP address, through the bounce processor's own `take`."""
    assert install.pool is not None
    broker = make_broker(install.settings)
    await broker.connect()
    try:
        processor = BounceProcessor(Runtime.build(install.settings, install.pool, broker))
        outcome = await processor.take(bm.dsn(verp, recipient), BounceMailbox())
    finally:
        await broker.stop()
    assert [(e.email, e.suppressed) for e in outcome.events] == [(recipient, True)]


async def test_an_archived_campaign_keeps_its_counts_bounces_and_unsubscribe_links(
    small_chunks: Installation, smtp_server: SmtpServer
) -> None:
    install = small_chunks
    pool = install.pool
    assert pool is not None
    audience, campaign_id, process = await launched_campaign(install, smtp_server, 30)
    assert (await campaign_reaches(install, campaign_id))["counts"] == {"sent": 30}

    draft = await make_campaign(pool, audience, name="Next week")
    refused = await run_mailroom(install.env, "campaign", "archive", str(draft))
    assert refused.returncode == 2
    assert f"campaign {draft} is draft" in refused.stderr
    assert "only a completed, cancelled or failed campaign" in refused.stderr

    archived = await run_mailroom(install.env, "campaign", "archive", str(campaign_id), "--json")
    assert archived.returncode == 0, archived.stderr
    result = json.loads(archived.stdout)
    assert (result["moved"], result["finished"], result["counts"]) == (30, True, {"sent": 30})
    count = "SELECT count(*) FROM {} WHERE campaign_id = $1"
    assert await pool.fetchval(count.format("campaign_items"), campaign_id) == 0
    assert await pool.fetchval(count.format("archived_items"), campaign_id) == 30
    again = await run_mailroom(install.env, "campaign", "archive", str(campaign_id), "--json")
    assert json.loads(again.stdout)["moved"] == 0

    shown = await run_mailroom(install.env, "campaign", "status", str(campaign_id), "--json")
    status = json.loads(shown.stdout)
    assert status["counts"] == {"sent": 30} and status["items"] == 30
    assert status["status"] == "completed" and status["archived_at"]

    # a bounce of an archived message: the item bounces, the address is suppressed
    received = sorted(smtp_server.handler.received, key=lambda r: r.recipients[0])
    bounced = received[0]
    recipient = bounced.recipients[0].lower()
    await late_bounce(install, bounced.envelope_from, recipient)
    item = await pool.fetchrow(
        "SELECT id, status, bounce_kind FROM archived_items WHERE lower(email) = $1", recipient
    )
    assert item is not None and (item["status"], item["bounce_kind"]) == ("bounced", "hard")
    row = await pool.fetchrow("SELECT item_id, campaign_id FROM bounces")
    assert row is not None and (row["item_id"], row["campaign_id"]) == (item["id"], campaign_id)
    assert await pool.fetchval("SELECT reason FROM suppressions WHERE email = $1", recipient) == (
        "hard_bounce"
    )
    assert await item_counts(pool, campaign_id) == {"sent": 29, "bounced": 1}

    # the unsubscribe link of an archived message still takes its reader off the list
    leaving = received[1]
    link = UNSUBSCRIBE.search(leaving.part("plain"))
    assert link is not None
    url = f"http://127.0.0.1:{process.http_port}/unsubscribe/{link.group(1)}"  # type: ignore[attr-defined]
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    memberships = await pool.fetch(
        "SELECT m.status FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
        " WHERE lower(c.email) = $1",
        leaving.recipients[0].lower(),
    )
    assert memberships and {r["status"] for r in memberships} == {"unsubscribed"}


async def seed_finished(
    pool: asyncpg.Pool, status: str, ended_days_ago: float | None, items: dict[str, int]
) -> int:
    """A campaign in `status` that ended `ended_days_ago`, with items in the given statuses."""
    async with pool.acquire() as conn, conn.transaction():
        campaign_id: int = await conn.fetchval(
            "INSERT INTO campaigns (name, subject, from_email, html_template, status,"
            " generation_done, completed_at) VALUES ('old', 'Hi', 'news@mailroom.test',"
            " '<p>hi</p>', $1, true, now() - make_interval(secs => $2)) RETURNING id",
            status,
            None if ended_days_ago is None else ended_days_ago * 86400,
        )
        for item_status, n in items.items():
            await conn.execute(
                "WITH people AS (INSERT INTO contacts (email)"
                " SELECT 'p' || g || '.' || $2::text || '.' || $1::bigint || '@example.org'"
                " FROM generate_series(1, $3) g RETURNING id, email)"
                " INSERT INTO campaign_items (campaign_id, contact_id, email, status)"
                " SELECT $1::bigint, id, email, $2::text FROM people",
                campaign_id,
                item_status,
                n,
            )
    return campaign_id


async def test_items_in_flight_refuse_archiving_without_force_and_a_stop_resumes(
    installation: Installation,
) -> None:
    pool = installation.pool
    assert pool is not None
    campaign_id = await seed_finished(
        pool, "cancelled", 0, {"sent": 20, "skipped": 9, "sending": 1}
    )
    with pytest.raises(ArchiveRefused, match=r"still has items in flight \(1 sending\).*--force"):
        await archive_campaign(pool, campaign_id, 4)
    before = await item_counts(pool, campaign_id)

    # stopped after two chunks (as a SIGKILL between two transactions would leave it)
    stopping = asyncio.Event()
    chunks = []

    def progress(moved: int) -> None:
        chunks.append(moved)
        if len(chunks) == 2:
            stopping.set()

    half = await archive_campaign(
        pool, campaign_id, 4, force=True, stopping=stopping, progress=progress
    )
    assert (half.moved, half.finished) == (8, False)
    assert await item_counts(pool, campaign_id) == before
    assert (
        await pool.fetchval("SELECT archived_at FROM campaigns WHERE id = $1", campaign_id) is None
    )

    rest = await archive_campaign(pool, campaign_id, 4, force=True)
    assert (rest.moved, rest.finished, rest.counts) == (22, True, before)
    assert await pool.fetchval("SELECT count(*) FROM campaign_items") == 0


async def test_retention_archives_only_campaigns_that_ended_long_ago() -> None:
    install = Installation(archive_after_days=30, archive_chunk_items=5)
    pool = await install.setup()
    try:
        old = await seed_finished(pool, "completed", 40, {"sent": 12, "failed": 2})
        old_cancelled = await seed_finished(pool, "cancelled", 31, {"skipped": 3, "sending": 1})
        recent = await seed_finished(pool, "completed", 2, {"sent": 4})
        running = await seed_finished(pool, "sending", None, {"sent": 3, "queued": 3})
        counts = {c: await item_counts(pool, c) for c in (old, old_cancelled, recent, running)}
        install.start_services("completion")

        async def archived() -> bool:
            done = await pool.fetchval(
                "SELECT count(*) FROM campaigns WHERE archived_at IS NOT NULL"
            )
            return bool(done == 2)

        await wait_for(archived, 60, "the two campaigns that ended long ago archived")
        rows = await pool.fetch(
            "SELECT campaign_id, count(*) AS n FROM campaign_items GROUP BY campaign_id"
        )
        assert {r["campaign_id"]: r["n"] for r in rows} == {recent: 4, running: 6}
        for campaign_id, before in counts.items():
            assert await item_counts(pool, campaign_id) == before
    finally:
        await install.teardown()


async def test_archive_killed_midway_keeps_exact_counts_and_finishes_when_run_again() -> None:
    install = Installation(archive_chunk_items=10)
    pool = await install.setup()
    try:
        campaign_id = await seed_finished(pool, "completed", 1, {"sent": 2990, "failed": 10})
        before = await item_counts(pool, campaign_id)
        command = [sys.executable, "-m", "mailroom", "campaign", "archive", str(campaign_id)]
        process = await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, **install.env},
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
        )
        try:

            async def started() -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM archived_items"))

            await wait_for(started, 60, "the first chunks archived", interval=0.02)
        finally:
            process.kill()  # SIGKILL
            await process.wait()
        moved = await pool.fetchval("SELECT count(*) FROM archived_items")
        assert 0 < moved < 3000, "killed before the end"
        assert await item_counts(pool, campaign_id) == before
        left = await pool.fetchval("SELECT count(*) FROM campaign_items")
        assert moved + left == 3000

        again = await run_mailroom(install.env, "campaign", "archive", str(campaign_id), "--json")
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        assert (result["moved"], result["finished"], result["counts"]) == (left, True, before)
    finally:
        await install.teardown()
