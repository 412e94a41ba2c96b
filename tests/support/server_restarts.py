"""Restarting the shared RabbitMQ and PostgreSQL, as an operator would, under the machine-wide
restart lock (other sessions' tests wait for it), and waiting until each is back."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import resource
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import aio_pika
import asyncpg

from tests.support.environment import POSTGRES_SERVER, RABBITMQ_URL

RESTART_LOCK = "/tmp/mailroom-server-restart.lock"
BACK_WITHIN_SECONDS = 120


@dataclass(frozen=True)
class Outage:
    started: float  # time.monotonic() when the server began to go away
    ended: float  # when it answered again

    @property
    def seconds(self) -> float:
        return self.ended - self.started


_held = 0  # how deep this process is inside restart_lock()


@contextlib.contextmanager
def restart_lock() -> Iterator[None]:
    """The lock `flock /tmp/mailroom-server-restart.lock` takes (flock(2), exclusive);
    re-entrant within this process. A fault case holds it from start to end, so that no
    one else restarts a shared server in the middle of its measurements."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    with open(RESTART_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held = 1
        try:
            yield
        finally:
            _held = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


def _postgres_cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql"))
    assert versions, "no PostgreSQL cluster under /etc/postgresql"
    return versions[-1]


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _more_file_handles() -> None:
    """Hundreds of quorum queues outgrow the default 1024 file handles of a new broker."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))


def _start_rabbitmq_node() -> None:
    subprocess.run(
        ["rabbitmq-server", "-detached"],
        check=True,
        capture_output=True,
        timeout=120,
        preexec_fn=_more_file_handles,
    )


async def _rabbitmq_answers() -> bool:
    try:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=3)
    except Exception:
        return False
    await connection.close()
    return True


async def _postgresql_answers() -> bool:
    try:
        conn = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres", timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


async def _until(answers: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + BACK_WITHIN_SECONDS
    while not await answers():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not back within {BACK_WITHIN_SECONDS} s")
        await asyncio.sleep(0.2)


async def restart_rabbitmq(down_seconds: float = 5) -> Outage:
    """`rabbitmqctl stop_app; sleep; rabbitmqctl start_app`, then wait until AMQP answers."""

    def stop_and_start() -> float:
        started = time.monotonic()
        _run("rabbitmqctl", "stop_app")
        time.sleep(down_seconds)
        _run("rabbitmqctl", "start_app")
        return started

    with restart_lock():
        started = await asyncio.to_thread(stop_and_start)
        await _until(_rabbitmq_answers, "RabbitMQ")
        return Outage(started, time.monotonic())


async def restart_postgresql() -> Outage:
    """`pg_ctlcluster ... main restart -m fast`, then wait until a connection succeeds."""
    command = (
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        _postgres_cluster(),
        "main",
        "restart",
        "-m",
        "fast",
    )
    with restart_lock():
        started = time.monotonic()
        await asyncio.to_thread(_run, *command)
        await _until(_postgresql_answers, "PostgreSQL")
        return Outage(started, time.monotonic())


async def ensure_servers_up() -> None:
    """Start RabbitMQ or PostgreSQL if a previous run (or someone else) left one down."""
    if await _rabbitmq_answers() and await _postgresql_answers():
        return
    with restart_lock():
        if not await _rabbitmq_answers():
            # stopped app (stop_app) or stopped node: one of the two brings it back
            try:
                await asyncio.to_thread(_run, "rabbitmqctl", "start_app")
            except subprocess.CalledProcessError:
                await asyncio.to_thread(_start_rabbitmq_node)
            await _until(_rabbitmq_answers, "RabbitMQ")
        if not await _postgresql_answers():
            cluster = _postgres_cluster()
            start = ("pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start")
            await asyncio.to_thread(_run, *start)
            await _until(_postgresql_answers, "PostgreSQL")
