"""The config service's admin API on the real service process (one per module), PostgreSQL,
RabbitMQ and a real SMTP server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from mailroom_common.runtime_settings import SettingsStore, SmtpAccount

from tests.support.cli import run_mailroom
from tests.support.environment import RABBITMQ_URL, Installation, wait_for
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-4f1c9e"
BATCH_SIZE = 37
ITEMS_PAGE_SIZE = 444
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMTP_PASSWORD = "Pa55-smtp-9e1b7c"
IMAP_PASSWORD = "Pa55-imap-40d2aa"


@pytest.fixture(scope="module")
async def config() -> AsyncIterator[tuple[Installation, str]]:
    """An installation with an admin token and its config service: (installation, base URL)."""
    install = Installation(
        admin_token=TOKEN, batch_size=BATCH_SIZE, items_page_size=ITEMS_PAGE_SIZE
    )
    await install.setup()
    try:
        process = install.start_services("config", log_name="config")
        yield install, f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
    finally:
        await install.teardown()


@asynccontextmanager
async def admin(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as client:
        yield client


class EventTap:
    """Every settings.changed published on the installation's events exchange."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.bodies.append(message.body)
        await message.ack()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]


@asynccontextmanager
async def settings_changed(install: Installation) -> AsyncIterator[EventTap]:
    tap = EventTap()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{install.settings.queue_prefix}.events")
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="settings.changed")
        await queue.consume(tap.on_message)
        yield tap


async def test_every_call_needs_the_admin_token(config: tuple[Installation, str]) -> None:
    install, base = config
    calls = [
        ("GET", "/settings", None),
        ("GET", "/settings/smtp", None),
        ("GET", "/settings/nope", None),
        ("PUT", "/settings/smtp", {"port": 2525}),
        ("PUT", "/settings/smtp", "not json at all"),
        ("GET", "/settings/smtp/history", None),
        ("POST", "/actions/test-smtp", {"to": "admin@example.com"}),
        ("POST", "/actions/test-imap", None),
        ("GET", "/admin/jobs", None),
        ("POST", "/admin/jobs/mark-campaigns-completed/run", None),
    ]
    wrong = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer  \tx"},
    ]
    async with httpx.AsyncClient(base_url=base) as client:
        for headers in wrong:
            for method, path, body in calls:
                content = body if isinstance(body, str) else None
                payload = None if isinstance(body, str) else body
                answer = await client.request(
                    method, path, json=payload, content=content, headers=headers
                )
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
                assert "bearer token" in answer.json()["detail"]
        # the same calls with the token get through the door (whatever they answer then)
        assert (await client.get("/settings", headers=AUTH)).status_code == 200
        assert (await client.get("/settings/nope", headers=AUTH)).status_code == 404
        # the API's description stays public; health and metrics are on the ops port only
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "Mailroom config"
        assert (await client.get("/docs")).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 404, path
    ops_port = install.processes[0].ops_port  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}") as ops:
        assert (await ops.get("/healthz")).json()["services"] == ["config"]
        assert (await ops.get("/metrics")).status_code == 200


async def test_in_production_the_config_service_needs_an_admin_token() -> None:
    install = Installation(admin_token="")
    await install.setup()
    try:
        with pytest.raises(RuntimeError, match="exited early") as refused:
            install.start_services("config", log_name="config-production-no-token")
        assert (
            "refusing to start: MAILROOM_ADMIN_TOKEN is not set: the config service refuses to"
            " start without the admin API's bearer token in production"
        ) in str(refused.value)
        assert "Traceback" not in install.log_text()
    finally:
        await install.teardown()


async def test_in_development_without_a_token_every_call_is_refused() -> None:
    install = Installation(admin_token="", environment="development")
    await install.setup()
    try:
        process = install.start_services("config", log_name="config-no-token")
        base = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=base) as client:
            for headers in ({}, AUTH, {"Authorization": "Bearer"}):
                answer = await client.get("/settings", headers=headers)
                assert answer.status_code == 503
                assert "MAILROOM_ADMIN_TOKEN is not set" in answer.json()["detail"]
            ops_port = process.ops_port  # type: ignore[attr-defined]
            ready = await client.get(f"http://127.0.0.1:{ops_port}/readyz")
            assert ready.status_code == 200
        assert "MAILROOM_ADMIN_TOKEN is not set" in install.log_text()
    finally:
        await install.teardown()


