"""A campaign through the real RabbitMQ, PostgreSQL and an SMTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime

import aio_pika
import pytest
from mailroom_common.events import CampaignLaunch
from mailroom_common.signing import Signer

from mailroom.campaigns import send_command
from tests.support.environment import RABBITMQ_URL, Installation
from tests.support.scenario import campaign_reaches, launched_campaign, smtp_received
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import Received, SmtpServer

pytestmark = pytest.mark.integration

VERP = re.compile(r"^bounces\+(\d+)-([a-z2-7]+)@bounces\.mailroom\.test$")


def _check_message(received: Received) -> None:
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    text, html = received.part("plain"), received.part("html")
    assert "Hello First" in text and "Hello First" in html
    for part in (text, html):
        assert "/unsubscribe/" in part and "/preferences/" in part
    unsubscribe = re.search(r"https?://\S+/unsubscribe/([\w.-]+)", text)
    assert unsubscribe is not None
    assert message["List-Unsubscribe"] == f"<{unsubscribe.group(0)}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = VERP.match(received.envelope_from)
    assert match is not None, received.envelope_from
    assert message["X-Mailroom-Item"] == match.group(1)


async def test_campaign_reaches_every_eligible_recipient_once(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = installation.pool
    assert pool is not None
    audience, campaign_id, _ = await launched_campaign(installation, smtp_server, 2000)
    status = await campaign_reaches(installation, campaign_id)
    took = datetime.fromisoformat(status["completed_at"]) - datetime.fromisoformat(
        status["launched_at"]
    )
    print(f"\n2,000 recipients delivered in {took.total_seconds():.1f} s")

    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": 2000}
    handler = smtp_server.handler
    message_ids = handler.message_ids()
    assert len(message_ids) == 2000 and max(message_ids.values()) == 1
    assert set(handler.recipients()) == audience.eligible
    nobody = audience.suppressed | audience.unsubscribed | audience.invalid
    assert not nobody & set(handler.recipients())
    for received in handler.received[:50]:
        _check_message(received)
    # the signed link verifies with the deployment's key
    runtime_signer = Signer(installation.settings.signing_key.get_secret_value().encode())
    token = re.search(r"/unsubscribe/([\w.-]+)", handler.received[0].part("plain"))
    assert token is not None
    claims = runtime_signer.verify_link_token(token.group(1))
    assert claims.source == f"c{campaign_id}" and claims.purpose == "unsubscribe"
    verp = VERP.match(handler.received[0].envelope_from)
    assert verp is not None
    assert runtime_signer.verify_verp_address(handler.received[0].envelope_from) == verp.group(1)

    # a repeated launch creates nothing new
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    await asyncio.sleep(2)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM campaign_items WHERE campaign_id = $1", campaign_id
        )
        == 2000
    )


async def test_sigkill_mid_campaign_then_restart_loses_nobody(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = installation.pool
    assert pool is not None
    audience, campaign_id, process = await launched_campaign(
        installation, smtp_server, 2000, messages_per_second=400
    )

    await smtp_received(smtp_server, 600)
    installation.kill(process)
    received_at_kill = len(smtp_server.handler.received)
    in_flight = {
        r["email"]
        for r in await pool.fetch(
            "SELECT email FROM campaign_items WHERE campaign_id = $1 AND status = 'sending'",
            campaign_id,
        )
    }
    installation.start_services(log_name="restarted")
    status = await campaign_reaches(installation, campaign_id)

    assert status["status"] == "completed"
    assert status["counts"] == {"sent": 2000}
    recipients = smtp_server.handler.recipients()
    assert set(recipients) == audience.eligible
    duplicated = {address for address, n in recipients.items() if n > 1}
    print(
        f"\nkilled after {received_at_kill} messages with {len(in_flight)} items in flight;"
        f" duplicates after restart: {len(duplicated)}"
    )
    # a second copy only for what was handed to SMTP and not yet recorded at the kill
    assert duplicated <= in_flight
    assert max(recipients.values()) <= 2


async def test_temporary_failures_arrive_later_and_permanent_ones_fail(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = installation.pool
    assert pool is not None
    audience = await make_audience(pool, 300)
    rejected = sorted(audience.eligible)[:7]
    smtp_server.handler.hard_fail.update(rejected)
    smtp_server.handler.soft_fail_first = 40  # counted, not timed: a slow start still sees them
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    installation.start_services()
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)

    assert status["status"] == "completed"
    assert status["counts"] == {"sent": 293, "failed": 7}
    assert set(smtp_server.handler.recipients()) == audience.eligible - set(rejected)
    retried = await pool.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1 AND attempts > 1", campaign_id
    )
    assert retried > 0, "the 451 period should have sent some items through the retry tiers"
    failed = await pool.fetch(
        "SELECT email, smtp_code, smtp_reply FROM campaign_items WHERE status = 'failed'"
    )
    assert {r["email"] for r in failed} == set(rejected)
    assert all(r["smtp_code"] == 550 and "5.1.1" in r["smtp_reply"] for r in failed)


async def test_invalid_launch_events_are_dead_lettered_and_consuming_goes_on(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = installation.pool
    assert pool is not None
    audience = await make_audience(pool, 20)
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    installation.start_services()
    topology = installation.settings.queue_prefix
    bad_messages = [
        b"{not json",
        json.dumps({"campaign_id": "seven"}).encode(),
        json.dumps({"campaign_id": 999999}).encode(),
    ]
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{topology}.commands")
        for body in bad_messages:
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="campaign.launch",
            )
        # a good launch after the bad ones still goes through
        await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
        status = await campaign_reaches(installation, campaign_id)
        assert status["counts"] == {"sent": 20}

        dlq = await channel.get_queue(f"{topology}.item_generator.commands.dlq")
        reasons: dict[bytes, str] = {}
        for _ in range(50):
            message = await dlq.get(fail=False)
            if message is None:
                if len(reasons) == 3:
                    break
                await asyncio.sleep(0.1)
                continue
            reasons[message.body] = str(message.headers["x-mailroom-error"])
            await message.ack()
    assert set(reasons) == set(bad_messages)
    assert "invalid campaign.launch" in reasons[b"{not json"]
    assert "campaign_id" in reasons[bad_messages[1]]
    assert reasons[bad_messages[2]] == "unknown campaign 999999"


async def test_sigterm_drains_in_flight_work_and_duplicates_nothing(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = installation.pool
    assert pool is not None
    audience, campaign_id, process = await launched_campaign(
        installation, smtp_server, 2000, messages_per_second=400
    )

    await smtp_received(smtp_server, 500)
    exit_code = installation.terminate(process)
    assert exit_code == 0, installation.log_text()[-3000:]
    in_flight = await pool.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1 AND status = 'sending'",
        campaign_id,
    )
    assert in_flight == 0, "a drained process leaves no item half-sent"
    received_at_stop = len(smtp_server.handler.received)
    assert received_at_stop < 2000, "the campaign should still have been running"

    installation.start_services(log_name="restarted")
    status = await campaign_reaches(installation, campaign_id)
    recipients = smtp_server.handler.recipients()
    print(
        f"\nstopped after {received_at_stop} messages; duplicates: "
        f"{sum(n - 1 for n in recipients.values())}"
    )
    assert status["counts"] == {"sent": 2000}
    assert set(recipients) == audience.eligible
    assert max(recipients.values()) == 1
