"""campaign.create and campaign.update as the CRM sends them: real commands on RabbitMQ to the
item generator (one or two processes), real PostgreSQL; answers read from the events
exchange, refusals from the dead-letter queue with their reasons."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from mailroom_common.broker import Topology
from mailroom_common.campaign_drafts import NewCampaign, create_draft, update_draft
from mailroom_common.events import CampaignCreate, CampaignUpdate
from mailroom_common.intake import ERROR_HEADER

from tests.support.cli import run_mailroom
from tests.support.crm import campaign_create as _create
from tests.support.crm import json_message, take
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.seed import HTML, TEXT

pytestmark = pytest.mark.integration

BROKEN_HTML = "<html><body>\n<h1>Hello</h1>\n<p>{{ contact.first_name </p>\n</body></html>\n"


@dataclass
class Crm:
    """The CRM's end of the broker: publishes commands, reads answers and dead letters."""

    channel: AbstractChannel
    topology: Topology
    answers: AbstractQueue

    async def send(
        self,
        routing_key: str,
        body: dict[str, Any] | bytes,
        *,
        case: str = "",
        message_id: str | None = None,
    ) -> None:
        exchange = await self.channel.get_exchange(self.topology.commands.name)
        await exchange.publish(
            json_message(body, message_id=message_id or uuid.uuid4().hex, headers={"x-case": case}),
            routing_key=routing_key,
            mandatory=True,
        )

    async def answers_received(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(m.body) for m in await take(self.answers, count)]

    async def dead_letters(self, count: int) -> dict[str, str]:
        """Reason by case (the x-case header the command was sent with)."""
        dlq = await self.channel.get_queue(f"{self.topology.campaign_commands.name}.dlq")
        letters = await take(dlq, count)
        return {str(m.headers["x-case"]): str(m.headers[ERROR_HEADER]) for m in letters}


@asynccontextmanager
async def _crm(installation: Installation) -> AsyncIterator[Crm]:
    topology = Topology.from_settings(installation.settings)
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        answers = await channel.declare_queue(exclusive=True)
        for key in ("campaign.created", "campaign.updated"):
            await answers.bind(topology.events.name, key)
        yield Crm(channel, topology, answers)


async def _lists(pool: asyncpg.Pool) -> tuple[int, int]:
    readers = await pool.fetchval("INSERT INTO lists (name) VALUES ('readers') RETURNING id")
    friends = await pool.fetchval("INSERT INTO lists (name) VALUES ('friends') RETURNING id")
    return readers, friends


def _pool(installation: Installation) -> asyncpg.Pool:
    assert installation.pool is not None
    return installation.pool


async def test_a_create_answers_with_its_campaign_and_a_repeat_with_the_same_one(
    installation: Installation,
) -> None:
    pool = _pool(installation)
    readers, friends = await _lists(pool)
    installation.start_services("item_generator")
    installation.start_services("item_generator", log_name="second")  # two consumers
    async with _crm(installation) as crm:
        first = _create(idempotency_key="crm-1", correlation_id="c1", list_ids=[friends])
        await crm.send("campaign.create", first)
        [answer] = await crm.answers_received(1)
        campaign_id = answer["campaign_id"]
        assert answer["correlation_id"] == "c1" and answer["idempotency_key"] == "crm-1"
        assert answer["replayed"] is False
        stored = await pool.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
        assert stored is not None
        assert stored["status"] == "draft" and stored["name"] == "Spring"
        assert stored["html_template"] == HTML and stored["text_template"] == TEXT
        assert (stored["from_email"], stored["from_name"]) == (
            "news@mailroom.test",
            "Mailroom News",
        )
        lists = await pool.fetch(
            "SELECT list_id FROM campaign_lists WHERE campaign_id = $1 ORDER BY 1", campaign_id
        )
        assert [r["list_id"] for r in lists] == sorted([readers, friends])

        # the same key and content again: the same campaign, with the new correlation id
        await crm.send("campaign.create", {**first, "correlation_id": "c2"})
        [again] = await crm.answers_received(1)
        assert (again["campaign_id"], again["correlation_id"]) == (campaign_id, "c2")
        assert again["replayed"] is True
        # the same key, other content: refused, naming the key and the campaign
        await crm.send("campaign.create", {**first, "subject": "Other"}, case="reused key")
        assert await crm.dead_letters(1) == {
            "reused key": f"idempotency_key: 'crm-1' already created campaign {campaign_id}"
            " with other content; a new campaign needs a new key"
        }

        # 30 copies of one request at once, to two processes (8 at a time each): one campaign
        copy = _create(idempotency_key="crm-2")
        await asyncio.gather(
            *(crm.send("campaign.create", {**copy, "correlation_id": f"k{n}"}) for n in range(30))
        )
        copies = await crm.answers_received(30)
        assert sorted(a["correlation_id"] for a in copies) == sorted(f"k{n}" for n in range(30))
        assert len({a["campaign_id"] for a in copies}) == 1
        assert sum(not a["replayed"] for a in copies) == 1
        # a create without a key delivered twice (a redelivery keeps the message id): one campaign
        unkeyed = _create(name="No key", correlation_id="u")
        for _ in range(2):
            await crm.send("campaign.create", unkeyed, message_id="crm-message-7")
        redelivered = await crm.answers_received(2)
        assert len({a["campaign_id"] for a in redelivered}) == 1
        assert sorted(a["replayed"] for a in redelivered) == [False, True]
        # without a key and with another message id, the same content is another campaign
        await crm.send("campaign.create", unkeyed)
        [other] = await crm.answers_received(1)
        assert other["campaign_id"] not in {campaign_id, redelivered[0]["campaign_id"]}

    counts = await pool.fetch(
        "SELECT coalesce(idempotency_key, name) AS request, count(*) AS n FROM campaigns"
        " GROUP BY 1 ORDER BY 1"
    )
    assert [(r["request"], r["n"]) for r in counts] == [("No key", 2), ("crm-1", 1), ("crm-2", 1)]


