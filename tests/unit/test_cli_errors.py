"""What the CLI says when it cannot do what was asked, as an operator reads it in a narrow
terminal: one line (never folded), naming the setting to fix. These need no server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.support.deployment import ROOT


def _mailroom(*words: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    return subprocess.run(
        [sys.executable, "-m", "mailroom", *words],
        env={**base, "MAILROOM_ENVIRONMENT": "development", "COLUMNS": "60", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_config_service_is_one_line_naming_its_setting() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = _mailroom("settings", "show", MAILROOM_CONFIG_URL=url, MAILROOM_ADMIN_TOKEN="t" * 32)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot reach the config service at {url}")
    assert "(MAILROOM_CONFIG_URL)" in line


def test_a_dlq_error_is_one_line_in_a_narrow_terminal() -> None:
    result = _mailroom("dlq", "show", "no_such_service.nothing.dlq")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr) > 60
