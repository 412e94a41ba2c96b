"""contact.activity for the CRM's timeline, on the real broker: a queue the CRM binds itself
gets one entry per recipient in a handful of messages, then the bounces, the complaint, the
unsubscribe and the preferences change, each with the CRM's contact id."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import httpx
import pytest
from mailroom_common import activity
from mailroom_common.broker import Topology
from mailroom_common.events import (
    CampaignLaunch,
    ContactSubscribed,
    ContactUnsubscribed,
    DeliveryResult,
    DeliveryResults,
)
from mailroom_common.runtime_settings import BounceMailbox, SettingsStore

from mailroom.campaigns import send_command
from tests.integration.test_provider_webhooks import (
    JSON_TYPE,
    MAILGUN_KEY,
    mailgun_call,
    mailgun_event,
)
from tests.support.autoresponders import make_autoresponder, make_contact, make_list, trigger
from tests.support.crm import Crm
from tests.support.crm import crm as listening_crm
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.queues import queue_depth
from tests.support.scenario import campaign_reaches, launched_campaign
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

RECIPIENTS = 1000
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
async def crm(installation: Installation) -> AsyncIterator[Crm]:
    """A CRM bound to contact.activity and, to compare, contact.unsubscribed."""
    async with listening_crm(installation, ContactUnsubscribed.routing_key) as client:
        yield client


async def test_the_crm_hears_of_every_recipient_and_every_change(
    installation: Installation, smtp_server: SmtpServer, crm: Crm
) -> None:
    pool = installation.pool
    assert pool is not None
    await SettingsStore(pool, installation.settings.settings_key).save(
        BounceMailbox(mailgun_signing_key=MAILGUN_KEY), changed_by="tests"
    )
    audience = await make_audience(pool, RECIPIENTS)
    # the contacts that came from the CRM have its ids; the others came by CSV
    await pool.execute("UPDATE contacts SET crm_id = 'crm-' || id WHERE id % 2 = 0")
    people = sorted(audience.eligible)
    hard, policy = set(people[:2]), people[2]
    smtp_server.handler.hard_fail.update(hard)  # 550 5.1.1 at RCPT: a hard bounce at once
    smtp_server.handler.rcpt_replies[policy] = "550 5.7.1 Message refused by policy"
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    process = installation.start_services()
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)
    assert status["counts"] == {"sent": RECIPIENTS - 3, "failed": 3}, status

    # one entry per recipient, in about one message per batch of the sender
    sent = await crm.timeline.until("sent", RECIPIENTS - 3)
    bounced, failed = crm.timeline.entries("bounced"), crm.timeline.entries("failed")
    items = {
        r["id"]: r
        for r in await pool.fetch(
            "SELECT i.id, i.status, i.contact_id, lower(i.email) AS email, c.crm_id"
            " FROM campaign_items i JOIN contacts c ON c.id = i.contact_id"
            " WHERE i.campaign_id = $1",
            campaign_id,
        )
    }
    assert len(items) == RECIPIENTS
    entries = sent + bounced + failed
    assert sorted(e.item_id or 0 for e in entries) == sorted(items), "one entry per recipient"
    for entry in entries:
        item = items[entry.item_id]
        assert entry.campaign_id == campaign_id and entry.autoresponder_id is None
        assert (entry.contact_id, entry.crm_contact_id) == (item["contact_id"], item["crm_id"])
        assert entry.email.lower() == item["email"]
    assert {e.crm_contact_id is None for e in entries} == {True, False}, "CSV and CRM contacts"
    assert {e.email.lower() for e in bounced} == hard
    assert {e.bounce_kind for e in bounced} == {"hard"}
    assert [e.email.lower() for e in failed] == [policy] and "5.7.1" in (failed[0].detail or "")
    batches = math.ceil(RECIPIENTS / installation.settings.batch_size)
    messages = len(crm.timeline.messages)
    assert messages <= batches, f"{messages} messages for {batches} batches"
    print(f"\n{RECIPIENTS} recipients: {messages} contact.activity messages")

    # bounces and a complaint by the provider's webhook, matched by our Message-ID
    by_address = {r.recipients[0].lower(): r for r in smtp_server.handler.received}
    soft, complainer, leaver, chooser = people[3:7]
    calls = [
        mailgun_event(soft, by_address[soft].message_id, severity="temporary"),
        mailgun_event(complainer, by_address[complainer].message_id, "complained"),
    ]
    public = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=public, timeout=10) as client:
        for call in calls:
            answer = await client.post(
                "/webhooks/mailgun", content=mailgun_call(call), headers=JSON_TYPE
            )
            assert answer.status_code == 200, answer.text
        # an unsubscribe (RFC 8058 one-click) and a preferences change, from the footer's links
        leave = _link(by_address[leaver].part("plain"), "unsubscribe")
        answer = await client.post(f"/unsubscribe/{leave}", data=ONE_CLICK)
        assert answer.status_code == 200
        manage = _link(by_address[chooser].part("plain"), "preferences")
        answer = await client.post(f"/preferences/{manage}", data={"action": "save"})
        assert answer.status_code == 200
        answer = await client.post(
            f"/preferences/{manage}",
            data={"action": "save", "list": str(await _list_of(pool, chooser))},
        )
        assert answer.status_code == 200

    later = {
        "bounced": await crm.timeline.until("bounced", 3),
        "complained": await crm.timeline.until("complained", 1),
        "unsubscribed": await crm.timeline.until("unsubscribed", 1),
        "preferences_changed": await crm.timeline.until("preferences_changed", 2),
    }
    [soft_bounce] = [e for e in later["bounced"] if e.email.lower() == soft]
    assert soft_bounce.bounce_kind == "soft"
    assert [e.email.lower() for e in later["complained"]] == [complainer]
    [left] = later["unsubscribed"]
    assert left.email.lower() == leaver and left.list_ids and left.campaign_id == campaign_id
    assert [e.email.lower() for e in later["preferences_changed"]] == [chooser, chooser]
    gone, back = later["preferences_changed"]
    assert gone.list_ids and not gone.joined_list_ids
    assert back.joined_list_ids == [await _list_of(pool, chooser)] and not back.list_ids
    contacts = {e.item_id: e for e in entries}
    for entry in [soft_bounce, *later["complained"], left, gone, back]:
        known = next(e for e in contacts.values() if e.email.lower() == entry.email.lower())
        assert (entry.contact_id, entry.crm_contact_id) == (known.contact_id, known.crm_contact_id)
    # the unsubscribe is announced as before too: the activity is in addition
    assert [u["email"].lower() for u in crm.heard("contact.unsubscribed")] == [leaver, chooser]
    assert await _dead_letters(installation) == 0


def _link(text: str, page: str) -> str:
    found = re.search(rf"/{page}/([\w.-]+)", text)
    assert found is not None, text
    return found.group(1)


async def _list_of(pool: asyncpg.Pool, email: str) -> int:
    list_id: int = await pool.fetchval(
        "SELECT m.list_id FROM list_memberships m JOIN contacts c ON c.id = m.contact_id"
        " WHERE lower(c.email) = $1 ORDER BY m.list_id LIMIT 1",
        email,
    )
    return list_id


async def _dead_letters(installation: Installation) -> int:
    topology = Topology.from_settings(installation.settings)
    return sum([await queue_depth(name) for name in topology.dead_letter_queue_names()])


async def test_switched_off_nothing_is_looked_up_or_published(smtp_server: SmtpServer) -> None:
    """MAILROOM_ACTIVITY_EVENTS=false: the same campaign, and not one contact.activity."""
    off = Installation(activity_events="false")
    await off.setup()
    try:
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            events = await channel.declare_exchange(
                f"{off.settings.queue_prefix}.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(events, routing_key="contact.activity")
            await queue.bind(events, routing_key="delivery.results")
            _, campaign_id, _ = await launched_campaign(off, smtp_server, 300)
            await campaign_reaches(off, campaign_id)
            kinds: list[str] = []

            async def results_arrived() -> bool:
                while (message := await queue.get(fail=False)) is not None:
                    await message.ack()
                    kinds.append(message.routing_key or "")
                return len(kinds) >= 3

            await wait_for(results_arrived, 30, "the delivery.results of the campaign")
            await asyncio.sleep(1)  # the completion service has handled them by now
            await results_arrived()
        assert set(kinds) == {"delivery.results"}
    finally:
        await off.teardown()


async def test_an_autoresponder_email_is_on_the_timeline_too(
    installation: Installation, smtp_server: SmtpServer, crm: Crm
) -> None:
    pool = installation.pool
    assert pool is not None
    await use_smtp_server(pool, smtp_server.port)
    welcome = await make_list(pool, "welcome")
    autoresponder_id = await make_autoresponder(installation, "Welcome", list_name="welcome")
    contact_id = await make_contact(pool, "newbie@welcome.test", welcome)
    await pool.execute("UPDATE contacts SET crm_id = 'crm-newbie' WHERE id = $1", contact_id)
    installation.start_services()
    await trigger(
        installation, ContactSubscribed(contact_id=contact_id, list_id=welcome, event_id="s-1")
    )
    [sent] = await crm.timeline.until("sent", 1)
    item_id = await pool.fetchval("SELECT id FROM autoresponder_items")
    assert (sent.autoresponder_id, sent.campaign_id, sent.item_id) == (
        autoresponder_id,
        None,
        item_id,
    )
    assert (sent.contact_id, sent.crm_contact_id) == (contact_id, "crm-newbie")


async def test_a_delivery_result_handled_again_repeats_its_entries_exactly(
    installation: Installation,
) -> None:
    """The completion service publishes before it acknowledges: a delivery.results handled
    twice (a broker error after the publish) gives the same entries, `at` included, so the
    CRM's (kind, item_id, at) tells the repeat from a new event."""
    pool = installation.pool
    assert pool is not None
    audience = await make_audience(pool, 3)
    campaign_id = await make_campaign(pool, audience)
    contacts = await pool.fetch("SELECT id, email FROM contacts ORDER BY id LIMIT 3")
    item_ids = [
        await pool.fetchval(
            "INSERT INTO campaign_items (campaign_id, contact_id, email)"
            " VALUES ($1, $2, $3) RETURNING id",
            campaign_id,
            c["id"],
            c["email"],
        )
        for c in contacts
    ]
    sent, failed, refused = item_ids
    await pool.execute(
        "UPDATE campaign_items SET status = 'sending' WHERE id = ANY($1::bigint[])", item_ids
    )
    await pool.execute(
        "UPDATE campaign_items SET status = 'sent', sent_at = now() WHERE id = $1", sent
    )
    await pool.execute("UPDATE campaign_items SET status = 'failed' WHERE id = $1", failed)
    await pool.execute(
        "UPDATE campaign_items SET status = 'failed', bounce_kind = 'hard' WHERE id = $1", refused
    )
    results = DeliveryResults(
        campaign_id=campaign_id,
        results=[
            DeliveryResult(item_id=sent, status="sent", smtp_reply="250 ok"),
            DeliveryResult(item_id=failed, status="failed", smtp_reply="554 no"),
            DeliveryResult(item_id=refused, status="failed", smtp_reply="550 5.1.1 unknown"),
        ],
    )
    first = await activity.delivery_activities(pool, results)
    again = await activity.delivery_activities(pool, results)
    assert sorted(a.kind for a in first) == ["bounced", "failed", "sent"]
    assert first == again
    changed = {
        r["id"]: r["updated_at"]
        for r in await pool.fetch(
            "SELECT id, updated_at FROM campaign_items WHERE id = ANY($1::bigint[])", item_ids
        )
    }
    assert all(a.at == changed[a.item_id] for a in first if a.kind != "sent")