async def test_a_repeat_after_the_launch_answers_with_the_launched_campaign(
    installation: Installation,
) -> None:
    """A CRM that retries a create after it launched the campaign gets the same campaign back
    (replayed), never a second draft; the launched campaign is left as it is."""
    pool = _pool(installation)
    await _lists(pool)
    installation.start_services("item_generator")
    async with _crm(installation) as crm:
        request = _create(idempotency_key="crm-launched", correlation_id="first")
        await crm.send("campaign.create", request)
        [made] = await crm.answers_received(1)
        await crm.send("campaign.launch", {"campaign_id": made["campaign_id"]})

        async def launched() -> bool:
            status: str = await pool.fetchval(
                "SELECT status FROM campaigns WHERE id = $1", made["campaign_id"]
            )
            return status != "draft"

        await wait_for(launched, 60, "the campaign launched")
        await crm.send("campaign.create", {**request, "correlation_id": "retry"})
        [again] = await crm.answers_received(1)
    assert (again["campaign_id"], again["correlation_id"], again["replayed"]) == (
        made["campaign_id"],
        "retry",
        True,
    )
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1
    assert await pool.fetchval(
        "SELECT status FROM campaigns WHERE id = $1", made["campaign_id"]
    ) not in (None, "draft")


HUGE_BODY = b'{"name": "' + b"x" * (17 * 1024 * 1024) + b'"}'
REFUSED: list[tuple[str, dict[str, Any] | bytes, str]] = [
    ("broken html", _create(html_template=BROKEN_HTML), "html_template, line 3: unexpected '/'"),
    (
        "sandbox escape",
        _create(html_template="{{ ''.__class__.__mro__[1].__subclasses__() }}"),
        "html_template, line 1: '__subclasses__' is not allowed in a template",
    ),
    (
        "globals through a merge field",
        _create(subject="{{ contact.__init__.__globals__ }}"),
        "subject, line 1: '__globals__' is not allowed in a template",
    ),
    (
        "unknown variable",
        _create(html_template="<p>Hi</p>\n<p>{{ first_name }}</p>"),
        "html_template, line 2: unknown variable 'first_name': a merge field is contact.<field>",
    ),
    ("unknown variable in the subject", _create(subject="{{ camp.name }}"), "subject, line 1:"),
    ("unknown filter", _create(text_template="{{ 1 | shell }}"), "text_template, line 1:"),
    (
        "32,000 merge fields",
        _create(html_template="<p>{{ contact.first_name }}</p>" * 32_000),
        "html_template: 32,000 merge fields and tags ({{ }}, {% %}); at most 1,000 allowed",
    ),
    ("unknown list", _create(lists=["readers", "nope"]), "lists: no list named 'nope'"),
    ("unknown list id", _create(lists=[], list_ids=[99]), "list_ids: list 99 does not exist"),
    ("no list", _create(lists=[]), "lists: name at least one target list (lists or list_ids)"),
    (
        "bad from",
        _create(from_email="not an address"),
        "from_email: An email address must have an @-sign.",
    ),
    (
        "from with a name",
        _create(from_email="News <news@mailroom.test>"),
        "from_email: A display name and angle brackets around the email address are not",
    ),
    (
        "from without a domain",
        _create(from_email="news@localhost"),
        "from_email: The part after the @-sign is not valid. It should have a period.",
    ),
    (
        "from with a header",
        _create(from_email="news@mailroom.test\r\nBcc: all@example.com"),
        "from_email: holds a control character (a line break?)",
    ),
    (
        "bad reply-to",
        _create(reply_to="Desk <nobody>"),
        "reply_to: An email address must have an @-sign.",
    ),
    ("name of a wrong type", _create(name=5), "name: Input should be a valid string"),
    ("list id of a wrong type", _create(list_ids=["abc"]), "list_ids.0: Input should be a valid"),
    ("a NUL", _create(subject="Hi\x00"), "subject holds a NUL character"),
    ("no html", {k: v for k, v in _create().items() if k != "html_template"}, "html_template:"),
    (
        "huge template",
        _create(html_template="x" * 1_000_001),
        "html_template: String should have at most 1000000 characters",
    ),
    ("huge body", HUGE_BODY, f"body of {len(HUGE_BODY)} bytes: the limit is 16777216 bytes"),
    (
        "huge list",
        _create(lists=[f"list {n}" for n in range(1001)]),
        "lists: List should have at most 1000 items",
    ),
    ("not JSON", b'{"name": ', "not JSON"),
    ("a list of a wrong type", _create(lists="readers"), "lists: Input should be a valid array"),
]


