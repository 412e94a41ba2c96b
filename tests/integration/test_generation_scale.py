"""Item generation at scale: the audience is snapshotted once, and a page then costs the same
whatever the size of the audience (the plan of the page statement is read, not timed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from mailroom_common.broker import declare_topology, make_broker
from mailroom_common.runtime import Runtime
from mailroom_item_generator.generator import NEXT_PAGE, ItemGenerator

from tests.support.environment import Installation
from tests.support.scenario import pool_of

pytestmark = pytest.mark.integration

PAGE = 1000


async def _audience(pool: asyncpg.Pool, name: str, size: int) -> int:
    """A list of `size` subscribed contacts (written with generate_series) and a campaign to
    it, ready to be generated."""
    async with pool.acquire() as conn, conn.transaction():
        list_id = await conn.fetchval("INSERT INTO lists (name) VALUES ($1) RETURNING id", name)
        await conn.execute(
            "WITH c AS (INSERT INTO contacts (email, first_name)"
            " SELECT $2 || g || '@scale.example.test', 'F' || g FROM generate_series(1, $3) g"
            " RETURNING id)"
            " INSERT INTO list_memberships (list_id, contact_id) SELECT $1, id FROM c",
            list_id,
            name,
            size,
        )
        campaign_id: int = await conn.fetchval(
            "INSERT INTO campaigns (name, subject, from_email, html_template, status)"
            " VALUES ($1, 's', 'news@mailroom.test', '<p>x</p>', 'generating') RETURNING id",
            name,
        )
        await conn.execute(
            "INSERT INTO campaign_lists (campaign_id, list_id) VALUES ($1, $2)",
            campaign_id,
            list_id,
        )
    return campaign_id


@pytest.fixture
async def generator(installation: Installation) -> AsyncIterator[ItemGenerator]:
    runtime = Runtime.build(
        installation.settings, pool_of(installation), make_broker(installation.settings)
    )
    await runtime.broker.connect()
    await declare_topology(runtime.broker, runtime.topology)
    try:
        yield ItemGenerator(runtime)
    finally:
        await runtime.broker.stop()


async def _take(pool: asyncpg.Pool, generator: ItemGenerator, campaign_id: int) -> None:
    await pool.execute(
        "UPDATE campaigns SET lease_owner = $2 WHERE id = $1",
        campaign_id,
        generator.runtime.instance_id,
    )


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _page_work(pool: asyncpg.Pool, campaign_id: int, at: float) -> dict[str, int]:
    """What the page statement reads for the page starting `at` (0..1) into the campaign."""
    row = await pool.fetchrow(
        "SELECT cursor_item_id, last_item_id FROM campaigns WHERE id = $1", campaign_id
    )
    assert row is not None
    cursor, last = row["cursor_item_id"], row["last_item_id"]
    start = cursor + int((last - cursor) * at)
    end = min(start + PAGE, last)
    raw = await pool.fetchval(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {NEXT_PAGE}", campaign_id, start, end
    )
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    scans = [n for n in _nodes(plan) if n.get("Relation Name") == "campaign_items"]
    return {
        "items": end - start,
        "rows_read": sum(
            (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"]
            for n in scans
        ),
        "index_scans": sum(n["Node Type"] in ("Index Scan", "Bitmap Heap Scan") for n in scans),
        "buffers": plan["Shared Hit Blocks"] + plan["Shared Read Blocks"],
    }


async def test_a_page_reads_as_much_at_100000_recipients_as_at_1000(
    installation: Installation, generator: ItemGenerator
) -> None:
    pool = pool_of(installation)
    small = await _audience(pool, "small", PAGE)
    large = await _audience(pool, "large", 100_000)
    for campaign_id, size in ((small, PAGE), (large, 100_000)):
        await _take(pool, generator, campaign_id)
        assert await generator._snapshot(campaign_id)
        count = await pool.fetchval(
            "SELECT count(*) FROM campaign_items WHERE campaign_id = $1", campaign_id
        )
        assert count == size

    # right after the snapshot (statistics not yet updated), then with fresh statistics
    for analyzed in (False, True):
        if analyzed:
            await pool.execute("ANALYZE campaign_items")
        small_page = await _page_work(pool, small, 0)
        first, middle, last = [await _page_work(pool, large, at) for at in (0, 0.5, 0.99)]
        print(f"analyzed={analyzed}: {small_page=} {first=} {middle=} {last=}")
        for work in (small_page, first, middle, last):
            assert work["index_scans"] == 1, (analyzed, work)
            assert work["rows_read"] <= work["items"] <= PAGE, (analyzed, work)
            # a page's rows and its index: a few dozen pages, as for the small campaign
            assert work["buffers"] <= small_page["buffers"] + 10, (analyzed, small_page, work)
        assert small_page["buffers"] < 60, small_page


async def _pages_cover_each_item_once(pool: asyncpg.Pool, campaign_id: int) -> int:
    """The number of items in the campaign's pages; each item is in exactly one page."""
    rows = await pool.fetch(
        "SELECT i.id, count(p.id) AS pages FROM campaign_items i"
        " LEFT JOIN item_pages p ON p.campaign_id = i.campaign_id"
        "  AND (i.id BETWEEN p.first_item_id AND p.last_item_id OR i.page_id = p.id)"
        " WHERE i.campaign_id = $1 GROUP BY i.id",
        campaign_id,
    )
    assert {r["pages"] for r in rows} == {1}, [r for r in rows if r["pages"] != 1][:5]
    unpublished = await pool.fetchval(
        "SELECT count(*) FROM item_pages WHERE campaign_id = $1 AND published_at IS NULL",
        campaign_id,
    )
    assert unpublished == 0
    return len(rows)


