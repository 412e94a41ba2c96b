"""Scheduling, pause/resume, cancel, broken templates and empty audiences, end to end through
the real RabbitMQ, PostgreSQL and an SMTP server on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from mailroom_common.events import CampaignCancel, CampaignLaunch, CampaignPause, CampaignResume

from mailroom.campaigns import send_command
from tests.support.environment import Installation, wait_for
from tests.support.scenario import (
    campaign_reaches,
    items_in,
    pool_of,
    received_count,
    smtp_received,
    status_of,
)
from tests.support.seed import (
    HTML,
    TEXT,
    add_contacts,
    make_audience,
    make_campaign,
    use_smtp_server,
)
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration


async def _nothing_in_flight(pool: asyncpg.Pool, campaign_id: int) -> None:
    async def settled() -> bool:
        return await items_in(pool, campaign_id, "sending") == 0

    await wait_for(settled, 30, "the batch in flight to finish")


async def _campaign_in_sql(
    pool: asyncpg.Pool, list_names: list[str], *, subject: str, html: str, text: str | None
) -> int:
    """A campaign written straight into the database, as a CRM could, without the create-time
    template check of `mailroom campaign create`."""
    async with pool.acquire() as conn, conn.transaction():
        campaign_id: int = await conn.fetchval(
            "INSERT INTO campaigns (name, subject, from_name, from_email, html_template,"
            " text_template) VALUES ('Broken', $1, 'News', 'news@mailroom.test', $2, $3)"
            " RETURNING id",
            subject,
            html,
            text,
        )
        await conn.execute(
            "INSERT INTO campaign_lists (campaign_id, list_id)"
            " SELECT $1, id FROM lists WHERE name = ANY($2)",
            campaign_id,
            list_names,
        )
    return campaign_id


# -- scheduling ----------------------------------------------------------------------------


async def test_a_scheduled_campaign_waits_for_its_time_then_reaches_everyone(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 50, tag="later")
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    installation.start_services()

    send_at = datetime.now(UTC) + timedelta(seconds=4)
    await send_command(
        installation.settings, CampaignLaunch(campaign_id=campaign_id, send_at=send_at)
    )

    async def launched() -> bool:
        return bool((await status_of(installation, campaign_id))["status"] != "draft")

    await wait_for(launched, 30, "the launch to be taken")
    status = await status_of(installation, campaign_id)
    # the launch set the time and nothing else: no items, no mail
    assert status["status"] == "scheduled", status
    assert datetime.fromisoformat(status["send_at"]) == send_at
    assert status["items"] == 0
    assert smtp_server.handler.received == []

    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": 50}
    assert set(smtp_server.handler.recipients()) == audience.eligible
    assert max(smtp_server.handler.recipients().values()) == 1
    # nothing was generated before the time it was scheduled for
    assert datetime.fromisoformat(status["generated_at"]) >= send_at
    first_item: datetime = await pool.fetchval(
        "SELECT min(created_at) FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    assert first_item >= send_at


# -- pause and resume ----------------------------------------------------------------------


async def test_pause_stops_sending_and_resume_finishes_with_everyone_once(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 1000, tag="pause")
    await use_smtp_server(pool, smtp_server.port, messages_per_second=100)
    campaign_id = await make_campaign(pool, audience)
    installation.start_services()
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    await smtp_received(smtp_server, 200)

    await send_command(installation.settings, CampaignPause(campaign_id=campaign_id))
    await campaign_reaches(installation, campaign_id, "paused", limit=30)
    # the emails being sent when the pause arrived may still arrive (the in-flight window) ...
    await asyncio.sleep(1)
    after_pause = received_count(smtp_server)
    # ... then nothing: the rest of every batch is parked in the database
    await asyncio.sleep(4)
    assert received_count(smtp_server) == after_pause
    print(f"\npaused with {after_pause} of 1,000 received")
    assert after_pause < 1000, "the pause should have come before the end of the campaign"
    await _nothing_in_flight(pool, campaign_id)
    status = await status_of(installation, campaign_id)
    assert status["status"] == "paused"
    assert status["counts"].get("sent", 0) == after_pause
    assert status["open"] == 1000 - after_pause

    await send_command(installation.settings, CampaignResume(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)
    assert status["status"] == "completed", status
    assert status["counts"] == {"sent": 1000}
    recipients = smtp_server.handler.recipients()
    assert set(recipients) == audience.eligible
    assert max(recipients.values()) == 1
    assert len(smtp_server.handler.message_ids()) == 1000


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_skips_everything_not_yet_sent(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 1000, tag="cancel")
    await use_smtp_server(pool, smtp_server.port, messages_per_second=100)
    campaign_id = await make_campaign(pool, audience)
    installation.start_services()
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    await smtp_received(smtp_server, 200)

    await send_command(installation.settings, CampaignCancel(campaign_id=campaign_id))
    await campaign_reaches(installation, campaign_id, "cancelled", limit=30)
    # the emails being sent when the cancel arrived may still arrive (however long a loaded
    # machine takes over them), then nothing more: queued batches find their items skipped
    await _nothing_in_flight(pool, campaign_id)
    await asyncio.sleep(1)
    received = received_count(smtp_server)
    await asyncio.sleep(4)
    assert received_count(smtp_server) == received
    status = await status_of(installation, campaign_id)
    assert status["status"] == "cancelled"
    assert status["open"] == 0
    counts = status["counts"]
    print(f"\ncancelled: {counts}")
    assert set(counts) <= {"sent", "skipped"}, counts
    assert counts.get("sent", 0) + counts.get("skipped", 0) == 1000
    assert counts.get("skipped", 0) > 0, "the cancel should have come before the end"
    # every email handed to SMTP is recorded as sent (those in flight at the cancel included)
    assert counts.get("sent", 0) == received
    skipped_errors = await pool.fetch(
        "SELECT DISTINCT error FROM campaign_items WHERE campaign_id = $1 AND status = 'skipped'",
        campaign_id,
    )
    assert [r["error"] for r in skipped_errors] == ["campaign cancelled"]
    recipients = smtp_server.handler.recipients()
    assert max(recipients.values()) == 1
    sent = await pool.fetch(
        "SELECT lower(email) AS email FROM campaign_items WHERE campaign_id = $1"
        " AND status = 'sent'",
        campaign_id,
    )
    assert {r["email"] for r in sent} == set(recipients)


# -- templates that cannot be rendered -------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "html", "part", "problem"),
    [
        (
            "News",
            "<p>Hi {{ contact.first_name | no_such_filter }}</p>",
            "html, line 1",
            "unknown filter 'no_such_filter'",
        ),
        ("News {% if %}", HTML, "subject, line 1", "Expected an expression"),
        ("News", "<p>Hi</p>\n<p>{{ ''.__class__ }}</p>", "html, line 2", "__class__"),
    ],
    ids=["unknown-filter", "syntax-error", "sandbox-refusal"],
)
async def test_a_template_broken_for_everyone_fails_the_campaign(
    installation: Installation,
    smtp_server: SmtpServer,
    subject: str,
    html: str,
    part: str,
    problem: str,
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 40, tag="broken")
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await _campaign_in_sql(
        pool, audience.list_names, subject=subject, html=html, text=None
    )
    installation.start_services()
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)

    assert status["status"] == "failed", status
    reason = status["failure_reason"]
    assert reason.startswith(f"{part}: "), reason
    assert problem in reason, reason
    assert status["counts"] == {"failed": 40}
    errors = await pool.fetch(
        "SELECT DISTINCT error FROM campaign_items WHERE campaign_id = $1", campaign_id
    )
    assert [r["error"] for r in errors] == [f"campaign failed: {reason}"]
    await asyncio.sleep(1)
    assert smtp_server.handler.received == []


async def test_a_recipient_whose_data_breaks_rendering_fails_alone(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    audience = await make_audience(pool, 60, tag="data")
    async with pool.acquire() as conn:
        # every contact has a numeric amount (as the CRM keeps it) ...
        await conn.execute("UPDATE contacts SET attributes = '{\"amount\": 12.345}'")
        # ... but one has text there, which `round` cannot take
        await conn.execute(
            'UPDATE contacts SET attributes = \'{"amount": "n/a"}\' WHERE email = $1',
            "user000007@data.example.test",
        )
        # and one has an internationalized address (the importer accepts it; SMTP without
        # SMTPUTF8 cannot carry it, so the renderer refuses it)
        list_id = await conn.fetchval("SELECT id FROM lists WHERE name = $1", "data-a")
        await add_contacts(conn, [("zoë@data.example.test", "Zoë", "Ü")], list_id)
        await conn.execute(
            "UPDATE contacts SET attributes = '{\"amount\": 3}' WHERE email = $1",
            "zoë@data.example.test",
        )
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await make_campaign(pool, audience)
    await pool.execute(
        "UPDATE campaigns SET html_template = $2 WHERE id = $1",
        campaign_id,
        HTML.replace("</body>", "<p>\nYour credit: {{ contact.amount | round }}</p>\n</body>"),
    )
    installation.start_services()
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)

    assert status["status"] == "completed", status
    assert status["failure_reason"] is None
    assert status["counts"] == {"sent": 59, "failed": 2}
    failed = {
        r["email"]: r["error"]
        for r in await pool.fetch(
            "SELECT email, error FROM campaign_items WHERE campaign_id = $1 AND status = 'failed'",
            campaign_id,
        )
    }
    assert set(failed) == {"user000007@data.example.test", "zoë@data.example.test"}
    assert failed["zoë@data.example.test"].startswith("rendering failed: to: ")
    assert failed["user000007@data.example.test"].startswith("rendering failed: html, line ")
    assert "TypeError" in failed["user000007@data.example.test"]
    assert "n/a" not in failed["user000007@data.example.test"]  # no personal data in errors
    recipients = smtp_server.handler.recipients()
    assert set(recipients) == audience.eligible - {"user000007@data.example.test"}
    assert max(recipients.values()) == 1
    sample = next(r for r in smtp_server.handler.received if "user000001@" in r.recipients[0])
    assert "Your credit: 12.0" in sample.part("html")


# -- nobody to send to -----------------------------------------------------------------------


async def test_a_campaign_with_nobody_eligible_completes_empty(
    installation: Installation, smtp_server: SmtpServer
) -> None:
    pool = pool_of(installation)
    async with pool.acquire() as conn, conn.transaction():
        list_id = await conn.fetchval("INSERT INTO lists (name) VALUES ('gone') RETURNING id")
        people = [(f"gone{i}@empty.example.test", f"G{i}", "") for i in range(12)]
        await add_contacts(conn, people, list_id)
        await conn.executemany(
            "INSERT INTO suppressions (email, reason) VALUES ($1, 'complaint')",
            [(p[0],) for p in people],
        )
    await use_smtp_server(pool, smtp_server.port)
    campaign_id = await _campaign_in_sql(pool, ["gone"], subject="Hi", html=HTML, text=TEXT)
    installation.start_services()
    await send_command(installation.settings, CampaignLaunch(campaign_id=campaign_id))
    status = await campaign_reaches(installation, campaign_id)

    assert status["status"] == "completed", status
    assert status["generation_done"] is True
    assert status["items"] == 0 and status["counts"] == {}
    assert smtp_server.handler.received == []