async def test_what_is_wrong_is_dead_lettered_with_the_field_named(
    installation: Installation,
) -> None:
    pool = _pool(installation)
    await _lists(pool)
    installation.start_services("item_generator")
    async with _crm(installation) as crm:
        for case, body, _ in REFUSED:
            await crm.send("campaign.create", body, case=case)
        # a field Mailroom does not know is no reason to refuse (a newer CRM)
        # nor are names a template sets itself, Jinja's own, and the footer's links
        names = (
            "{% set hello = 'Hi' %}<p>{{ hello }} {{ contact.first_name }}</p>"
            "{% for n in range(2) %}{{ n }}{{ loop.index }}{% endfor %}"
            "{% macro link(u) %}<a href='{{ u }}'>x</a>{% endmacro %}{{ link(manage_url) }}"
        )
        await crm.send(
            "campaign.create",
            _create(crm_owner="ann", correlation_id="extra", html_template=names),
        )
        [answer] = await crm.answers_received(1)
        assert answer["correlation_id"] == "extra"
        reasons = await crm.dead_letters(len(REFUSED))
    wrong = {case: reasons[case] for case, _, reason in REFUSED if reason not in reasons[case]}
    assert wrong == {}
    # one line a person can act on: the message type, then the field
    assert reasons["name of a wrong type"].startswith("invalid campaign.create message: name:")
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1


async def test_update_changes_a_draft_only(installation: Installation) -> None:
    pool = _pool(installation)
    readers, friends = await _lists(pool)
    installation.start_services("item_generator")
    async with _crm(installation) as crm:
        await crm.send("campaign.create", _create(reply_to="desk@mailroom.test"))
        [created] = await crm.answers_received(1)
        campaign_id = created["campaign_id"]

        await crm.send(
            "campaign.update",
            {
                "campaign_id": campaign_id,
                "correlation_id": "u1",
                "subject": "Spring is here, {{ contact.first_name }}",
                "reply_to": "",
                "text_template": "",
                "name": "Spring",  # as it was: not a change
                "list_ids": [friends],
            },
        )
        [updated] = await crm.answers_received(1)
        assert updated["campaign_id"] == campaign_id and updated["correlation_id"] == "u1"
        assert updated["changed"] == ["reply_to", "subject", "text_template", "lists"]
        stored = await pool.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
        assert stored is not None
        assert stored["subject"] == "Spring is here, {{ contact.first_name }}"
        assert stored["reply_to"] is None and stored["text_template"] is None
        assert stored["html_template"] == HTML and stored["name"] == "Spring"
        lists = await pool.fetch(
            "SELECT list_id FROM campaign_lists WHERE campaign_id = $1", campaign_id
        )
        assert [r["list_id"] for r in lists] == [friends] != [readers]

        # refused: a broken template (nothing changes), an unknown campaign, wrong types
        await crm.send(
            "campaign.update",
            {"campaign_id": campaign_id, "html_template": BROKEN_HTML},
            case="broken",
        )
        await crm.send("campaign.update", {"campaign_id": 999999, "name": "x"}, case="unknown")
        await crm.send("campaign.update", {"campaign_id": "twelve"}, case="wrong id")
        await crm.send(
            "campaign.update", {"campaign_id": campaign_id, "lists": []}, case="no lists"
        )
        reasons = await crm.dead_letters(4)  # taken at once: wait, before the launch
        # launched for tomorrow: scheduled, no longer a draft
        send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        await crm.send("campaign.launch", {"campaign_id": campaign_id, "send_at": send_at})

        async def scheduled() -> bool:
            status = await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id)
            return bool(status == "scheduled")

        await wait_for(scheduled, 30, "the launch")
        await crm.send("campaign.update", {"campaign_id": campaign_id, "name": "Late"}, case="late")
        reasons |= await crm.dead_letters(1)
    assert reasons["broken"] == "html_template, line 3: unexpected '/'"
    assert reasons["unknown"] == "campaign_id: campaign 999999 does not exist"
    assert reasons["wrong id"].startswith("invalid campaign.update message: campaign_id:")
    assert reasons["no lists"].startswith("lists: name at least one target list")
    assert reasons["late"] == (
        f"campaign_id: campaign {campaign_id} is scheduled; only a draft can be updated"
    )
    stored = await pool.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
    assert stored is not None
    assert stored["name"] == "Spring" and stored["html_template"] == HTML
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM campaign_lists WHERE campaign_id = $1", campaign_id
        )
        == 1
    )


