"""The bounce processor against a real Dovecot, PostgreSQL and RabbitMQ: bounces of a real
campaign, a Dovecot crash in the middle of a batch, wrong credentials, malformed messages."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import ContactSubscribed
from mailroom_common.runtime_settings import BounceMailbox

from tests.support import bounce_messages as bm
from tests.support.autoresponders import (
    make_autoresponder,
    make_contact,
    make_list,
    received_by,
    trigger,
)
from tests.support.dovecot import PASSWORD, USER, Dovecot, running_dovecot
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.scenario import campaign_reaches, change_settings, launched_campaign, pool_of
from tests.support.seed import use_smtp_server
from tests.support.smtp import Received, SmtpServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def mailbox(dovecot: Dovecot, **changes: object) -> BounceMailbox:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": dovecot.imap_port,
        "security": "none",
        "username": USER,
        "password": PASSWORD,
        "poll_interval_seconds": 1,
        **changes,
    }
    return BounceMailbox.model_validate(values)


@asynccontextmanager
async def published(
    installation: Installation, routing_key: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event of `routing_key` published on the events exchange while it is open."""
    received: list[dict[str, Any]] = []
    topology = Topology.from_settings(installation.settings)
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            topology.events.name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=routing_key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                received.append(json.loads(message.body))

        await queue.consume(on_message)
        yield received


@pytest.fixture
async def bounce_events(installation: Installation) -> AsyncIterator[list[dict[str, object]]]:
    """Every bounce.detected published while the test runs."""
    async with published(installation, "bounce.detected") as received:
        yield received


@pytest.fixture
async def activities(installation: Installation) -> AsyncIterator[list[dict[str, Any]]]:
    """Every contact.activity published while the test runs (a CRM's queue)."""
    async with published(installation, "contact.activity") as received:
        yield received


async def mailbox_drained(installation: Installation, dovecot: Dovecot, messages: int) -> None:
    pool = pool_of(installation)

    async def done() -> bool:
        processed = await pool.fetchval("SELECT count(*) FROM processed_messages")
        return bool(processed >= messages and await dovecot.count() == 0)

    try:
        await wait_for(done, 120, f"{messages} messages processed and the mailbox empty", 0.5)
    except AssertionError as error:
        raise AssertionError(f"{error}\ndovecot.log:\n{dovecot.log()[-3000:]}") from None


def readiness(process: object) -> httpx.Response:
    port = process.ops_port  # type: ignore[attr-defined]
    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)


def metrics_of(process: object) -> str:
    port = process.ops_port  # type: ignore[attr-defined]
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


# --- (a) a campaign's messages bouncing -----------------------------------------------------


