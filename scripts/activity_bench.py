"""What contact.activity adds to a campaign: the completion service's work for each
delivery.results, per 1,000 recipients.

In an installation of its own (`mailroom bench`'s: MAILROOM_DATABASE_URL's server, a
database and queue prefix nobody else uses, dropped at the end): --recipients contacts
(every other one with a CRM id), one campaign and as many sent items. Then, batch by batch
(--batch items, as the sender's delivery.results carry), exactly what the completion service
adds for one delivery.results: `activity.delivery_activities` (one statement) and
`activity.publish` (one contact.activity, persistent, confirmed) to the events exchange,
twice: with no queue bound (a CRM that does not listen) and with one queue bound (a CRM that
listens; drained after).

Reports, per 1,000 recipients: CPU seconds of this process (time.process_time: building the
entries, serialising, publishing), wall seconds, contact.activity messages and their bytes;
and EXPLAIN (ANALYZE, BUFFERS) of the statement for one batch.

    .venv/bin/python scripts/activity_bench.py --recipients 100000 [--json]

Timings on a shared machine are noisy; run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aio_pika
import asyncpg
from mailroom_common import activity
from mailroom_common.broker import Topology, declare_topology, make_broker
from mailroom_common.db import create_pool
from mailroom_common.events import ContactActivity, DeliveryResult, DeliveryResults, event_json
from mailroom_common.migrate import migrate
from mailroom_common.runtime import Runtime

from mailroom.bench.installation import BenchInstallation


async def seed(pool: asyncpg.Pool, recipients: int) -> tuple[int, list[int]]:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO contacts (email, first_name, crm_id)"
            " SELECT 'person' || g || '@activity.example', 'P' || g,"
            " CASE WHEN g % 2 = 0 THEN 'crm-' || g END FROM generate_series(1, $1) g",
            recipients,
        )
        campaign_id: int = await conn.fetchval(
            "INSERT INTO campaigns (name, subject, from_email, html_template, status, send_at)"
            " VALUES ('bench', 'Hello', 'news@mailroom.test', '<p>hi</p>', 'draft', now())"
            " RETURNING id"
        )
        await conn.execute(
            "INSERT INTO campaign_items (campaign_id, contact_id, email, status, sent_at)"
            " SELECT $1, id, email, 'sent', now() FROM contacts ORDER BY id",
            campaign_id,
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM campaign_items ORDER BY id")]
        await conn.execute("VACUUM ANALYZE contacts")
        await conn.execute("VACUUM ANALYZE campaign_items")
    return campaign_id, ids


async def run(runtime: Runtime, campaign_id: int, ids: list[int], batch: int) -> dict[str, float]:
    # what the completion service has parsed already
    news = [
        DeliveryResults(
            campaign_id=campaign_id,
            results=[DeliveryResult(item_id=i, status="sent") for i in ids[start : start + batch]],
        )
        for start in range(0, len(ids), batch)
    ]
    messages = 0
    last: list[Any] = []
    cpu, wall = time.process_time(), time.perf_counter()
    for results in news:
        last = await activity.delivery_activities(runtime.pool, results)
        messages += await activity.publish(runtime, last)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    per = 1000 / len(ids)
    return {
        "cpu_seconds_per_1000": round(cpu * per, 4),
        "wall_seconds_per_1000": round(wall * per, 4),
        "messages_per_1000": round(messages * per, 2),
        "bytes_per_message": len(event_json(ContactActivity(activities=last))),
    }


async def explain(pool: asyncpg.Pool, ids: list[int], batch: int) -> list[str]:
    middle = len(ids) // 2
    rows = await pool.fetch(
        "EXPLAIN (ANALYZE, BUFFERS) " + activity.CAMPAIGN_ITEMS.replace("$1::bigint[]", "$1"),
        ids[middle : middle + batch],
    )
    return [r[0] for r in rows]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bench = BenchInstallation()  # a database and queue prefix of its own, dropped at the end
    settings = bench.settings
    await migrate(settings.database_url, create_database=True)
    pool = await create_pool(settings)
    broker = make_broker(settings)
    topology = Topology.from_settings(settings)
    report: dict[str, Any] = {"recipients": args.recipients, "batch": args.batch}
    try:
        await broker.connect()
        await declare_topology(broker, topology)
        runtime = Runtime.build(settings, pool, broker)
        campaign_id, ids = await seed(pool, args.recipients)
        report["nobody_listens"] = await run(runtime, campaign_id, ids, args.batch)
        connection = await aio_pika.connect(settings.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            events = await channel.get_exchange(topology.events.name)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(events, routing_key="contact.activity")
            report["a_crm_listens"] = await run(runtime, campaign_id, ids, args.batch)
            declared = await channel.declare_queue(queue.name, passive=True)
            report["a_crm_listens"]["queued"] = declared.declaration_result.message_count
        report["statement_plan"] = await explain(pool, ids, args.batch)
    finally:
        await broker.stop()
        await pool.close()
        await bench.drop()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if isinstance(value, list):
                print(f"{key}:\n  " + "\n  ".join(value))
            else:
                print(f"{key}: {value}")


if __name__ == "__main__":
    asyncio.run(main())