async def test_groups_and_read_only_entries(config: tuple[Installation, str]) -> None:
    _install, base = config
    async with admin(base) as client:
        everything = (await client.get("/settings")).json()
        assert list(everything) == ["smtp", "marketing", "bounce"]
        marketing = (await client.get("/settings/marketing")).json()
        assert marketing["read_only"] == {
            "batch_size": BATCH_SIZE,
            "items_page_size": ITEMS_PAGE_SIZE,
        }
        assert set(marketing["settings"]) == {"text_footer", "html_footer", "public_base_url"}
        bounce = (await client.get("/settings/bounce")).json()
        assert "deleted after it is processed" in bounce["read_only"]["after_processing"]
        assert "dedicated" in bounce["read_only"]["after_processing"]
        smtp = (await client.get("/settings/smtp")).json()
        assert smtp["settings"]["password"] == ""  # none set
        assert everything["smtp"] == smtp

        unknown = await client.get("/settings/campaigns")
        assert unknown.status_code == 404 and "smtp, marketing, bounce" in unknown.json()["detail"]
        assert (await client.put("/settings/campaigns", json={"a": 1})).status_code == 404
        assert (await client.get("/settings/campaigns/history")).status_code == 404

        version = marketing["version"]
        for key, variable in (
            ("batch_size", "MAILROOM_BATCH_SIZE"),
            ("items_page_size", "MAILROOM_ITEMS_PAGE_SIZE"),
        ):
            refused = await client.put("/settings/marketing", json={key: 5})
            assert refused.status_code == 409
            assert refused.json() == {"detail": f"read-only: set by the deployment ({variable})"}
        # together with a valid change: nothing of it is stored
        refused = await client.put(
            "/settings/marketing",
            json={"public_base_url": "https://news.example.com", "batch_size": 1},
        )
        assert refused.status_code == 409
        after = (await client.get("/settings/marketing")).json()
        assert after["version"] == version and after["settings"] == marketing["settings"]
        # a GET sent back as it is changes nothing
        echoed = await client.put(
            "/settings/marketing", json={**marketing["settings"], **marketing["read_only"]}
        )
        assert echoed.status_code == 200, echoed.text
        assert echoed.json()["changed"] is False
        statement = await client.put("/settings/bounce", json={"after_processing": "kept"})
        assert statement.status_code == 409 and "read-only" in statement.json()["detail"]


async def _refused(client: httpx.AsyncClient, group: str, body: Any) -> list[dict[str, str]]:
    answer = await client.put(f"/settings/{group}", json=body)
    assert answer.status_code == 422, answer.text
    problems: list[dict[str, str]] = answer.json()["detail"]
    assert all(set(p) == {"field", "problem"} and p["problem"] for p in problems), problems
    return problems