async def test_bounces_of_a_campaign_update_items_and_suppressions(
    installation: Installation,
    smtp_server: SmtpServer,
    dovecot: Dovecot,
    bounce_events: list[dict[str, object]],
    activities: list[dict[str, Any]],
) -> None:
    pool = pool_of(installation)
    _audience, campaign_id, _ = await launched_campaign(installation, smtp_server, 12)
    status = await campaign_reaches(installation, campaign_id)
    assert status["counts"] == {"sent": 12}
    by_rcpt: dict[str, Received] = {
        r.recipients[0].lower(): r for r in smtp_server.handler.received
    }
    people = sorted(by_rcpt)
    hard, complained, away, soft, delayed, by_address, soft_once = people[:7]
    attacker, second, bad_signature, non_ascii = people[7:11]

    def verp(rcpt: str) -> str:
        return by_rcpt[rcpt].envelope_from

    forged = verp(bad_signature).replace("-", "-x", 1)[:-1]
    messages = [
        bm.dsn(verp(hard), hard, original=by_rcpt[hard].data),
        bm.complaint(complained, by_rcpt[complained].data),
        bm.out_of_office(away, "news@mailroom.test"),
        bm.dsn(verp(delayed), delayed, "4.4.1", "delayed", "connection timed out"),
        # no VERP, no returned headers: nothing but an address, which anyone can write
        bm.dsn("postmaster@mailroom.test", by_address),
        bm.dsn(verp(soft_once), soft_once, "4.2.2", diagnostic="452 4.2.2 Mailbox full"),
        *[
            bm.dsn(verp(soft), soft, "4.2.2", diagnostic=f"452 4.2.2 Mailbox full ({n})")
            for n in range(3)
        ],
        # the attacker's own valid VERP, naming a second recipient too
        bm.multi_dsn(verp(attacker), [attacker, second]),
        # a VERP address whose signature is wrong, or not even ASCII
        bm.dsn(forged, bad_signature),
        bm.dsn(
            f"bounces+{verp(non_ascii).split('+')[1].split('-')[0]}-\u00e9\u00e9@b.test", non_ascii
        ),
    ]
    await dovecot.append(*messages)
    await change_settings(installation, mailbox(dovecot))
    installation.start_services("bounce_processor", log_name="bounces")
    await mailbox_drained(installation, dovecot, len(messages))

    items = {
        r["email"]: dict(r)
        for r in await pool.fetch(
            "SELECT email, status, bounce_kind, smtp_code, error FROM campaign_items"
            " WHERE campaign_id = $1",
            campaign_id,
        )
    }
    assert items[hard]["status"] == "bounced" and items[hard]["bounce_kind"] == "hard"
    assert items[hard]["smtp_code"] == 550 and "5.1.1" in items[hard]["error"]
    assert items[soft]["status"] == "bounced" and items[soft]["bounce_kind"] == "soft"
    assert items[soft_once]["status"] == "bounced" and items[soft_once]["bounce_kind"] == "soft"
    assert items[attacker]["status"] == "bounced" and items[attacker]["bounce_kind"] == "hard"
    for unchanged in (complained, away, delayed, by_address, second, bad_signature, non_ascii):
        assert items[unchanged]["status"] == "sent", unchanged
    suppressions = {
        r["email"]: r["reason"]
        for r in await pool.fetch("SELECT email, reason FROM suppressions")
        if r["email"] in by_rcpt
    }
    assert suppressions == {
        hard: "hard_bounce",
        complained: "complaint",
        soft: "soft_bounces",
        attacker: "hard_bounce",
    }

    matched = {
        (r["email"], r["matched_by"], r["kind"], r["action"], r["item_id"] is not None)
        for r in await pool.fetch("SELECT email, matched_by, kind, action, item_id FROM bounces")
    }
    assert (hard, "verp", "hard", "failed", True) in matched
    assert (complained, "message_id", "complaint", None, True) in matched
    assert (delayed, "verp", "soft", "delayed", True) in matched
    assert (attacker, "verp", "hard", "failed", True) in matched
    # recorded for a person to look at, matched to nothing
    for unproven in (by_address, second, bad_signature, non_ascii):
        assert (unproven, None, "hard", "failed", False) in matched, unproven
    assert await pool.fetchval("SELECT count(*) FROM unparsed_messages") == 0
    assert await pool.fetchval("SELECT count(*) FROM bounces") == len(messages)
    outcomes = {
        r["outcome"]: r["n"]
        for r in await pool.fetch(
            "SELECT outcome, count(*) AS n FROM processed_messages GROUP BY outcome"
        )
    }
    assert outcomes == {"bounce": len(messages) - 1, "not_bounce": 1}

    # the campaign's figures changed after it completed
    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed"
    assert status["counts"] == {"sent": 8, "bounced": 4}, status["counts"]

    # bounce.detected only for what was proven: 8 messages about 5 signed items
    await wait_for(lambda: _at_least(bounce_events, 8), 20, "bounce.detected events")
    events = {(e["email"], e["kind"], e["suppressed"]) for e in bounce_events}
    assert (hard, "hard", True) in events and (complained, "complaint", True) in events
    assert (soft_once, "soft", False) in events and (attacker, "hard", True) in events
    never_announced = {by_address, second, bad_signature, non_ascii}
    assert {e["email"] for e in bounce_events}.isdisjoint(never_announced)
    hard_event = next(e for e in bounce_events if e["email"] == hard)
    assert hard_event["campaign_id"] == campaign_id and hard_event["status"] == "5.1.1"
    assert PASSWORD not in installation.log_text()

    # the CRM's timeline: the proven bounces and the complaint, in at most one contact.activity
    # per mailbox message
    def timeline() -> list[dict[str, Any]]:
        return [
            a for m in activities for a in m["activities"] if a["kind"] in ("bounced", "complained")
        ]

    async def on_timeline() -> bool:
        return {a["email"] for a in timeline()} >= {hard, complained, soft_once, attacker}

    await wait_for(on_timeline, 20, "bounces on the CRM's timeline")
    kinds = {(a["email"], a["kind"], a["bounce_kind"]) for a in timeline()}
    assert {(hard, "bounced", "hard"), (complained, "complained", None)} <= kinds
    assert (soft_once, "bounced", "soft") in kinds
    assert {a["email"] for a in timeline()}.isdisjoint(never_announced)
    assert {a["campaign_id"] for a in timeline()} == {campaign_id}
    bounce_messages = [m for m in activities if any(a["kind"] != "sent" for a in m["activities"])]
    assert len(bounce_messages) <= len(bounce_events)


