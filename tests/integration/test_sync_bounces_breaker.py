"""Synchronous rejections are bounces, and the circuit breaker, through the running services:
a 550 5.1.1 at RCPT or DATA suppresses the address (the next campaign skips it; an
autoresponder's too), a 550 5.7.1 does not; a campaign bouncing at 20 % pauses itself, says
why, and finishes after a resume; so does one whose SMTP account is refused for a while."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import pytest
from mailroom_common.broker import Topology
from mailroom_common.events import CampaignLaunch, CampaignResume, ContactSubscribed
from mailroom_common.runtime_settings import SmtpAccount

from mailroom.campaigns import send_command
from tests.support.autoresponders import make_autoresponder, make_contact, make_list, trigger
from tests.support.cli import run_mailroom
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.scenario import campaign_reaches, change_settings, pool_of
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

USER_UNKNOWN = "550 5.1.1 <{}>: Recipient address rejected: User unknown"
SPAM = "550 5.7.1 Message rejected as spam by content filter"


@asynccontextmanager
async def heard(install: Installation, *keys: str) -> AsyncIterator[list[tuple[str, Any]]]:
    """The events of these routing keys announced while inside."""
    events: list[tuple[str, Any]] = []
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        for key in keys:
            await queue.bind(Topology.from_settings(install.settings).events.name, key)

        async def record(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                events.append((message.routing_key or "", json.loads(message.body)))

        await queue.consume(record)
        yield events


async def test_an_unknown_user_is_suppressed_at_once_and_a_policy_refusal_is_not(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 60, tag="sync")
    eligible = sorted(audience.eligible)
    unknown, unknown_at_data, spam = eligible[20], eligible[30], eligible[40]
    handler = smtp_server.handler
    handler.rcpt_replies[unknown] = USER_UNKNOWN.format(unknown)
    handler.data_replies[unknown_at_data] = "550 5.1.1 mailbox does not exist"
    handler.rcpt_replies[spam] = SPAM
    await use_smtp_server(pool, smtp_server.port)
    first = await make_campaign(pool, audience, name="first")
    second = await make_campaign(pool, audience, name="second")
    installation.start_services()

    async with heard(installation, "bounce.detected") as bounces:
        await send_command(installation.settings, CampaignLaunch(campaign_id=first))
        status = await campaign_reaches(installation, first)
        assert status["status"] == "completed", status
        assert status["counts"] == {"sent": 57, "failed": 3}

        items = {
            r["email"].lower(): dict(r)
            for r in await pool.fetch(
                "SELECT email, status, bounce_kind, smtp_code, error FROM campaign_items"
                " WHERE campaign_id = $1 AND status = 'failed'",
                first,
            )
        }
        assert set(items) == {unknown, unknown_at_data, spam}
        for address in (unknown, unknown_at_data):
            assert items[address]["bounce_kind"] == "hard"
            assert items[address]["smtp_code"] == 550
        assert items[spam]["bounce_kind"] is None

        suppressed = {
            r["email"]: r["reason"]
            for r in await pool.fetch("SELECT email, reason FROM suppressions")
        }
        assert suppressed[unknown] == suppressed[unknown_at_data] == "hard_bounce"
        assert spam not in suppressed

        rows = await pool.fetch(
            "SELECT b.email, b.kind, b.action, b.status, b.source, b.suppressed, b.digest,"
            " b.campaign_id, i.email AS item_email"
            " FROM bounces b JOIN campaign_items i ON i.id = b.item_id ORDER BY b.email"
        )
        assert [r["email"] for r in rows] == sorted([unknown, unknown_at_data])
        for row in rows:
            assert (row["kind"], row["action"], row["status"]) == ("hard", "failed", "5.1.1")
            assert (row["source"], row["suppressed"], row["digest"]) == ("smtp", True, None)
            assert row["campaign_id"] == first and row["item_email"].lower() == row["email"]

        async def announced() -> bool:
            return len(bounces) == 2

        await wait_for(announced, 30, "bounce.detected of both unknown users")
        assert {body["email"] for _, body in bounces} == {unknown, unknown_at_data}
        assert all(
            body["kind"] == "hard" and body["suppressed"] and body["campaign_id"] == first
            for _, body in bounces
        )
        assert await _figures(pool, first) == (60, 2)

    # the filter lets the message through now: the next campaign reaches the policy-refused
    # address again, and never the unknown users
    handler.rcpt_replies.pop(spam)
    sent_before = handler.recipients()
    await send_command(installation.settings, CampaignLaunch(campaign_id=second))
    status = await campaign_reaches(installation, second)
    assert status["status"] == "completed", status
    assert status["counts"].get("sent") == 58
    assert status["counts"].get("failed", 0) == 0
    second_recipients = handler.recipients() - sent_before
    assert second_recipients[spam] == 1
    assert unknown not in second_recipients and unknown_at_data not in second_recipients
    assert set(second_recipients) == audience.eligible - {unknown, unknown_at_data}


@pytest.fixture
async def strict_installation() -> AsyncIterator[Installation]:
    install = Installation(breaker_min_attempts=100)
    await install.setup()
    try:
        yield install
    finally:
        await install.teardown()


async def test_a_campaign_bouncing_at_20_percent_pauses_itself_and_finishes_after_a_resume(
    strict_installation: Installation, smtp_server: SmtpServer
) -> None:
    install = strict_installation
    pool = pool_of(install)
    audience = await make_audience(pool, 500, tag="breaker")
    bad = sorted(audience.eligible)[::5]  # every fifth recipient: 20 %
    smtp_server.handler.rcpt_replies.update({a: USER_UNKNOWN.format(a) for a in bad})
    await use_smtp_server(pool, smtp_server.port, messages_per_second=200)
    campaign_id = await make_campaign(pool, audience)
    install.start_services()

    async with heard(install, "campaign.*") as events:
        await send_command(install.settings, CampaignLaunch(campaign_id=campaign_id))
        status = await campaign_reaches(install, campaign_id, "paused", "completed", limit=60)
        assert status["status"] == "paused", status
        assert "hard-bounce rate" in status["pause_reason"]
        assert "passed 5 %" in status["pause_reason"]

        async def announced() -> bool:
            return any(key == "campaign.paused" for key, _ in events)

        await wait_for(announced, 30, "campaign.paused")
        paused = next(body for key, body in events if key == "campaign.paused")
        assert paused["reason"] == status["pause_reason"]
        shown = await run_mailroom(install.env, "campaign", "status", str(campaign_id))
        assert shown.returncode == 0, shown.stderr
        assert f"paused: {status['pause_reason']}" in shown.stdout

        await wait_for(
            lambda: _nothing_sending(pool, campaign_id), 30, "the items in flight to be recorded"
        )
        attempts, hard_bounces = await _figures(pool, campaign_id)
        assert 100 <= attempts < 500
        assert hard_bounces > 0.05 * attempts  # past the limit when it is resumed
        print(f"\npaused after {attempts} attempts: {status['pause_reason']}")

        # someone cleans the list: the rest goes through; the figures since the launch are
        # still past the limit, yet the resumed campaign is judged on what follows
        smtp_server.handler.rcpt_replies.clear()
        await send_command(install.settings, CampaignResume(campaign_id=campaign_id))
        status = await campaign_reaches(install, campaign_id, limit=60)
        assert status["status"] == "completed", status
        assert status["pause_reason"] is None
        assert [key for key, _ in events].count("campaign.paused") == 1
        failed = status["counts"].get("failed", 0)
        assert failed == hard_bounces
        assert status["counts"]["sent"] + failed == 500
        assert await _figures(pool, campaign_id) == (500, hard_bounces)


async def _figures(pool: asyncpg.Pool, campaign_id: int) -> tuple[int, int]:
    """The campaign's attempts and hard bounces, as the circuit breaker counts them."""
    row = await pool.fetchrow(
        "SELECT delivery_attempts, hard_bounces FROM campaigns WHERE id = $1", campaign_id
    )
    assert row is not None
    return row["delivery_attempts"], row["hard_bounces"]


