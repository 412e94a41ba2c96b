"""The `mailroom` command as a marketer runs it: real subprocesses against the installation's
PostgreSQL and RabbitMQ (and the services, for a launch)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiormq
import asyncpg
import pytest
from mailroom_common.events import CampaignPause

from mailroom.campaigns import send_command
from mailroom.unreachable import RABBITMQ, BrokerSilent, unreachable_setting
from tests.support.cli import run_mailroom
from tests.support.environment import Installation
from tests.support.seed import add_contacts, make_audience, make_campaign, use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

PEOPLE_CSV = """\
email,first_name,last_name,city
ann@example.com,Ann,Archer,Oslo
bob@example.com,Bob,Baker,Rome
not-an-address,Bad,Row,Nowhere
carl@example.com,Carl,Cook,Lima,an extra field
dora@example.com,Dora,Dunn,Kyiv
ANN@example.com,Ann,Archer,Oslo
eve@example.com,Eve,"Evans, Jr.",Bern
[vip]@example.com,Vic,Ip,Paris
"""
GOOD = {"ann@example.com", "bob@example.com", "dora@example.com", "eve@example.com"}

HTML_TEMPLATE = """<html><head><style>h1 { color: #234; }</style></head><body>
<h1>Hello {{ contact.first_name }}!</h1>
<p>The {{ campaign.name }} issue is out.</p>
</body></html>
"""
TEXT_TEMPLATE = "Hello {{ contact.first_name }}!\nThe {{ campaign.name }} issue is out.\n"
BROKEN_HTML = "<html><body>\n<h1>Hello</h1>\n<p>{{ contact.first_name </p>\n</body></html>\n"


def _pool(install: Installation) -> asyncpg.Pool:
    assert install.pool is not None
    return install.pool


def _one_line(text: str) -> str:
    """Console output with its line wrapping undone."""
    return " ".join(text.split())


async def test_contacts_import_reports_bad_rows_and_never_resubscribes(
    installation: Installation, tmp_path: Path
) -> None:
    pool = _pool(installation)
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE_CSV, encoding="utf-8")

    result = await run_mailroom(
        installation.env, "contacts", "import", people, "--list", "newsletter"
    )
    assert result.returncode == 0, result.stderr
    assert _one_line(result.stdout) == (
        "imported 4 contacts into list newsletter (4 new, 0 updated, 0 kept unsubscribed)"
    )
    reported = result.stderr.splitlines()
    assert reported == [
        f"{people}:4: invalid email 'not-an-address': An email address must have an @-sign.",
        f"{people}:5: more fields than the header names",
        f"{people}:9: invalid email '[vip]@example.com': The email address contains invalid"
        " characters before the @-sign: '[', ']'.",
        "3 bad row(s) skipped",
    ]

    contacts = await pool.fetch(
        "SELECT lower(email) AS email, first_name, last_name, attributes FROM contacts"
    )
    by_email = {r["email"]: r for r in contacts}
    assert len(contacts) == 4 and set(by_email) == GOOD  # the duplicate (other case) once
    assert by_email["eve@example.com"]["last_name"] == "Evans, Jr."
    assert by_email["dora@example.com"]["attributes"] == {"city": "Kyiv"}
    members = await pool.fetch(
        "SELECT lower(c.email) AS email, m.status FROM list_memberships m"
        " JOIN lists l ON l.id = m.list_id JOIN contacts c ON c.id = m.contact_id"
        " WHERE l.name = 'newsletter'"
    )
    assert {r["email"]: r["status"] for r in members} == dict.fromkeys(GOOD, "subscribed")

    # Bob unsubscribes (through the CRM); the same file is imported again, with a change
    await pool.execute(
        "UPDATE list_memberships SET status = 'unsubscribed' WHERE contact_id ="
        " (SELECT id FROM contacts WHERE email = 'bob@example.com')"
    )
    people.write_text(PEOPLE_CSV.replace("Dora,Dunn,Kyiv", "Dora,Dunn,Lviv"), encoding="utf-8")
    again = await run_mailroom(
        installation.env, "contacts", "import", people, "--list", "newsletter", "--json"
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["created"] == 0 and report["updated"] == 4
    assert report["kept_unsubscribed"] == 1
    assert [line for line, _ in report["bad_rows"]] == [4, 5, 9]

    assert await pool.fetchval("SELECT count(*) FROM contacts") == 4
    assert (
        await pool.fetchval(
            "SELECT attributes->>'city' FROM contacts WHERE email = $1", "dora@example.com"
        )
        == "Lviv"
    )
    members = await pool.fetch(
        "SELECT lower(c.email) AS email, m.status FROM list_memberships m"
        " JOIN contacts c ON c.id = m.contact_id"
    )
    assert len(members) == 4
    assert {r["email"]: r["status"] for r in members} == {
        **dict.fromkeys(GOOD, "subscribed"),
        "bob@example.com": "unsubscribed",
    }


async def test_campaign_create_launch_watch_status(
    installation: Installation, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    pool = _pool(installation)
    async with pool.acquire() as conn, conn.transaction():
        list_id = await conn.fetchval("INSERT INTO lists (name) VALUES ('readers') RETURNING id")
        readers = [(f"reader{i:02d}@example.com", f"Reader{i}", "R") for i in range(25)]
        await add_contacts(conn, readers, list_id)
    await use_smtp_server(pool, smtp_server.port)
    html, text, broken = tmp_path / "news.html", tmp_path / "news.txt", tmp_path / "broken.html"
    html.write_text(HTML_TEMPLATE, encoding="utf-8")
    text.write_text(TEXT_TEMPLATE, encoding="utf-8")
    broken.write_text(BROKEN_HTML, encoding="utf-8")

    def create(*extra: str | Path) -> list[str | Path]:
        return [
            "campaign", "create", "--name", "Winter", "--subject",
            "Hi {{ contact.first_name }}", "--from", "news@example.com", "--text", text,
            *extra,
        ]  # fmt: skip

    # a template that does not compile: nothing is created
    result = await run_mailroom(installation.env, *create("--html", broken, "--list", "readers"))
    assert result.returncode == 2, result
    assert _one_line(result.stderr) == "error: html, line 3: unexpected '/'"
    # a list that does not exist: nothing is created
    result = await run_mailroom(installation.env, *create("--html", html, "--list", "no-such-list"))
    assert result.returncode == 2, result
    assert _one_line(result.stderr) == "error: unknown list(s): no-such-list"
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0

    result = await run_mailroom(installation.env, *create("--html", html, "--list", "readers"))
    assert result.returncode == 0, result.stderr
    created = re.fullmatch(r"created campaign (\d+)\n", result.stdout)
    assert created is not None, result.stdout
    campaign_id = created.group(1)
    stored = await pool.fetchrow("SELECT status, html_template FROM campaigns")
    assert stored is not None
    assert stored["status"] == "draft" and stored["html_template"] == HTML_TEMPLATE

    installation.start_services()
    result = await run_mailroom(installation.env, "campaign", "launch", campaign_id, "--watch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"launch of campaign {campaign_id} published" in result.stdout
    # the summary table: its header, then one row of figures
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "messages/s" in line)
    assert re.findall(r"[\w/]+", lines[header]) == [
        "sent", "failed", "suppressed", "skipped", "seconds", "messages/s",
    ]  # fmt: skip
    assert f"campaign {campaign_id} completed" in lines[header - 2]  # the table's title
    row = next(line for line in lines[header + 1 :] if re.search(r"\d", line))
    sent, failed, suppressed, skipped = re.findall(r"[\d.]+|-", row)[:4]
    assert (sent, failed, suppressed, skipped) == ("25", "0", "0", "0"), row
    assert set(smtp_server.handler.recipients()) == {r[0] for r in readers}

    result = await run_mailroom(installation.env, "campaign", "status", campaign_id, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["id"] == int(campaign_id) and status["name"] == "Winter"
    assert status["status"] == "completed"
    assert status["counts"] == {"sent": 25}
    assert status["items"] == 25 and status["open"] == 0 and status["done"] == 25

    # a campaign launched already cannot be launched again
    result = await run_mailroom(installation.env, "campaign", "launch", campaign_id)
    assert result.returncode == 2, result
    assert _one_line(result.stderr) == (
        f"error: campaign {campaign_id} is completed: only a draft can be launched"
    )
    assert len(smtp_server.handler.received) == 25


async def test_campaign_list_version_and_what_is_refused_before_anything_is_published(
    installation: Installation,
) -> None:
    pool = _pool(installation)
    audience = await make_audience(pool, 4)
    first = await make_campaign(pool, audience, name="First")
    second = await make_campaign(pool, audience, name="Second [draft]")
    contact_id = await pool.fetchval("SELECT min(id) FROM contacts")
    await pool.executemany(
        "INSERT INTO campaign_items (campaign_id, contact_id, email, status)"
        " VALUES ($1, $2, $3, $4)",
        [
            (first, contact_id, f"{n}@example.com", status)
            for n, status in enumerate(("sent", "sent", "failed", "pending"))
        ],
    )

    result = await run_mailroom(installation.env, "campaign", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [c["id"] for c in listed] == [second, first]  # newest first
    assert listed[1]["name"] == "First" and listed[1]["status"] == "draft"
    assert listed[1]["counts"] == {"sent": 2, "failed": 1, "pending": 1}
    assert (listed[1]["items"], listed[1]["done"], listed[1]["open"]) == (4, 3, 1)
    assert (listed[0]["items"], listed[0]["counts"]) == (0, {})
    table = await run_mailroom(installation.env, "campaign", "list")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "First" in line)
    assert re.findall(r"\d+", row) == [str(first), "4", "3", "2", "1", "1"]
    assert "Second [draft]" in table.stdout  # a name is shown as written

    version = await run_mailroom(installation.env, "--version")
    assert version.returncode == 0 and re.fullmatch(r"mailroom \d+\.\d+\.\d+\n", version.stdout)
    assert "--json" in (await run_mailroom(installation.env, "campaign", "list", "--help")).stdout
    assert "Print JSON" in (await run_mailroom(installation.env, "jobs", "--help")).stdout

    # an unknown campaign: exit 1, nothing published (no broker is even needed)
    unreachable_broker = {**installation.env, "MAILROOM_RABBITMQ_URL": "amqp://127.0.0.1:1/"}
    for command in ("pause", "resume", "cancel", "launch"):
        result = await run_mailroom(unreachable_broker, "campaign", command, "999999")
        assert result.returncode == 1, (command, result)
        assert _one_line(result.stderr) == "error: no campaign 999999: nothing was published"

    # an id no campaign can have (past int64): one line naming it, no traceback
    result = await run_mailroom(unreachable_broker, "campaign", "pause", "99999999999999999999")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "error: campaign_id: Input should be less than or equal to 9223372036854775807"
    ]

    # a campaign the command would leave as it is (a draft is neither paused nor resumed):
    # exit 1, nothing published
    for command, wanted in (("pause", "scheduled or generating or sending"), ("resume", "paused")):
        result = await run_mailroom(unreachable_broker, "campaign", command, str(first))
        assert result.returncode == 1, (command, result)
        assert _one_line(result.stderr) == (
            f"error: campaign {first} is draft: only a campaign that is {wanted} can be"
            f" {command}d; nothing was published"
        )

    # an unreachable server: one line naming its setting, no traceback, no password
    result = await run_mailroom(unreachable_broker, "campaign", "cancel", str(first))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: cannot reach the broker at amqp://127.0.0.1:1/ (MAILROOM_RABBITMQ_URL):"
        " [Errno 111] Connect call failed ('127.0.0.1', 1)"
    ]
    no_database = {
        **installation.env,
        "MAILROOM_DATABASE_URL": "postgresql://postgres:secret@127.0.0.1:1/mailroom",
    }
    for words in (["campaign", "list"], ["jobs"], ["campaign", "status", "1"]):
        result = await run_mailroom(no_database, *words)
        assert result.returncode == 1, (words, result)
        assert result.stderr.splitlines() == [
            "error: cannot reach the database at postgresql://postgres:***@127.0.0.1:1/mailroom"
            " (MAILROOM_DATABASE_URL): [Errno 111] Connect call failed ('127.0.0.1', 1)"
        ], words


async def test_a_broker_that_never_answers_ends_a_command_in_one_line(
    installation: Installation,
) -> None:
    """A server on the broker's port that takes the connection and says nothing (another
    program there, a node that hangs): the command gives up after MAILROOM_BROKER_WAIT_SECONDS
    with one line naming the setting, instead of waiting for ever."""
    campaign = await make_campaign(_pool(installation), await make_audience(_pool(installation), 1))
    held: list[asyncio.StreamWriter] = []

    async def say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = {
        **installation.env,
        "MAILROOM_RABBITMQ_URL": f"amqp://127.0.0.1:{port}/",
        "MAILROOM_BROKER_WAIT_SECONDS": "1",
    }
    try:
        result = await run_mailroom(silent, "campaign", "launch", str(campaign))
    finally:
        server.close()
        for writer in held:
            writer.close()
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        f"error: cannot reach the broker at amqp://127.0.0.1:{port}/ (MAILROOM_RABBITMQ_URL):"
        " no answer within 1 s"
    ]
    assert held, "the command never connected"


async def test_a_publish_the_broker_never_confirms_is_given_up(
    installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that takes the message but never confirms it (a memory or disk alarm blocks
    publishers): the command says so instead of waiting for ever."""

    async def never_confirmed(self: aiormq.Channel, frame: object) -> None:
        return None

    monkeypatch.setattr(aiormq.Channel, "_on_confirm_frame", never_confirmed)
    settings = installation.settings.model_copy(update={"broker_wait_seconds": 1.0})
    with pytest.raises(BrokerSilent) as raised:
        await send_command(settings, CampaignPause(campaign_id=1))
    assert str(raised.value) == "no answer to publishing campaign.pause within 1 s"
    assert unreachable_setting(raised.value) == RABBITMQ