async def _at_least(events: list[dict[str, object]], count: int) -> bool:
    return len(events) >= count


# --- (b) Dovecot crashes in the middle of a batch ----------------------------------------------


async def test_dovecot_restart_mid_batch_loses_nothing_and_counts_nothing_twice(
    installation: Installation, dovecot: Dovecot
) -> None:
    pool = pool_of(installation)
    padding = "x" * 20_000
    messages = [
        bm.dsn(
            "postmaster@mailroom.test",
            f"gone{n:03d}@example.net",
            diagnostic=f"550 5.1.1 unknown user {n} {padding}",
        )
        for n in range(200)
    ]
    await dovecot.append(*messages)
    await change_settings(installation, mailbox(dovecot))
    process = installation.start_services("bounce_processor", log_name="restart")

    async def some_done() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM processed_messages") >= 10)

    await wait_for(some_done, 60, "the first messages processed", 0.01)
    dovecot.kill()
    at_crash = await pool.fetchval("SELECT count(*) FROM processed_messages")
    await asyncio.sleep(1.5)
    dovecot.start()
    print(f"\nDovecot killed after {at_crash} of 200 messages")
    await mailbox_drained(installation, dovecot, 200)
    assert await pool.fetchval("SELECT count(*) FROM processed_messages") == 200
    assert await pool.fetchval("SELECT count(*) FROM bounces") == 200
    assert await pool.fetchval("SELECT count(DISTINCT email) FROM bounces") == 200
    log = installation.log_text()
    assert "reconnecting in" in log or "retrying in" in log
    metrics = metrics_of(process)
    duplicates = re.search(r'mailroom_bounce_messages_total\{outcome="duplicate"\} (\S+)', metrics)
    print(
        f"seen again after the restart (deduplicated): {duplicates.group(1) if duplicates else 0}"
    )
    assert 0 < at_crash < 200, "the kill came too late to test a crash mid-batch"


# --- (c) wrong credentials, an unreachable server ---------------------------------------------


async def test_wrong_credentials_are_reported_and_retried_until_fixed(
    installation: Installation, dovecot: Dovecot
) -> None:
    process = installation.start_services("bounce_processor", log_name="credentials")
    await change_settings(installation, mailbox(dovecot, password="not-" + PASSWORD))
    problem = {}

    async def unready() -> bool:
        answer = readiness(process)
        problem.update(answer.json().get("problems", {}))
        return answer.status_code == 503

    await wait_for(unready, 30, "/readyz to report the mailbox")
    assert problem["bounce_processor:bounce_mailbox"] == (
        f"bounce mailbox: authentication failed for {USER}@127.0.0.1:{dovecot.imap_port}:"
        " [AUTHENTICATIONFAILED] Authentication failed."
    )

    async def backed_off() -> bool:
        return "retrying in 4 s (attempt 3)" in installation.log_text()

    await wait_for(backed_off, 30, "the back-off to grow")
    log = installation.log_text()
    assert "authentication failed for bounces@127.0.0.1" in log
    assert "retrying in 1 s (attempt 1)" in log and "retrying in 2 s (attempt 2)" in log
    assert process.poll() is None

    # nothing listens there: said so as well
    await change_settings(installation, mailbox(dovecot, port=1))
    await wait_for(
        lambda: _problem_contains(process, "connection refused by 127.0.0.1:1"), 30, "refused"
    )

    # fixed: ready again, and the mailbox is read
    await change_settings(installation, mailbox(dovecot))
    await wait_for(lambda: _ready(process), 30, "/readyz to be 200 again")
    await dovecot.append(bm.dsn("postmaster@mailroom.test", "late@example.net"))
    await mailbox_drained(installation, dovecot, 1)
    assert PASSWORD not in installation.log_text()