async def test_the_cli_takes_the_same_path(installation: Installation, tmp_path: Path) -> None:
    """`mailroom campaign create` refuses what the command refuses, and takes a key too."""
    pool = _pool(installation)
    await _lists(pool)
    html = tmp_path / "news.html"
    html.write_text(HTML, encoding="utf-8")

    def create(*extra: str) -> list[str | Path]:
        return [
            "campaign", "create", "--name", "Spring", "--subject", "Hi", "--from",
            "news@mailroom.test", "--html", html, "--list", "readers", "--json", *extra,
        ]  # fmt: skip

    first = await run_mailroom(installation.env, *create("--idempotency-key", "cli-1"))
    assert first.returncode == 0, first.stderr
    again = await run_mailroom(installation.env, *create("--idempotency-key", "cli-1"))
    assert again.returncode == 0, again.stderr
    made, repeated = json.loads(first.stdout), json.loads(again.stdout)
    assert made["replayed"] is False and repeated["replayed"] is True
    assert made["campaign_id"] == repeated["campaign_id"]
    other = await run_mailroom(
        installation.env, *create("--idempotency-key", "cli-1", "--from-name", "Someone")
    )
    assert other.returncode == 2
    assert re.sub(r"\s+", " ", other.stderr).strip() == (
        f"error: idempotency_key: 'cli-1' already created campaign {made['campaign_id']}"
        " with other content; a new campaign needs a new key"
    )
    bad_from = await run_mailroom(installation.env, *create("--from", "nobody"))
    assert bad_from.returncode == 2
    assert re.sub(r"\s+", " ", bad_from.stderr).strip() == (
        "error: from address: An email address must have an @-sign."
    )
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1


async def test_simultaneous_creates_of_one_request_make_one_campaign(
    installation: Installation,
) -> None:
    """Every copy passes the look-up for an earlier campaign before any is stored (the
    templates compile in threads meanwhile): the unique index alone decides, and the losers
    answer with the winner's campaign. Also for a request known only by its message id."""
    pool = _pool(installation)
    await _lists(pool)
    copies = 20
    campaign = NewCampaign.of(CampaignCreate.model_validate(_create()))
    settings = installation.settings
    for key, message_id in (("same-key", None), (None, "same-message")):
        made = await asyncio.gather(
            *(
                create_draft(pool, settings, campaign, idempotency_key=key, message_id=message_id)
                for _ in range(copies)
            )
        )
        assert len({m.campaign_id for m in made}) == 1
        assert sorted(m.replayed for m in made) == [False] + [True] * (copies - 1)
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 2
    assert await pool.fetchval("SELECT count(*) FROM campaign_lists") == 2


async def test_simultaneous_updates_of_one_draft_all_land(installation: Installation) -> None:
    """Each update is checked against the draft it is written over: one that changed
    meanwhile is taken again, so no update overwrites another's field with an old value."""
    pool = _pool(installation)
    readers, friends = await _lists(pool)
    campaign = NewCampaign.of(CampaignCreate.model_validate(_create()))
    made = await create_draft(pool, installation.settings, campaign)
    changes: list[dict[str, Any]] = [
        {"name": "New name"},
        {"subject": "New subject {{ contact.first_name }}"},
        {"from_name": "New sender"},
        {"reply_to": "desk@mailroom.test"},
        {"text_template": "New text"},
        {"html_template": "<p>New {{ contact.first_name }}</p>"},
        {"list_ids": [friends]},
    ]
    changed = await asyncio.gather(
        *(
            update_draft(
                pool,
                installation.settings,
                CampaignUpdate(campaign_id=made.campaign_id, **change),
            )
            for change in changes
        )
    )
    assert sorted(name for names in changed for name in names) == sorted(
        ["name", "subject", "from_name", "reply_to", "text_template", "html_template", "lists"]
    )
    stored = await pool.fetchrow("SELECT * FROM campaigns WHERE id = $1", made.campaign_id)
    assert stored is not None
    for change in changes[:-1]:
        for name, value in change.items():
            assert stored[name] == value, name
    lists = await pool.fetch(
        "SELECT list_id FROM campaign_lists WHERE campaign_id = $1", made.campaign_id
    )
    assert [r["list_id"] for r in lists] == [friends] != [readers]
