"""1,000 one-click unsubscribes, 20 at a time: every one answered 200, every one announced."""

from __future__ import annotations

import asyncio
import json
import time

import aio_pika
import httpx
import pytest
from mailroom_common.broker import Topology
from mailroom_common.signing import Signer

from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.scenario import pool_of
from tests.support.seed import make_audience, make_campaign

pytestmark = pytest.mark.integration

CONTACTS = 1000
CONCURRENCY = 20


async def test_a_thousand_one_click_unsubscribes(installation: Installation) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, CONTACTS)
    campaign_id = await make_campaign(pool, audience)
    process = installation.start_services("subscriptions")  # declares the exchanges
    base = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
    signer = Signer(installation.settings.signing_key.get_secret_value().encode())
    rows = await pool.fetch(
        "SELECT DISTINCT ON (email) id FROM contacts WHERE email = ANY($1::text[])"
        " ORDER BY email, id",
        sorted(audience.eligible),
    )
    assert len(rows) == CONTACTS
    urls = [
        f"{base}/unsubscribe/{signer.link_token(r['id'], f'c{campaign_id}', 'unsubscribe')}"
        for r in rows
    ]

    events: list[dict[str, object]] = []
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(
            Topology.from_settings(installation.settings).events.name,
            routing_key="contact.unsubscribed",
        )

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                events.append(json.loads(message.body))

        await queue.consume(on_event)

        gate = asyncio.Semaphore(CONCURRENCY)
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(timeout=30, limits=limits, follow_redirects=False) as client:

            async def one_click(url: str) -> int:
                async with gate:
                    response = await client.post(url, data={"List-Unsubscribe": "One-Click"})
                    return response.status_code

            started = time.monotonic()
            codes = await asyncio.gather(*(one_click(u) for u in urls))
            took = time.monotonic() - started
        print(f"\n{CONTACTS} one-click unsubscribes in {took:.1f} s ({CONTACTS / took:.0f}/s)")
        assert codes == [200] * CONTACTS

        async def all_announced() -> bool:
            return len(events) >= CONTACTS

        await wait_for(all_announced, 30, f"{CONTACTS} contact.unsubscribed events")
        await asyncio.sleep(0.5)  # and not more than one each
    assert len(events) == CONTACTS
    assert {e["contact_id"] for e in events} == {r["id"] for r in rows}
    assert all(e["everything"] is False and e["list_ids"] for e in events)
    still = await pool.fetchval(
        "SELECT count(*) FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
        " WHERE lower(c.email) = ANY($1::text[]) AND m.status = 'subscribed'",
        sorted(audience.eligible),
    )
    assert still == 0
    assert "Traceback" not in installation.log_text()