async def test_a_bounce_mailbox_down_leaves_the_public_pages_ready(
    installation: Installation, dovecot: Dovecot
) -> None:
    """In one process with the subscriptions pages, only the bounce processor is not ready."""
    process = installation.start_services("bounce_processor", "subscriptions", log_name="both")
    await change_settings(installation, mailbox(dovecot, port=1))
    await wait_for(
        lambda: _problem_contains(process, "connection refused by 127.0.0.1:1"), 30, "refused"
    )
    answer = readiness(process)
    assert answer.status_code == 200, answer.text
    services = answer.json()["services"]
    assert services["subscriptions"] == {"ready": True, "problems": {}}
    assert services["bounce_processor"]["ready"] is False
    ops = f"http://127.0.0.1:{process.ops_port}"  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=ops) as client:
        assert (await client.get("/readyz/bounce_processor")).status_code == 503
        assert (await client.get("/readyz/subscriptions")).status_code == 200
        # the public port serves the pages, not the ops endpoints
        public = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
        assert (await client.get(f"{public}/readyz")).status_code == 404
        assert (await client.get(f"{public}/metrics")).status_code == 404


async def _problem_contains(process: object, text: str) -> bool:
    return text in readiness(process).text


async def _ready(process: object) -> bool:
    return readiness(process).status_code == 200


# --- (d) malformed messages ---------------------------------------------------------------------


async def test_malformed_messages_are_kept_as_unparsed_and_deleted(
    installation: Installation, dovecot: Dovecot
) -> None:
    pool = pool_of(installation)
    malformed = bm.malformed()
    await dovecot.append(*malformed.values())
    await dovecot.append(bm.dsn("postmaster@mailroom.test", "after@example.net"))
    await change_settings(installation, mailbox(dovecot))
    process = installation.start_services("bounce_processor", log_name="malformed")
    await mailbox_drained(installation, dovecot, len(malformed) + 1)
    rows = await pool.fetch("SELECT size, reason, length(head) AS head FROM unparsed_messages")
    reasons = sorted(r["reason"] for r in rows)
    assert len(rows) == 4, reasons
    assert any(r.startswith("broken MIME") for r in reasons), reasons
    assert any("8-bit" in r for r in reasons), reasons
    assert any(r.startswith("too large") for r in reasons), reasons
    assert any("nested" in r or "MIME" in r for r in reasons), reasons
    assert max(r["size"] for r in rows) > 20 * 1024 * 1024
    assert all(0 < r["head"] <= 16 * 1024 for r in rows)
    assert await pool.fetchval("SELECT email FROM bounces") == "after@example.net"
    metrics = metrics_of(process)
    assert 'mailroom_bounce_messages_total{outcome="unparsed"} 4.0' in metrics
    assert process.poll() is None


async def test_an_autoresponder_email_bouncing_is_recorded_against_its_item(
    installation: Installation, smtp_server: SmtpServer, dovecot: Dovecot
) -> None:
    pool = pool_of(installation)
    await use_smtp_server(pool, smtp_server.port)
    welcome = await make_list(pool, "welcome")
    await make_autoresponder(installation, "Welcome", list_name="welcome")
    contact_id = await make_contact(pool, "gone@welcome.example.net", welcome)
    installation.start_services()
    await trigger(
        installation,
        ContactSubscribed(contact_id=contact_id, list_id=welcome, event_id="bounce-1"),
    )

    async def sent() -> bool:
        return bool(received_by(smtp_server, "gone@welcome.example.net"))

    await wait_for(sent, 60, "the autoresponder email")
    email = received_by(smtp_server, "gone@welcome.example.net")[0]
    assert email.envelope_from.startswith("bounces+a")

    await dovecot.append(bm.dsn(email.envelope_from, "gone@welcome.example.net"))
    await change_settings(installation, mailbox(dovecot))
    await mailbox_drained(installation, dovecot, 1)

    item = await pool.fetchrow(
        "SELECT status, bounce_kind FROM autoresponder_items WHERE contact_id = $1", contact_id
    )
    assert item is not None and (item["status"], item["bounce_kind"]) == ("bounced", "hard")
    bounce = await pool.fetchrow("SELECT item_id, autoresponder_item_id, matched_by FROM bounces")
    assert bounce is not None and bounce["item_id"] is None
    assert bounce["autoresponder_item_id"] is not None and bounce["matched_by"] == "verp"
    assert (
        await pool.fetchval(
            "SELECT reason FROM suppressions WHERE email = 'gone@welcome.example.net'"
        )
        == "hard_bounce"
    )