async def _nothing_sending(pool: asyncpg.Pool, campaign_id: int) -> bool:
    sending: int = await pool.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1 AND status = 'sending'",
        campaign_id,
    )
    return sending == 0


@pytest.fixture
async def impatient_installation() -> AsyncIterator[Installation]:
    install = Installation(breaker_account_failure_seconds=2)
    await install.setup()
    try:
        yield install
    finally:
        await install.teardown()


async def test_a_campaign_whose_account_is_refused_for_a_while_pauses_until_resumed(
    impatient_installation: Installation, smtp_server: SmtpServer
) -> None:
    install = impatient_installation
    pool = pool_of(install)
    audience = await make_audience(pool, 50, tag="account")
    # TLS expected, plain SMTP answers: the account fails for every recipient
    await use_smtp_server(pool, smtp_server.port, security="tls")
    campaign_id = await make_campaign(pool, audience)
    install.start_services()
    await send_command(install.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(install, campaign_id, "paused", "completed", limit=60)
    assert status["status"] == "paused", status
    assert "SMTP account has refused every send" in status["pause_reason"]
    assert smtp_server.handler.recipients() == {}

    account = SmtpAccount(host="127.0.0.1", port=smtp_server.port, security="none", pool_size=4)
    await change_settings(install, account)
    await send_command(install.settings, CampaignResume(campaign_id=campaign_id))
    status = await campaign_reaches(install, campaign_id, limit=60)
    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": 50}
    assert set(smtp_server.handler.recipients()) == audience.eligible


async def test_an_autoresponder_to_an_unknown_user_bounces_at_send_time(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    await use_smtp_server(pool, smtp_server.port)
    welcome = await make_list(pool, "welcome")
    await make_autoresponder(installation, "Welcome", list_name="welcome")
    contact_id = await make_contact(pool, "gone@welcome.test", welcome)
    smtp_server.handler.rcpt_replies["gone@welcome.test"] = USER_UNKNOWN.format("gone")
    installation.start_services()
    await trigger(
        installation, ContactSubscribed(contact_id=contact_id, list_id=welcome, event_id="g-1")
    )

    async def bounced() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM bounces"))

    await wait_for(bounced, 30, "the bounce at send time")
    item = await pool.fetchrow("SELECT id, status, bounce_kind FROM autoresponder_items")
    assert item is not None and (item["status"], item["bounce_kind"]) == ("failed", "hard")
    bounce = await pool.fetchrow(
        "SELECT autoresponder_item_id, item_id, campaign_id, email, source FROM bounces"
    )
    assert bounce is not None
    assert dict(bounce) == {
        "autoresponder_item_id": item["id"],
        "item_id": None,
        "campaign_id": None,
        "email": "gone@welcome.test",
        "source": "smtp",
    }
    reason = await pool.fetchval(
        "SELECT reason FROM suppressions WHERE email = 'gone@welcome.test'"
    )
    assert reason == "hard_bounce"
