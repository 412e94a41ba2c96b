"""Times the item generator on a large audience: the snapshot, every page, all published.

    MAILROOM_DATABASE_URL=postgresql://postgres@127.0.0.1/mailroom_me_gen \\
    MAILROOM_QUEUE_PREFIX=me-gen MAILROOM_ENVIRONMENT=development \\
    .venv/bin/python scripts/generation_bench.py --contacts 1000000 --json

The audience is written with generate_series (not through the CLI): `--contacts` subscribed
contacts on two lists, plus 1 % of them again upper-cased on the other list and 1 % more
suppressed. It is written once; later runs reuse it and start from an empty campaign_items.
The database is this benchmark's own: its campaigns and items are truncated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from mailroom_common.broker import declare_topology, make_broker
from mailroom_common.db import create_pool
from mailroom_common.events import Event
from mailroom_common.migrate import migrate
from mailroom_common.runtime import Runtime
from mailroom_common.settings import Settings
from mailroom_item_generator.generator import ItemGenerator, Page

SEED = """
INSERT INTO lists (name) VALUES ('bench-a'), ('bench-b');
INSERT INTO contacts (email, first_name, last_name)
SELECT 'user' || g || '@bench.example.test', 'First' || g, 'Last' || g
FROM generate_series(1, {n}) g;
INSERT INTO list_memberships (list_id, contact_id)
SELECT (SELECT l.id FROM lists l
        WHERE l.name = CASE WHEN c.id % 2 = 0 THEN 'bench-a' ELSE 'bench-b' END),
       c.id FROM contacts c;
INSERT INTO contacts (email) SELECT upper(email) FROM contacts WHERE id % 100 = 0;
INSERT INTO contacts (email)
SELECT 'gone' || g || '@bench.example.test' FROM generate_series(1, {n} / 100) g;
INSERT INTO list_memberships (list_id, contact_id)
SELECT (SELECT id FROM lists WHERE name = 'bench-b'), id FROM contacts
WHERE email LIKE 'USER%' OR email LIKE 'gone%';
INSERT INTO suppressions (email, reason)
SELECT email, 'hard_bounce' FROM contacts WHERE email LIKE 'gone%';
ANALYZE contacts; ANALYZE list_memberships; ANALYZE suppressions;
"""


class TimedGenerator(ItemGenerator):
    snapshot_s = 0.0
    page_s: list[float]  # saving a page (its transaction)
    publish_s: list[float]  # publishing it, confirmed (up to PUBLISHING_AHEAD at a time)
    publishing = True

    async def _snapshot(self, campaign_id: int) -> bool:
        started = time.monotonic()
        try:
            return await super()._snapshot(campaign_id)
        finally:
            self.snapshot_s = time.monotonic() - started

    async def _next_page(self, campaign_id: int) -> Page | str:
        started = time.monotonic()
        page = await super()._next_page(campaign_id)
        if isinstance(page, Page):
            self.page_s.append(time.monotonic() - started)
        return page

    async def _publish_page(self, campaign_id: int, page_id: int, item_ids: list[int]) -> None:
        started = time.monotonic()
        if self.publishing:
            await super()._publish_page(campaign_id, page_id, item_ids)
        self.publish_s.append(time.monotonic() - started)


def _ms(seconds: list[float], share: float) -> float | None:
    ordered = sorted(seconds)
    return round(ordered[int(len(ordered) * share)] * 1000, 2) if ordered else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-broker", action="store_true", help="save the pages without publishing them"
    )
    args = parser.parse_args()
    settings = Settings()
    await migrate(settings.database_url, create_database=True)
    pool = await create_pool(settings)
    seeded = 0.0
    if not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM lists WHERE name = 'bench-a')"):
        started = time.monotonic()
        await pool.execute(SEED.format(n=args.contacts), timeout=3600)
        seeded = time.monotonic() - started
    await pool.execute("TRUNCATE campaigns, campaign_items, item_pages CASCADE")
    campaign_id = await pool.fetchval(
        "INSERT INTO campaigns (name, subject, from_email, html_template, status)"
        " VALUES ('bench', 'News', 'news@bench.example.test', '<p>Hi</p>', 'generating')"
        " RETURNING id"
    )
    await pool.execute(
        "INSERT INTO campaign_lists (campaign_id, list_id)"
        " SELECT $1, id FROM lists WHERE name LIKE 'bench-%'",
        campaign_id,
    )
    broker = make_broker(settings)
    runtime = Runtime.build(settings, pool, broker)
    if not args.no_broker:
        await broker.connect()
        await declare_topology(broker, runtime.topology)
    generator = TimedGenerator(runtime)
    generator.publishing = not args.no_broker
    if args.no_broker:

        async def unannounced(event: Event) -> None:
            pass

        runtime.announce = unannounced  # type: ignore[method-assign]
    generator.page_s, generator.publish_s = [], []
    started = time.monotonic()
    await generator.run_due()
    total = time.monotonic() - started
    items = await pool.fetchval("SELECT count(*) FROM campaign_items")
    unpublished = await pool.fetchval("SELECT count(*) FROM item_pages WHERE published_at IS NULL")
    if not args.no_broker:
        queue = await broker.declare_queue(runtime.topology.item_pages)
        await queue.purge()
        await broker.stop()
    await pool.close()
    pages = generator.page_s
    figures = {
        "contacts": args.contacts,
        "seed_s": round(seeded, 1),
        "items": items,
        "snapshot_s": round(generator.snapshot_s, 2),
        "pages": len(pages),
        "page_save_ms_p50": _ms(pages, 0.5),
        "page_save_ms_p99": _ms(pages, 0.99),
        "page_publish_ms_p50": _ms(generator.publish_s, 0.5),
        "page_publish_ms_p99": _ms(generator.publish_s, 0.99),
        "pages_s": round(total - generator.snapshot_s, 2),
        "total_s": round(total, 2),
        "unpublished_pages": unpublished,
    }
    print(json.dumps(figures) if args.json else "\n".join(f"{k}: {v}" for k, v in figures.items()))


if __name__ == "__main__":
    asyncio.run(main())
