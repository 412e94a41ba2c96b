"""`mailroom dlq` against real services: a launch dead-lettered for a cause that is then fixed
is replayed, and the campaign completes; replaying again changes nothing; purge empties."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import pytest
from mailroom_common.events import CampaignLaunch

from mailroom.campaigns import send_command
from tests.support.cli import run_mailroom
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.queues import queue_depth as depth
from tests.support.scenario import campaign_reaches, pool_of
from tests.support.seed import make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

CAMPAIGN_ID = 4242
RECIPIENTS = 30


async def _depth_is(queue: str, wanted: int) -> bool:
    return await depth(queue) == wanted


async def test_a_dead_lettered_launch_is_replayed_once_its_cause_is_fixed(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    prefix = installation.settings.queue_prefix
    dlq = f"{prefix}.item_generator.commands.dlq"
    audience = await make_audience(pool, RECIPIENTS)
    await use_smtp_server(pool, smtp_server.port)
    installation.start_services()

    # the CRM launches a campaign Mailroom does not know yet: dead-lettered
    await send_command(installation.settings, CampaignLaunch(campaign_id=CAMPAIGN_ID))

    async def dead_lettered() -> bool:
        return await depth(dlq) == 1

    await wait_for(dead_lettered, 30, "the launch to be dead-lettered")

    listed = await run_mailroom(installation.env, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    depths = {q["queue"]: q["messages"] for q in json.loads(listed.stdout)}
    assert depths[dlq] == 1
    assert depths[f"{prefix}.completion.events.dlq"] == 0

    shown = await run_mailroom(
        installation.env, "dlq", "show", "item_generator.commands.dlq", "--json"
    )
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["queue"] == dlq and document["messages"] == 1
    [letter] = document["shown"]
    assert str(CAMPAIGN_ID) in letter["reason"] and "campaign" in letter["reason"]
    assert letter["tries"] == 1
    assert 0 <= letter["age_seconds"] < 60
    assert letter["origin"] == {"exchange": f"{prefix}.commands", "routing_key": "campaign.launch"}
    assert letter["message_type"] == "campaign.launch"
    assert await depth(dlq) == 1  # showing removes nothing

    # the cause is fixed: the campaign now exists, with that id
    await pool.execute(
        "SELECT setval(pg_get_serial_sequence('campaigns', 'id'), $1)", CAMPAIGN_ID - 1
    )
    assert await make_campaign(pool, audience) == CAMPAIGN_ID

    replayed = await run_mailroom(installation.env, "dlq", "replay", dlq, "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"queue": dlq, "replayed": 1, "kept": [], "left": 0}
    final = await campaign_reaches(installation, CAMPAIGN_ID)
    assert final["status"] == "completed", final
    assert final["counts"] == {"sent": RECIPIENTS}
    assert set(smtp_server.handler.recipients()) == audience.eligible
    assert len(smtp_server.handler.received) == RECIPIENTS

    # replaying again: nothing left, nothing sent twice
    again = await run_mailroom(installation.env, "dlq", "replay", dlq)
    assert again.returncode == 0, again.stderr
    assert "replayed 0 message(s)" in again.stdout
    assert len(smtp_server.handler.received) == RECIPIENTS


async def test_purge_asks_first_and_unknown_queues_are_refused(
    installation: Installation,
) -> None:
    prefix = installation.settings.queue_prefix
    dlq = f"{prefix}.item_generator.commands.dlq"
    installation.start_services("item_generator", log_name="generator")
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        commands = await channel.get_exchange(f"{prefix}.commands")
        for body in (b"not json", b"{}"):
            await commands.publish(
                aio_pika.Message(body, content_type="application/json"),
                routing_key="campaign.launch",
            )

    async def dead_lettered() -> bool:
        return await depth(dlq) == 2

    await wait_for(dead_lettered, 30, "both commands to be dead-lettered")
    shown = await run_mailroom(installation.env, "dlq", "show", dlq, "--limit", "1", "--json")
    document = json.loads(shown.stdout)
    assert document["messages"] == 2 and len(document["shown"]) == 1
    assert document["shown"][0]["reason"].startswith("invalid campaign.launch message: not JSON")

    # two more dead letters, one that came nobody knows how, one whose way leads nowhere
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        dlx = await channel.get_exchange(f"{prefix}.dlx")
        nowhere: dict[str, Any] = {
            "x-mailroom-original-exchange": f"{prefix}.commands",
            "x-mailroom-original-routing-key": "nobody.listens",
        }
        no_origin: dict[str, Any] = {}
        for headers in (no_origin, nowhere):
            await dlx.publish(
                aio_pika.Message(b"{}", headers=headers),
                routing_key=f"{prefix}.item_generator.commands",
            )
    await wait_for(lambda: _depth_is(dlq, 4), 10, "four dead letters")

    # the two bad commands go back and are dead-lettered again (not replayed in a loop); the
    # other two stay, and the command says why
    replayed = await run_mailroom(installation.env, "dlq", "replay", dlq, "--json")
    assert replayed.returncode == 1
    report = json.loads(replayed.stdout)
    assert report["replayed"] == 2
    assert report["kept"][0]["why"] == "where it came from is not recorded"
    assert "not published" in report["kept"][1]["why"]
    await wait_for(lambda: _depth_is(dlq, 4), 10, "the replayed commands to come back")

    refused = await run_mailroom(installation.env, "dlq", "purge", dlq)  # no answer: aborted
    assert refused.returncode == 1 and await depth(dlq) == 4
    purged = await run_mailroom(installation.env, "dlq", "purge", dlq, "--yes")
    assert purged.returncode == 0, purged.stderr
    assert f"purged 4 message(s) from {dlq}" in " ".join(purged.stdout.split())
    assert await depth(dlq) == 0

    # the work queue's full name (what the alert MailroomDeadLetters names) means its DLQ
    by_work_queue = await run_mailroom(
        installation.env, "dlq", "show", f"{prefix}.item_generator.commands", "--json"
    )
    assert by_work_queue.returncode == 0, by_work_queue.stderr
    shown = json.loads(by_work_queue.stdout)
    assert (shown["queue"], shown["shown"]) == (dlq, [])  # its DLQ, purged
    unknown = await run_mailroom(installation.env, "dlq", "show", f"{prefix}.outbound.retry")
    assert unknown.returncode == 2 and "no dead-letter queue" in unknown.stderr
