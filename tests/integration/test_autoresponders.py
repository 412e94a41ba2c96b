"""Autoresponders through the real services, RabbitMQ, PostgreSQL and an SMTP server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import asyncpg
import pytest
from mailroom_common.events import ContactEvent, ContactSubscribed
from mailroom_common.signing import Signer

from mailroom.autoresponders import (
    set_enabled,
)
from mailroom.contacts_import import import_contacts
from tests.support.autoresponders import (
    HTML,
    make_autoresponder,
    make_contact,
    make_list,
    received_by,
    trigger,
)
from tests.support.cli import run_mailroom
from tests.support.environment import Installation, wait_for
from tests.support.scenario import launched_campaign, pool_of, received_count, smtp_received
from tests.support.seed import use_smtp_server
from tests.support.smtp import Received, SmtpServer

pytestmark = pytest.mark.integration

VERP = re.compile(r"^bounces\+(a\d+)-([a-z2-7]+)@bounces\.mailroom\.test$")


def check_autoresponder_message(
    install: Installation, received: Received, autoresponder_id: int, item_id: int
) -> None:
    message = received.message
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Mailroom-Item"] == f"a{item_id}"
    match = VERP.match(received.envelope_from)
    assert match is not None and match.group(1) == f"a{item_id}", received.envelope_from
    signer = Signer(install.settings.signing_key.get_secret_value().encode())
    assert signer.verify_verp_address(received.envelope_from) == f"a{item_id}"
    token = re.search(r"/unsubscribe/([\w.-]+)", received.part("plain"))
    assert token is not None
    claims = signer.verify_link_token(token.group(1))
    assert claims.source == f"a{autoresponder_id}" and claims.purpose == "unsubscribe"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Welcome Ann!" in received.part("plain")


async def test_autoresponder_overtakes_a_large_campaign(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    welcome = await make_list(pool, "welcome")
    autoresponder_id = await make_autoresponder(installation, "Welcome", list_name="welcome")
    contact_id = await make_contact(pool, "newbie@welcome.test", welcome)
    _, campaign_id, _ = await launched_campaign(installation, smtp_server, 20_000)
    await smtp_received(smtp_server, 1000, limit=120)  # the campaign's backlog is there

    started = time.monotonic()
    await trigger(
        installation, ContactSubscribed(contact_id=contact_id, list_id=welcome, event_id="s-1")
    )

    async def arrived() -> bool:
        return bool(received_by(smtp_server, "newbie@welcome.test"))

    await wait_for(arrived, 60, "the autoresponder email", interval=0.02)
    latency = time.monotonic() - started
    campaign_sent = received_count(smtp_server) - 1
    backlog = await pool.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1"
        " AND status IN ('pending', 'queued', 'retry')",
        campaign_id,
    )
    print(
        f"\ncontact.subscribed -> SMTP in {latency * 1000:.0f} ms while a 20,000-recipient"
        f" campaign was sending ({campaign_sent} sent, {backlog} still waiting)"
    )
    assert campaign_sent < 20_000, "the campaign finished first: no backlog was overtaken"
    item_id = await pool.fetchval("SELECT id FROM autoresponder_items")
    (received,) = received_by(smtp_server, "newbie@welcome.test")
    check_autoresponder_message(installation, received, autoresponder_id, item_id)
    await wait_for(
        lambda: _item_status_is(pool, item_id, "sent"), 30, "the item to be recorded as sent"
    )


async def _item_status_is(pool: asyncpg.Pool, item_id: int, status: str) -> bool:
    current = await pool.fetchval("SELECT status FROM autoresponder_items WHERE id = $1", item_id)
    return bool(current == status)


async def test_delayed_autoresponder_fires_once_after_its_delay_across_a_restart(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    await use_smtp_server(pool, smtp_server.port)
    welcome = await make_list(pool, "welcome")
    await make_autoresponder(installation, "Later", list_name="welcome", delay_seconds=3)
    contact_id = await make_contact(pool, "later@welcome.test", welcome)
    process = installation.start_services()

    started = time.monotonic()
    await trigger(
        installation, ContactSubscribed(contact_id=contact_id, list_id=welcome, event_id="d-1")
    )
    await asyncio.sleep(1.5)
    assert received_count(smtp_server) == 0, "sent before its delay"
    assert await pool.fetchval("SELECT status FROM autoresponder_items") == "pending"
    installation.terminate(process)
    assert received_count(smtp_server) == 0, "sent before its delay"
    installation.start_services(log_name="restarted")

    await smtp_received(smtp_server, 1, limit=30)
    waited = time.monotonic() - started
    print(f"\na 3 s autoresponder arrived {waited:.1f} s after its trigger (with a restart)")
    assert waited >= 3.0
    await asyncio.sleep(2)
    assert received_count(smtp_server) == 1
    row = await pool.fetchrow("SELECT status, due_at, created_at, sent_at FROM autoresponder_items")
    assert row is not None and row["status"] == "sent"
    assert (row["due_at"] - row["created_at"]).total_seconds() == pytest.approx(3, abs=0.01)
    assert row["sent_at"] >= row["due_at"]


async def test_autoresponder_sends_once_and_never_when_it_should_not(
    installation: Installation, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    pool = pool_of(installation)
    await use_smtp_server(pool, smtp_server.port)
    welcome = await make_list(pool, "welcome")
    welcome_id = await make_autoresponder(installation, "Welcome", list_name="welcome")
    await make_autoresponder(installation, "Old welcome", list_name="welcome", enabled=False)
    signup_id = await make_autoresponder(
        installation, "Thanks", trigger="contact.event", event_type="signup"
    )
    alice = await make_contact(pool, "alice@example.com", welcome)
    ulla = await make_contact(pool, "ulla@example.com", welcome, status="unsubscribed")
    sam = await make_contact(pool, "sam@example.com", welcome)
    await pool.execute(
        "INSERT INTO suppressions (email, reason) VALUES ($1, 'manual')", "sam@example.com"
    )
    installation.start_services()

    subscribed = ContactSubscribed(contact_id=alice, list_id=welcome, event_id="w-1")
    signup = ContactEvent(contact_id=alice, type="signup", event_id="e-1", data={"plan": "pro"})
    await trigger(
        installation,
        subscribed,
        subscribed,  # the same event again (a redelivery, or the CRM sending it twice)
        signup,
        signup,
        ContactEvent(contact_id=alice, type="other", event_id="e-2"),
        ContactSubscribed(contact_id=ulla, list_id=welcome, event_id="w-2"),
        ContactSubscribed(contact_id=sam, list_id=welcome, event_id="w-3"),
    )
    await smtp_received(smtp_server, 2, limit=30)

    async def settled() -> bool:
        open_items = await pool.fetchval(
            "SELECT count(*) FROM autoresponder_items"
            " WHERE status IN ('pending', 'queued', 'sending', 'retry')"
        )
        return bool(open_items == 0)

    await wait_for(settled, 30, "every autoresponder item to be settled")
    await asyncio.sleep(1)
    assert smtp_server.handler.recipients() == {"alice@example.com": 2}
    subjects = sorted(
        str(r.message["Subject"]) for r in received_by(smtp_server, "alice@example.com")
    )
    assert subjects == ["Thanks for Ann", "Welcome for Ann"]
    rows = await pool.fetch(
        "SELECT autoresponder_id, contact_id, status, error, data FROM autoresponder_items"
        " ORDER BY id"
    )
    outcome = {(r["autoresponder_id"], r["contact_id"]): r["status"] for r in rows}
    assert outcome == {
        (welcome_id, alice): "sent",
        (signup_id, alice): "sent",
        (welcome_id, ulla): "skipped",
        (welcome_id, sam): "suppressed",
    }
    assert [r["data"] for r in rows if r["autoresponder_id"] == signup_id] == [{"plan": "pro"}]

    # disabled: a new subscription creates nothing and sends nothing
    assert await set_enabled(pool, welcome_id, False)
    await trigger(
        installation, ContactSubscribed(contact_id=alice, list_id=welcome, event_id="w-9")
    )
    await asyncio.sleep(2)
    assert received_count(smtp_server) == 2
    assert await pool.fetchval("SELECT count(*) FROM autoresponder_items") == 4

    # enabled again: `contacts import` announces the new membership and the welcome goes out
    assert await set_enabled(pool, welcome_id, True)
    people = tmp_path / "people.csv"
    people.write_text("email,first_name\nann@example.org,Ann\nalice@example.com,Alice\n")
    report = await import_contacts(pool, people, "welcome", installation.settings)
    assert report.subscribed == 1  # alice was on the list already
    await smtp_received(smtp_server, 3, limit=30)
    await asyncio.sleep(1)
    assert smtp_server.handler.recipients() == {"alice@example.com": 2, "ann@example.org": 1}


async def test_autoresponder_cli(installation: Installation, tmp_path: Path) -> None:
    pool = pool_of(installation)
    await make_list(pool, "welcome")
    html = tmp_path / "welcome.html"
    html.write_text(HTML)
    broken = tmp_path / "broken.html"
    broken.write_text("<p>{{ contact.first_name </p>")

    created = await run_mailroom(
        installation.env, "autoresponder", "create", "--name", "Welcome", "--subject", "Hi",
        "--html", html,
        "--list", "welcome", "--delay", "2h", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    welcome_id = json.loads(created.stdout)["id"]
    event = await run_mailroom(
        installation.env, "autoresponder", "create", "--name", "Thanks", "--subject", "Thanks",
        "--html", html,
        "--trigger", "contact.event", "--event-type", "signup", "--disabled",
    )  # fmt: skip
    assert event.returncode == 0, event.stderr
    for bad in (
        ("--list", "nowhere"),
        ("--html", broken, "--list", "welcome"),
        ("--trigger", "contact.event"),
        ("--delay", "soon", "--list", "welcome"),
    ):
        args = ("autoresponder", "create", "--name", "Bad", "--subject", "x", "--html", html, *bad)
        failed = await run_mailroom(installation.env, *args)
        assert failed.returncode == 2 and "error:" in failed.stderr, (bad, failed.stderr)

    assert (
        await run_mailroom(installation.env, "autoresponder", "disable", welcome_id)
    ).returncode == 0
    assert (
        await run_mailroom(installation.env, "autoresponder", "enable", str(welcome_id + 1))
    ).returncode == 0
    assert (await run_mailroom(installation.env, "autoresponder", "enable", "999")).returncode == 2
    listed = await run_mailroom(installation.env, "autoresponder", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert (
        rows["Welcome"]["trigger"] == "contact.subscribed" and rows["Welcome"]["list"] == "welcome"
    )
    assert rows["Welcome"]["delay_seconds"] == 7200 and not rows["Welcome"]["enabled"]
    assert rows["Thanks"]["event_type"] == "signup" and rows["Thanks"]["enabled"]
    table = await run_mailroom(installation.env, "autoresponder", "list")
    assert table.returncode == 0 and "Welcome" in table.stdout


async def test_autoresponder_retries_stay_on_the_priority_lane(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    await use_smtp_server(pool, smtp_server.port)
    welcome = await make_list(pool, "welcome")
    await make_autoresponder(installation, "Welcome", list_name="welcome")
    contact_id = await make_contact(pool, "retry@welcome.test", welcome)
    installation.start_services()
    smtp_server.handler.soft_fail.add("retry@welcome.test")  # 451 until removed

    await trigger(
        installation, ContactSubscribed(contact_id=contact_id, list_id=welcome, event_id="r-1")
    )

    async def retried() -> bool:
        return bool(await pool.fetchval("SELECT status = 'retry' FROM autoresponder_items"))

    await wait_for(retried, 30, "a temporary failure")
    smtp_server.handler.soft_fail.clear()
    await smtp_received(smtp_server, 1, limit=30)  # the first tier is 1 s
    row = await pool.fetchrow("SELECT id, attempts FROM autoresponder_items")
    assert row is not None and row["attempts"] == 2
    await wait_for(
        lambda: _item_status_is(pool, row["id"], "sent"), 10, "the retried item to be sent"
    )


async def test_contacts_subscribe_triggers_the_welcome_once(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    await use_smtp_server(pool, smtp_server.port)
    await make_list(pool, "welcome")
    await make_autoresponder(installation, "Welcome", list_name="welcome")
    installation.start_services()

    args = ("contacts", "subscribe", "new.reader@example.com", "--list", "welcome")
    first = await run_mailroom(installation.env, *args, "--first-name", "Ann", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["newly_subscribed"] is True

    async def welcomed() -> bool:
        return bool(received_by(smtp_server, "new.reader@example.com"))

    await wait_for(welcomed, 60, "the welcome email")
    again = await run_mailroom(installation.env, *args, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["newly_subscribed"] is False
    bad = await run_mailroom(
        installation.env, "contacts", "subscribe", "not-an-address", "--list", "x"
    )
    assert bad.returncode == 2 and "invalid email" in bad.stderr
    await asyncio.sleep(2)
    assert len(received_by(smtp_server, "new.reader@example.com")) == 1
