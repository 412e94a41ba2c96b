"""Do yesterday's campaigns slow today's? Generation and the sender's claim for a fresh
campaign, measured with no finished items in campaign_items, with millions of them, and
after archiving them (`mailroom campaign archive`).

In a database of its own (dropped at the end unless --keep):
1. contacts (--history-contacts) and a list of --campaign-size of them;
2. scenario "empty": a fresh campaign generated through the real code path (ItemGenerator
   against RabbitMQ, queue prefix archive-bench), then EXPLAIN (ANALYZE, BUFFERS) of the
   sender's claim (services/outbound_sender items.py, CAMPAIGN_CLAIM) of 100 of its items
   and of the unsubscribe's skip of open items, each in a transaction rolled back;
3. --finished items of finished campaigns inserted with generate_series (--per-campaign each,
   the same people every time, as a newsletter's history looks), VACUUM ANALYZE; scenario
   "history";
4. every finished campaign archived (archive_campaign, as the CLI does), VACUUM; scenario
   "archived".
Each scenario reports the generator's seconds and buffers (shared hits + reads, from
pg_stat_database around the run) per page, and the statements' plans.

    .venv/bin/python scripts/history_bench.py --finished 10000000 --json

Timings on a shared machine are noisy: buffers and plans are the figures that count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
from mailroom_common.archive import archive_campaign
from mailroom_common.broker import Topology, declare_topology, make_broker
from mailroom_common.campaign_lifecycle import SENDING_STATUSES
from mailroom_common.db import create_pool, quote_ident
from mailroom_common.migrate import migrate
from mailroom_common.runtime import Runtime
from mailroom_common.settings import Settings
from mailroom_item_generator.generator import ItemGenerator
from mailroom_outbound_sender.items import CAMPAIGN_CLAIM
from mailroom_subscriptions.store import RUNNING_CAMPAIGNS, SKIP_OPEN_ITEMS

SERVER = os.environ.get("MAILROOM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
RABBITMQ = os.environ.get("MAILROOM_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE = "mailroom_archive_history_bench"
PREFIX = "archive-bench"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def recreate_database() -> None:
    admin = await asyncpg.connect(f"{SERVER}/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(DATABASE)} WITH (FORCE)")
    finally:
        await admin.close()


async def seed_people(conn: asyncpg.Connection, people: int, audience: int) -> int:
    await conn.execute(
        "INSERT INTO contacts (email, first_name, last_name)"
        " SELECT 'person' || g || '@history.example', 'P' || g, 'L' || g"
        " FROM generate_series(1, $1) g",
        people,
    )
    list_id: int = await conn.fetchval("INSERT INTO lists (name) VALUES ('today') RETURNING id")
    await conn.execute(
        "INSERT INTO list_memberships (list_id, contact_id)"
        " SELECT $1, id FROM contacts ORDER BY id LIMIT $2",
        list_id,
        audience,
    )
    await conn.execute("VACUUM ANALYZE contacts")
    await conn.execute("VACUUM ANALYZE list_memberships")
    return list_id


async def new_campaign(conn: asyncpg.Connection, list_id: int | None, status: str) -> int:
    campaign_id: int = await conn.fetchval(
        "INSERT INTO campaigns (name, subject, from_email, html_template, status, send_at,"
        " completed_at) VALUES ('bench', 'Hello', 'news@mailroom.test', '<p>hi</p>', $1,"
        " now(), CASE WHEN $1 = 'completed' THEN now() - interval '40 days' END) RETURNING id",
        status,
    )
    if list_id is not None:
        await conn.execute(
            "INSERT INTO campaign_lists (campaign_id, list_id) VALUES ($1, $2)",
            campaign_id,
            list_id,
        )
    return campaign_id


async def seed_history(conn: asyncpg.Connection, finished: int, per_campaign: int) -> list[int]:
    ids = []
    left = finished
    while left > 0:
        size = min(per_campaign, left)
        campaign_id = await new_campaign(conn, None, "completed")
        started = time.monotonic()
        await conn.execute(
            "INSERT INTO campaign_items (campaign_id, contact_id, email, status, attempts,"
            " smtp_code, smtp_reply, sent_at, created_at, updated_at)"
            " SELECT $1, c.id, c.email,"
            "  CASE WHEN c.id % 100 = 0 THEN 'bounced' WHEN c.id % 97 = 0 THEN 'failed'"
            "       ELSE 'sent' END, 1, 250, '250 2.0.0 Ok: queued as 4Zx1Yb2Kq7z',"
            "  now() - interval '40 days', now() - interval '40 days', now() - interval '40 days'"
            " FROM contacts c ORDER BY c.id LIMIT $2",
            campaign_id,
            size,
        )
        log(f"history campaign {campaign_id}: {size} items in {time.monotonic() - started:.1f} s")
        ids.append(campaign_id)
        left -= size
    return ids


async def database_work(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT blks_hit, blks_read, tup_returned, tup_fetched FROM pg_stat_database"
        " WHERE datname = current_database()"
    )
    assert row is not None
    return dict(row)


async def generate(settings: Settings, list_id: int, admin: asyncpg.Connection) -> dict[str, Any]:
    """A fresh campaign through ItemGenerator.run_due; work from pg_stat_database deltas
    (the generator's connections exit before the second reading, flushing their stats)."""
    campaign_id = await new_campaign(admin, list_id, "scheduled")
    await admin.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(1.2)
    before = await database_work(admin)
    pool = await create_pool(settings)
    broker = make_broker(settings)
    await broker.connect()
    try:
        runtime = Runtime.build(settings, pool, broker)
        started = time.monotonic()
        await ItemGenerator(runtime).run_due()
        seconds = time.monotonic() - started
    finally:
        await broker.stop()
        await pool.close()
    await asyncio.sleep(1.2)
    await admin.execute("SELECT pg_stat_force_next_flush()")
    after = await database_work(admin)
    items = await admin.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    pages = math.ceil(items / settings.items_page_size)
    buffers = (after["blks_hit"] + after["blks_read"]) - (before["blks_hit"] + before["blks_read"])
    return {
        "campaign_id": campaign_id,
        "items": items,
        "pages": pages,
        "seconds": round(seconds, 3),
        "seconds_per_page": round(seconds / max(pages, 1), 4),
        "buffers_per_page": round(buffers / max(pages, 1)),
        "disk_reads_per_page": round((after["blks_read"] - before["blks_read"]) / max(pages, 1)),
    }


def plan_figures(plan: list[dict[str, Any]]) -> dict[str, Any]:
    top = plan[0]
    root = top["Plan"]
    return {
        "ms": round(top["Execution Time"], 3),
        "shared_hit": root.get("Shared Hit Blocks", 0),
        "shared_read": root.get("Shared Read Blocks", 0),
    }


@contextlib.asynccontextmanager
async def _rolled_back(conn: asyncpg.Connection) -> AsyncIterator[None]:
    tx = conn.transaction()
    await tx.start()
    try:
        yield
    finally:
        await tx.rollback()


async def explain(conn: asyncpg.Connection, query: str, *args: Any) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of a statement that writes, in a transaction rolled back;
    the median of five runs (the first warms the cache)."""
    runs = []
    for _ in range(5):
        async with _rolled_back(conn):
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", *args)
        runs.append(plan_figures(json.loads(raw)))
    async with _rolled_back(conn):
        text = "\n".join(
            r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", *args)
        )
    return {
        "ms_median": statistics.median(r["ms"] for r in runs[1:]),
        "buffers_median": statistics.median(r["shared_hit"] + r["shared_read"] for r in runs[1:]),
        "runs": runs,
        "plan": text,
    }


async def measure(
    name: str, settings: Settings, list_id: int, admin: asyncpg.Connection
) -> dict[str, Any]:
    log(f"scenario {name}: campaign_items holds {await rows(admin)} rows")
    generation = await generate(settings, list_id, admin)
    campaign_id = generation["campaign_id"]
    log(f"scenario {name}: generation {generation}")
    await admin.execute("UPDATE campaigns SET status = 'sending' WHERE id = $1", campaign_id)
    batch = await admin.fetch(
        "SELECT id, email FROM campaign_items WHERE campaign_id = $1 ORDER BY id LIMIT 100",
        campaign_id,
    )
    claim = await explain(
        admin,
        CAMPAIGN_CLAIM,
        [r["id"] for r in batch],
        campaign_id,
        [r["email"] for r in batch],
        list(SENDING_STATUSES),
    )
    log(f"scenario {name}: claim of 100 items {claim['ms_median']} ms, {claim['buffers_median']}")
    # the planner knows the fresh campaign's items only once campaign_items is analysed again
    await admin.execute("ANALYZE campaign_items")
    claim_analyzed = await explain(
        admin,
        CAMPAIGN_CLAIM,
        [r["id"] for r in batch],
        campaign_id,
        [r["email"] for r in batch],
        list(SENDING_STATUSES),
    )
    log(
        f"scenario {name}: claim after ANALYZE {claim_analyzed['ms_median']} ms,"
        f" {claim_analyzed['buffers_median']}"
    )
    skip = await explain(
        admin,
        SKIP_OPEN_ITEMS,
        batch[50]["email"],
        True,
        "unsubscribed (bench)",
        [],
        list(RUNNING_CAMPAIGNS),
    )
    log(f"scenario {name}: unsubscribe skip {skip['ms_median']} ms, {skip['buffers_median']}")
    # the next scenario starts from the same state: no fresh campaign left behind
    await admin.execute("DELETE FROM campaign_items WHERE campaign_id = $1", campaign_id)
    await admin.execute("DELETE FROM campaigns WHERE id = $1", campaign_id)
    await admin.execute("VACUUM ANALYZE campaign_items")
    return {
        "name": name,
        "generation": generation,
        "claim": claim,
        "claim_analyzed": claim_analyzed,
        "unsubscribe_skip": skip,
    }


async def rows(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM campaign_items"))


async def table_sizes(conn: asyncpg.Connection) -> dict[str, str]:
    found = await conn.fetch(
        "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) AS size FROM pg_class"
        " WHERE relname IN ('campaign_items', 'archived_items')"
    )
    return {r["relname"]: r["size"] for r in found}


async def cleanup_broker(settings: Settings) -> None:
    topology = Topology.from_settings(settings)
    connection = await aio_pika.connect(RABBITMQ)
    async with connection:
        channel = await connection.channel()
        for queue in topology.all_queue_names():
            await channel.queue_delete(queue)
        for exchange in topology.exchanges():
            await channel.exchange_delete(exchange.name)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    await recreate_database()
    os.environ.setdefault("MAILROOM_ENVIRONMENT", "development")
    settings = Settings(
        database_url=f"{SERVER}/{DATABASE}",
        rabbitmq_url=RABBITMQ,
        queue_prefix=PREFIX,
        archive_chunk_items=args.chunk,
    )
    await migrate(settings.database_url, create_database=True)
    broker = make_broker(settings)
    await broker.connect()
    await declare_topology(broker, Topology.from_settings(settings))
    await broker.stop()
    admin = await asyncpg.connect(settings.database_url)
    report: dict[str, Any] = {"finished_items": args.finished, "campaign_size": args.campaign_size}
    try:
        log("seeding contacts")
        people = max(args.campaign_size, min(args.finished, args.per_campaign))
        list_id = await seed_people(admin, people, args.campaign_size)
        scenarios = [await measure("empty", settings, list_id, admin)]
        history = await seed_history(admin, args.finished, args.per_campaign)
        started = time.monotonic()
        await admin.execute("VACUUM ANALYZE campaign_items")
        log(f"VACUUM ANALYZE in {time.monotonic() - started:.1f} s")
        report["sizes_with_history"] = await table_sizes(admin)
        scenarios.append(await measure("history", settings, list_id, admin))
        pool = await create_pool(settings)
        try:
            started = time.monotonic()
            moved = 0
            for campaign_id in history:
                result = await archive_campaign(pool, campaign_id, args.chunk)
                moved += result.moved
                log(f"archived campaign {campaign_id}: {result.moved} items")
            seconds = time.monotonic() - started
        finally:
            await pool.close()
        report["archive"] = {
            "items": moved,
            "seconds": round(seconds, 1),
            "items_per_second": round(moved / seconds) if seconds else None,
            "chunk_items": args.chunk,
        }
        log(f"archive: {report['archive']}")
        started = time.monotonic()
        await admin.execute("VACUUM ANALYZE campaign_items")
        await admin.execute("VACUUM ANALYZE archived_items")
        log(f"VACUUM ANALYZE in {time.monotonic() - started:.1f} s")
        report["sizes_archived"] = await table_sizes(admin)
        scenarios.append(await measure("archived", settings, list_id, admin))
        report["scenarios"] = scenarios
    finally:
        await admin.close()
        await cleanup_broker(settings)
        if not args.keep:
            await recreate_database()
    return report


def summary(report: dict[str, Any]) -> str:
    lines = [
        f"{'scenario':<10} {'s/page':>8} {'buffers/page':>13} {'claim ms':>9}"
        f" {'claim buffers':>14} {'analysed ms':>12} {'buffers':>8} {'skip ms':>8}"
        f" {'skip buffers':>13}"
    ]
    for s in report["scenarios"]:
        g, c, k = s["generation"], s["claim"], s["unsubscribe_skip"]
        a = s["claim_analyzed"]
        lines.append(
            f"{s['name']:<10} {g['seconds_per_page']:>8} {g['buffers_per_page']:>13}"
            f" {c['ms_median']:>9} {c['buffers_median']:>14} {a['ms_median']:>12}"
            f" {a['buffers_median']:>8} {k['ms_median']:>8} {k['buffers_median']:>13}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=10_000_000)
    parser.add_argument("--per-campaign", type=int, default=1_000_000)
    parser.add_argument("--campaign-size", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=20_000, help="items archived per chunk")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--json", metavar="FILE", help="write the full report (plans too)")
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2, default=str)
    print(json.dumps({k: v for k, v in result.items() if k != "scenarios"}, default=str))
    print(summary(result))
