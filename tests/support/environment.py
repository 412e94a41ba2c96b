"""An isolated Mailroom installation per test: its own database and queue prefix."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
from mailroom_common.broker import Topology
from mailroom_common.broker_policy import BrokerPolicyError, remove_delivery_limit
from mailroom_common.db import create_pool, quote_ident
from mailroom_common.migrate import migrate
from mailroom_common.settings import Settings

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SERVER = os.environ.get("MAILROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
RABBITMQ_URL = os.environ.get("MAILROOM_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
# keys of this test run only (never the public development keys): tests/conftest.py puts them in
# os.environ, so that Settings() read anywhere in the tests agrees with every installation
RUN_KEYS = {
    "MAILROOM_SIGNING_KEY": secrets.token_urlsafe(48),
    "MAILROOM_SETTINGS_KEY": secrets.token_urlsafe(48),
}
# the config service refuses to start without an admin token in production
RUN_ADMIN_TOKEN = secrets.token_urlsafe(24)


def _settings_from(env: dict[str, str]) -> Settings:
    """Settings exactly as a service process started with `env` reads them."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Installation:
    """Settings, database and broker names nobody else uses, and the service processes."""

    def __init__(self, **overrides: Any) -> None:
        tag = uuid.uuid4().hex[:10]
        self.database = f"mailroom_test_{tag}"
        self.env: dict[str, str] = {
            "MAILROOM_DATABASE_URL": f"{POSTGRES_SERVER}/{self.database}",
            "MAILROOM_RABBITMQ_URL": RABBITMQ_URL,
            "MAILROOM_QUEUE_PREFIX": f"t{tag}",
            "MAILROOM_RETRY_DELAYS_SECONDS": "[1, 2, 3]",
            "MAILROOM_SWEEP_INTERVAL_SECONDS": "1",
            "MAILROOM_LOG_LEVEL": "INFO",
            "MAILROOM_GRACEFUL_TIMEOUT_SECONDS": "20",
            "MAILROOM_ENVIRONMENT": "production",
            "MAILROOM_ADMIN_TOKEN": RUN_ADMIN_TOKEN,
            "MAILROOM_LOG_FORMAT": "text",
            **RUN_KEYS,
        }
        self.env.update({f"MAILROOM_{k.upper()}": str(v) for k, v in overrides.items()})
        self.settings = _settings_from(self.env)
        self.pool: asyncpg.Pool | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    async def setup(self) -> asyncpg.Pool:
        await migrate(self.settings.database_url, create_database=True)
        self.pool = await create_pool(self.settings)
        return self.pool

    async def teardown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        if self.pool is not None:
            await self.pool.close()
        admin = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres")
        try:
            await admin.execute(
                f"DROP DATABASE IF EXISTS {quote_ident(self.database)} WITH (FORCE)"
            )
        finally:
            await admin.close()
        topology = Topology.from_settings(self.settings)
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            for name in topology.all_queue_names():
                await channel.queue_delete(name)
            for exchange in topology.exchanges():
                await channel.exchange_delete(exchange.name)
        with contextlib.suppress(BrokerPolicyError):
            await remove_delivery_limit(self.settings, topology)

    # --- service processes -----------------------------------------------------------

    def start_services(self, *services: str, log_name: str = "services") -> subprocess.Popen[bytes]:
        """Start `mailroom run SERVICES` (all by default) and wait until /readyz says ready.
        The process gets `http_port` (public pages) and `ops_port` (/healthz, /readyz,
        /metrics) attributes."""
        port, ops_port = free_port(), free_port()
        env = {
            **os.environ,
            **self.env,
            "MAILROOM_HTTP_PORT": str(port),
            "MAILROOM_OPS_PORT": str(ops_port),
        }
        log_path = (
            Path(os.environ.get("TMPDIR", "/tmp"))
            / f"{self.database}-{log_name}-{len(self.logs)}.log"
        )
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "mailroom", "run", *(services or ("all",))],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        process.http_port = port  # type: ignore[attr-defined]
        process.ops_port = ops_port  # type: ignore[attr-defined]
        self.processes.append(process)
        self.logs.append(log_path)
        self._wait_healthy(process, ops_port, log_path)
        return process

    def _wait_healthy(
        self, process: subprocess.Popen[bytes], ops_port: int, log_path: Path
    ) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"services exited early:\n{log_path.read_text()[-4000:]}")
            try:
                answer = httpx.get(f"http://127.0.0.1:{ops_port}/readyz", timeout=1)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"services not ready in 60 s:\n{log_path.read_text()[-4000:]}")

    @staticmethod
    def metrics_url(process: subprocess.Popen[bytes]) -> str:
        """Where a started process serves /metrics."""
        return f"http://127.0.0.1:{process.ops_port}/metrics"  # type: ignore[attr-defined]

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    @staticmethod
    def terminate(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout)

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()


async def wait_for(
    condition: Callable[[], Awaitable[bool]], limit: float, what: str, interval: float = 0.25
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")