async def test_invalid_values_are_refused_naming_the_field(
    config: tuple[Installation, str],
) -> None:
    _install, base = config
    async with admin(base) as client:
        before = {g: (await client.get(f"/settings/{g}")).json() for g in ("smtp", "marketing")}

        problems = await _refused(client, "smtp", {"port": 70000})
        assert problems == [
            {"field": "port", "problem": "Input should be less than or equal to 65535"}
        ]
        assert [p["field"] for p in await _refused(client, "smtp", {"port": "abc"})] == ["port"]
        problems = await _refused(client, "smtp", {"security": "ssl"})
        assert problems[0]["field"] == "security" and "starttls" in problems[0]["problem"]
        problems = await _refused(client, "smtp", {"port": 0, "security": "ssl", "bogus": 1})
        assert sorted(p["field"] for p in problems) == ["bogus", "port", "security"]
        assert (await _refused(client, "bounce", {"port": -1}))[0]["field"] == "port"

        problems = await _refused(client, "marketing", {"public_base_url": "http://example.com"})
        assert problems[0]["field"] == "public_base_url" and "https://" in problems[0]["problem"]

        no_link = "Thanks for reading. Manage: {{ manage_url }}"
        problems = await _refused(client, "marketing", {"text_footer": no_link})
        assert problems[0]["field"] == "text_footer"
        assert "{{ unsubscribe_url }}" in problems[0]["problem"]
        problems = await _refused(
            client, "marketing", {"html_footer": '<a href="{{ manage_url }}">Manage</a>'}
        )
        assert [p["field"] for p in problems] == ["html_footer"]
        # the link in a branch never taken, or in a comment, is no link
        hidden = "{% if false %}{{ unsubscribe_url }}{% endif %}{# {{ unsubscribe_url }} #}"
        assert (await _refused(client, "marketing", {"text_footer": hidden}))[0][
            "field"
        ] == "text_footer"
        broken = "Unsubscribe: {{ unsubscribe_url }\nBye"
        problems = await _refused(client, "marketing", {"text_footer": broken})
        assert problems[0]["field"] == "text_footer" and "line 1" in problems[0]["problem"]
        unsafe = "{{ unsubscribe_url }} {{ ''.__class__.__mro__ }}"
        assert (await _refused(client, "marketing", {"html_footer": unsafe}))[0][
            "field"
        ] == "html_footer"

        assert (await _refused(client, "smtp", [1, 2]))[0]["field"] == "(body)"
        answer = await client.put(
            "/settings/smtp", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "(body)"

        for group, view in before.items():  # nothing of it was stored
            assert (await client.get(f"/settings/{group}")).json() == view


async def test_a_change_is_versioned_recorded_and_announced(
    config: tuple[Installation, str],
) -> None:
    install, base = config
    async with admin(base) as client, settings_changed(install) as tap:
        version = (await client.get("/settings/smtp")).json()["version"]
        answer = await client.put(
            "/settings/smtp",
            json={"host": "smtp.example.com", "port": 2525, "pool_size": 4},
            headers={"X-Mailroom-Actor": "alice@example.com"},
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["changed"] is True and result["announced"] is True
        assert result["version"] == version + 1
        assert result["changed_keys"] == ["host", "pool_size", "port"]
        assert result["settings"]["port"] == 2525

        view = (await client.get("/settings/smtp")).json()
        assert view["version"] == version + 1 and view["updated_by"] == "alice@example.com"
        assert view["settings"]["host"] == "smtp.example.com"
        assert view["settings"]["from_email"] == "news@mailroom.test"  # untouched: kept

        history = (await client.get("/settings/smtp/history")).json()["entries"]
        assert history[0]["version"] == version + 1
        assert history[0]["changed_by"] == "alice@example.com"
        assert history[0]["changed_keys"] == ["host", "pool_size", "port"]

        async def announced() -> bool:
            return len(tap.bodies) >= 1

        await wait_for(announced, 10, "settings.changed")
        event = tap.events()[0]
        assert event["group"] == "smtp" and event["version"] == version + 1
        assert event["changed_keys"] == ["host", "pool_size", "port"]
        assert event["schema_version"] == 1

        # without an actor: "admin"; the same values again: no version, no event
        again = await client.put("/settings/smtp", json={"port": 2526})
        assert again.json()["version"] == version + 2
        assert (await client.get("/settings/smtp")).json()["updated_by"] == "admin"
        same = await client.put("/settings/smtp", json={"port": 2526, "host": "smtp.example.com"})
        assert same.status_code == 200
        assert same.json()["changed"] is False and same.json()["version"] == version + 2
        assert "nothing changed" in same.json()["message"]
        await asyncio.sleep(1.0)
        assert [e["version"] for e in tap.events()] == [version + 1, version + 2]
        history = (await client.get("/settings/smtp/history")).json()["entries"]
        assert [h["version"] for h in history][:2] == [version + 2, version + 1]

        # concurrent changes of one group: each gets its own version, none is lost
        answers = await asyncio.gather(
            *(
                client.put("/settings/smtp", json={key: 7})
                for key in ("pool_size", "timeout_seconds")
            )
        )
        assert sorted(a.json()["version"] for a in answers) == [version + 3, version + 4]
        final = (await client.get("/settings/smtp")).json()["settings"]
        assert final["pool_size"] == 7 and final["timeout_seconds"] == 7

        answer = await client.put(
            "/settings/smtp", json={"port": 2527}, headers={"X-Mailroom-Actor": "x" * 500}
        )
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["field"] == "X-Mailroom-Actor"


async def test_passwords_are_write_only(config: tuple[Installation, str]) -> None:
    install, base = config
    pool = install.pool
    assert pool is not None
    store = SettingsStore(pool, install.settings.settings_key)
    seen: list[str] = []
    async with admin(base) as client, settings_changed(install) as tap:

        async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            answer = await client.request(method, path, **kwargs)
            seen.append(answer.text)
            return answer

        answer = await call("PUT", "/settings/smtp", json={"password": SMTP_PASSWORD})
        assert answer.status_code == 200 and answer.json()["settings"]["password"] == "********"
        assert answer.json()["changed_keys"] == ["password"]
        await call("PUT", "/settings/bounce", json={"password": IMAP_PASSWORD, "username": "b"})
        assert (await call("GET", "/settings/smtp")).json()["settings"]["password"] == "********"
        assert (await call("GET", "/settings/bounce")).json()["settings"]["password"] == "********"
        await call("GET", "/settings")
        await call("GET", "/settings/smtp/history")
        await call("GET", "/settings/bounce/history")

        # the mask sent back (a GET, edited and PUT again) keeps the stored password
        view = (await call("GET", "/settings/smtp")).json()["settings"]
        kept = await call("PUT", "/settings/smtp", json={**view, "from_name": "News"})
        assert kept.json()["changed_keys"] == ["from_name"]
        account, _ = await store.load(SmtpAccount)
        assert account.password.get_secret_value() == SMTP_PASSWORD
        # a refused value never comes back in the answer either
        await call("PUT", "/settings/smtp", json={"password": 12345, "port": SMTP_PASSWORD})
        await call("POST", "/actions/test-imap")  # closed/wrong server: the reply, no password
        await call("POST", "/actions/test-smtp", json={"to": "admin@example.com"})

        async def both_announced() -> bool:
            return len(tap.bodies) >= 3

        await wait_for(both_announced, 10, "settings.changed events")
        for text in [*seen, *(body.decode() for body in tap.bodies), install.log_text()]:
            assert SMTP_PASSWORD not in text and IMAP_PASSWORD not in text

        rows = await pool.fetch("SELECT group_name, value::text AS value FROM settings")
        stored = {row["group_name"]: row["value"] for row in rows}
        for group, password in (("smtp", SMTP_PASSWORD), ("bounce", IMAP_PASSWORD)):
            assert password not in stored[group]
            assert json.loads(stored[group])["password"].startswith("enc:v1:")

        # "" clears it
        cleared = await call("PUT", "/settings/smtp", json={"password": ""})
        assert cleared.json()["settings"]["password"] == ""
        account, _ = await store.load(SmtpAccount)
        assert account.password.get_secret_value() == ""


async def test_test_smtp_sends_through_the_global_account(
    config: tuple[Installation, str], smtp_server: SmtpServer
) -> None:
    _install, base = config
    async with admin(base) as client:
        await client.put(
            "/settings/smtp",
            json={
                "host": "127.0.0.1",
                "port": smtp_server.port,
                "security": "none",
                "username": "",
                "from_email": "news@mailroom.test",
                "from_name": "Mailroom News",
            },
        )
        answer = await client.post("/actions/test-smtp", json={"to": "admin@example.com"})
        assert answer.status_code == 200
        result = answer.json()
        assert result == {"ok": True, "reply": "250 Message accepted for delivery"}
        assert len(smtp_server.handler.received) == 1
        received = smtp_server.handler.received[0]
        assert received.recipients == ["admin@example.com"]
        assert received.envelope_from == "news@mailroom.test"
        assert received.message["Subject"] == "Mailroom SMTP test"
        assert "global SMTP account" in received.part("plain")

        smtp_server.handler.hard_fail.add("nobody@example.com")
        refused = (
            await client.post("/actions/test-smtp", json={"to": "nobody@example.com"})
        ).json()
        assert refused["ok"] is False and "550 5.1.1" in refused["reply"]

        bad = await client.post("/actions/test-smtp", json={"to": "not an address"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "to"
        # the one address check of every recipient: Mailroom sends without SMTPUTF8
        delivered = len(smtp_server.handler.received)
        utf8 = await client.post("/actions/test-smtp", json={"to": "jürgen@example.com"})
        assert utf8.status_code == 422, utf8.text
        assert "SMTPUTF8" in utf8.json()["detail"][0]["problem"]
        assert len(smtp_server.handler.received) == delivered
        missing = await client.post("/actions/test-smtp", json={})
        assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "to"

        closed = free_port()
        await client.put("/settings/smtp", json={"port": closed})
        result = (await client.post("/actions/test-smtp", json={"to": "admin@example.com"})).json()
        assert result["ok"] is False
        assert result["reply"] == (
            f"connection refused by 127.0.0.1:{closed} (nothing listens on that port?)"
        )
        # TLS expected, plain SMTP answers: a clear TLS failure, not a hang
        await client.put("/settings/smtp", json={"port": smtp_server.port, "security": "tls"})
        result = (await client.post("/actions/test-smtp", json={"to": "admin@example.com"})).json()
        assert result["ok"] is False and "TLS" in result["reply"], result
        await client.put("/settings/smtp", json={"security": "none"})
    assert len(smtp_server.handler.received) == 1


async def test_test_imap_reports_an_unreachable_mailbox(config: tuple[Installation, str]) -> None:
    _install, base = config
    closed = free_port()
    refused = f"connection refused by 127.0.0.1:{closed} (nothing listens on that port?)"
    async with admin(base) as client:
        for security in ("none", "tls", "starttls"):
            await client.put(
                "/settings/bounce",
                json={"host": "127.0.0.1", "port": closed, "security": security},
            )
            result = (await client.post("/actions/test-imap")).json()
            assert result == {"ok": False, "reply": refused}
        await client.put("/settings/bounce", json={"host": "no-such-host.invalid"})
        result = (await client.post("/actions/test-imap")).json()
        assert result["ok"] is False and "cannot resolve host" in result["reply"]


async def test_the_job_manager_answers_as_mailroom_jobs_does(
    config: tuple[Installation, str],
) -> None:
    install, base = config
    async with admin(base) as client:
        answer = await client.get("/admin/jobs")
        assert answer.status_code == 200, answer.text
        overview = answer.json()
        # the config service runs none of the jobs: each is down, its queue declared
        assert [job["job"] for job in overview["jobs"]] == [
            "generate-campaign-items",
            "process-campaign-messages",
            "process-outbound-email",
            "mark-campaigns-completed",
            "process-autoresponder-messages",
            "process-bounce-email",
            "sync-crm-contacts",
        ]
        assert {job["state"] for job in overview["jobs"]} == {"down"}
        assert overview["broker_problem"] is None
        generator = overview["jobs"][0]
        assert generator["queues"] == [
            {
                "queue": f"{install.settings.queue_prefix}.item_generator.commands",
                "messages": 0,
                "consumers": 0,
                "dead_letters": 0,
                "dead_letter_queue": f"{install.settings.queue_prefix}.item_generator.commands.dlq",
            }
        ]

        unknown = await client.post("/admin/jobs/no-such-job/run")
        assert unknown.status_code == 404 and "no job 'no-such-job'" in unknown.json()["detail"]
        nothing = await client.post("/admin/jobs/process-campaign-messages/run")
        assert nothing.status_code == 409 and "has no sweep" in nothing.json()["detail"]
        down = await client.post("/admin/jobs/mark-campaigns-completed/run")
        assert down.status_code == 409 and "is down" in down.json()["detail"]

    # the same JSON as `mailroom jobs --json` (but for the moment each was read)
    result = await run_mailroom(install.env, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    from_cli = json.loads(result.stdout)
    assert from_cli.keys() == overview.keys()
    assert from_cli["jobs"] == overview["jobs"]