async def test_a_generation_taken_over_midway_hands_every_item_over_once(
    installation: Installation, generator: ItemGenerator
) -> None:
    pool = pool_of(installation)
    campaign_id = await _audience(pool, "takeover", 5500)
    await _take(pool, generator, campaign_id)
    assert await generator._snapshot(campaign_id)
    for _ in range(2):
        page = await generator._next_page(campaign_id)
        assert not isinstance(page, str)
        await generator._publish_page(*page)
    # the lease of a replica that died ran out: another takes the campaign over
    other = ItemGenerator(Runtime(**{**vars(generator.runtime), "instance_id": "other:1"}))
    await _take(pool, other, campaign_id)
    assert await generator._next_page(campaign_id) == "stopped"
    await other.generate(campaign_id)
    assert await _pages_cover_each_item_once(pool, campaign_id) == 5500
    campaign = await pool.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
    assert campaign is not None
    assert campaign["status"] == "sending" and campaign["generation_done"]
    assert await pool.fetchval("SELECT count(*) FROM item_pages") == 6


async def test_a_generation_begun_by_the_previous_version_goes_on_after_its_cursor(
    installation: Installation, generator: ItemGenerator
) -> None:
    """A campaign still 'generating' when migration 0005 lands: the previous version created
    the items up to its cursor_email, a page at a time (items named their page)."""
    pool = pool_of(installation)
    campaign_id = await _audience(pool, "legacy", 3000)
    async with pool.acquire() as conn, conn.transaction():
        page_id = await conn.fetchval(
            "INSERT INTO item_pages (campaign_id, item_count) VALUES ($1, 1000) RETURNING id",
            campaign_id,
        )
        cursor = await conn.fetchval(
            "WITH i AS (INSERT INTO campaign_items (campaign_id, contact_id, page_id, email)"
            " SELECT $1, id, $2, email FROM contacts ORDER BY lower(email) LIMIT 1000"
            " RETURNING email) SELECT max(lower(email)) FROM i",
            campaign_id,
            page_id,
        )
        await conn.execute(
            "UPDATE campaigns SET cursor_email = $2 WHERE id = $1", campaign_id, cursor
        )
    await _take(pool, generator, campaign_id)
    await generator.generate(campaign_id)
    # the old page was never published: the sweep hands it over by its page_id
    await pool.execute("UPDATE item_pages SET created_at = now() - interval '1 minute'")
    await generator.republish_unpublished_pages()
    assert await _pages_cover_each_item_once(pool, campaign_id) == 3000
    addresses = await pool.fetchval(
        "SELECT count(DISTINCT lower(email)) FROM campaign_items WHERE campaign_id = $1",
        campaign_id,
    )
    assert addresses == 3000


async def test_without_foreign_keys_items_still_go_with_their_campaign_and_keep_contacts(
    installation: Installation, generator: ItemGenerator
) -> None:
    pool = pool_of(installation)
    campaign_id = await _audience(pool, "keys", 20)
    await _take(pool, generator, campaign_id)
    assert await generator._snapshot(campaign_id)
    contact_id = await pool.fetchval(
        "SELECT contact_id FROM campaign_items WHERE campaign_id = $1 LIMIT 1", campaign_id
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="campaign items"):
        await pool.execute("DELETE FROM contacts WHERE id = $1", contact_id)
    await pool.execute("DELETE FROM campaigns WHERE id = $1", campaign_id)
    assert await pool.fetchval("SELECT count(*) FROM campaign_items") == 0
    assert await pool.fetchval("DELETE FROM contacts WHERE id = $1 RETURNING id", contact_id)
