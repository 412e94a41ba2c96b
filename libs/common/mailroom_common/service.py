"""The thin service base: a service is a FastStream router, periodic tasks and readiness checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from faststream.rabbit import RabbitRouter
from starlette.types import ASGIApp

from mailroom_common.events import SettingsChanged
from mailroom_common.jobs import JobActivity
from mailroom_common.metrics import PERIODIC_FAILURES
from mailroom_common.runtime import Runtime

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else what is wrong


class StartRefused(Exception):
    """A service must not start as configured; the message says what to set."""


@dataclass
class PeriodicTask:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[None]]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # the job each run of this task is a run of (its heartbeat; `mailroom jobs run` wakes it)
    job: str | None = None

    async def loop(self, stopping: asyncio.Event, jobs: JobActivity | None = None) -> None:
        """Run every interval (or at once when woken) until stopping is set."""
        run = self.run
        if self.job is not None and jobs is not None:
            run = jobs.tracked(self.job, self.run)
        while not stopping.is_set():
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                PERIODIC_FAILURES.labels(self.name).inc()
                log.exception("periodic task %s failed", self.name)
            self.wake.clear()
            waiters = [asyncio.create_task(e.wait()) for e in (self.wake, stopping)]
            _done, pending = await asyncio.wait(
                waiters, timeout=self.interval_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()


@dataclass
class Service:
    name: str
    router: RabbitRouter | None = None
    periodic: list[PeriodicTask] = field(default_factory=list)
    ready_checks: list[ReadyCheck] = field(default_factory=list)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # work of its own (not a consumer's) that must end while the broker can still publish
    on_drain: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # called in this process for every settings.changed event (every process hears each one)
    on_settings_changed: list[Callable[[SettingsChanged], Awaitable[None]]] = field(
        default_factory=list
    )
    # public pages, served on MAILROOM_HTTP_PORT for these paths (/healthz, /readyz and
    # /metrics are on MAILROOM_OPS_PORT)
    http_app: ASGIApp | None = None
    http_paths: tuple[str, ...] = ()
    # job name -> what `mailroom jobs run` does beyond waking the periodic tasks of that job
    run_now: dict[str, Callable[[], None]] = field(default_factory=dict)


ServiceFactory = Callable[[Runtime], Service]
