"""`mailroom settings ...` as an administrator runs it: real subprocesses talking to the
config service's admin API (MAILROOM_CONFIG_URL, MAILROOM_ADMIN_TOKEN)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from mailroom_common.runtime_settings import SettingsStore, SmtpAccount

from tests.support.cli import run_mailroom
from tests.support.environment import Installation
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

TOKEN = "cli-test-admin-token"


@pytest.fixture(scope="module")
async def config() -> AsyncIterator[tuple[Installation, dict[str, str]]]:
    """The config service, and the environment a `mailroom settings` command needs."""
    install = Installation(admin_token=TOKEN, batch_size=50)
    await install.setup()
    try:
        process = install.start_services("config", log_name="config-cli")
        url = f"http://127.0.0.1:{process.http_port}"  # type: ignore[attr-defined]
        yield install, {**install.env, "MAILROOM_CONFIG_URL": url}
    finally:
        await install.teardown()


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def test_show_and_set(config: tuple[Installation, dict[str, str]]) -> None:
    install, env = config
    assert install.pool is not None
    store = SettingsStore(install.pool, install.settings.settings_key)

    result = await run_mailroom(
        env, "settings",
        "set", "smtp", "host=mx.example.com", "port=2526", "password=123456",
        "verify_certificates=false", "--actor", "ops@example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "smtp: version 1, changed: host, password, port, verify_certificates\n"
    account, version = await store.load(SmtpAccount)
    assert version == 1 and account.port == 2526 and account.verify_certificates is False
    assert account.password.get_secret_value() == "123456"  # a string, as written

    result = await run_mailroom(env, "settings", "show", "smtp", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["settings"]["port"] == 2526 and shown["settings"]["password"] == "********"
    assert shown["updated_by"] == "ops@example.com" and shown["version"] == 1

    result = await run_mailroom(env, "settings", "show")
    assert result.returncode == 0, result.stderr
    table = _one_line(result.stdout)
    assert "smtp (version 1, by ops@example.com" in table
    assert "marketing (version 0)" in table and "bounce (version 0)" in table
    assert "batch_size (read-only) │ 50" in table
    assert "123456" not in result.stdout and "********" in result.stdout

    result = await run_mailroom(env, "settings", "set", "smtp", "port=2526", "host=mx.example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "smtp: nothing changed (still version 1)\n"

    result = await run_mailroom(env, "settings", "set", "marketing", "batch_size=1")
    assert result.returncode == 2
    assert result.stderr == "error: read-only: set by the deployment (MAILROOM_BATCH_SIZE)\n"

    result = await run_mailroom(env, "settings", "set", "smtp", "port=0", "security=ssl")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: port: Input should be greater than or equal to 1",
        "error: security: Input should be 'none', 'starttls' or 'tls'",
    ]
    result = await run_mailroom(
        env, "settings", "set", "marketing", "text_footer=Bye. {{ manage_url }}"
    )
    assert result.returncode == 2
    assert _one_line(result.stderr).startswith(
        "error: text_footer: must contain the unsubscribe link {{ unsubscribe_url }}"
    )
    result = await run_mailroom(env, "settings", "set", "newsletter", "a=1")
    assert result.returncode == 2 and "unknown settings group 'newsletter'" in result.stderr

    result = await run_mailroom(env, "settings", "set", "smtp", "port=2527", "--json")
    assert result.returncode == 0, result.stderr
    changed = json.loads(result.stdout)
    assert changed["version"] == 2 and changed["changed_keys"] == ["port"]

    result = await run_mailroom({**env, "MAILROOM_ADMIN_TOKEN": "wrong"}, "settings", "show")
    assert result.returncode == 2 and "missing or wrong bearer token" in result.stderr
    closed = free_port()
    result = await run_mailroom(
        {**env, "MAILROOM_CONFIG_URL": f"http://127.0.0.1:{closed}"}, "settings", "show"
    )
    assert result.returncode == 2
    assert (
        f"cannot reach the config service at http://127.0.0.1:{closed} (MAILROOM_CONFIG_URL)"
        in result.stderr
    )


async def test_test_smtp_and_test_imap(
    config: tuple[Installation, dict[str, str]], smtp_server: SmtpServer
) -> None:
    _install, env = config
    port = f"port={smtp_server.port}"
    result = await run_mailroom(
        env, "settings", "set", "smtp", "host=127.0.0.1", port, "security=none"
    )
    assert result.returncode == 0, result.stderr
    result = await run_mailroom(env, "settings", "test-smtp", "admin@example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: 250 Message accepted for delivery\n"
    assert smtp_server.handler.recipients() == {"admin@example.com": 1}

    closed = free_port()
    result = await run_mailroom(
        env, "settings", "set", "bounce", "host=127.0.0.1", f"port={closed}"
    )
    assert result.returncode == 0, result.stderr
    result = await run_mailroom(env, "settings", "test-imap", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "ok": False,
        "reply": f"connection refused by 127.0.0.1:{closed} (nothing listens on that port?)",
    }
    result = await run_mailroom(env, "settings", "test-smtp", "not-an-address")
    assert result.returncode == 2 and result.stderr.startswith("error: to: ")
