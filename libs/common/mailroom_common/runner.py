"""Runs a set of services in one process (`mailroom run all` or `mailroom run SERVICE`).

Start: migrate, connect, declare the whole topology, start consumers, periodic tasks and
the HTTP endpoints. Stop (SIGTERM/SIGINT): stop taking work, let in-flight handlers finish
(up to the graceful timeout), then close connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Mapping

import uvicorn
from asyncpg.pool import Pool
from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage

from mailroom_common.broker import declare_topology, make_broker
from mailroom_common.db import create_pool
from mailroom_common.events import JobRun, SettingsChanged
from mailroom_common.http import PathDispatcher, health_app
from mailroom_common.intake import subscribe
from mailroom_common.jobs import Heartbeats, jobs_of_services
from mailroom_common.metrics import SERVICE_UP
from mailroom_common.migrate import migrate
from mailroom_common.runtime import Runtime
from mailroom_common.service import Service, ServiceFactory
from mailroom_common.settings import Settings

log = logging.getLogger(__name__)


def settings_listener(runtime: Runtime, services: list[Service]) -> RabbitRouter | None:
    """One subscriber per process that hands settings.changed to every service's hooks; what
    it cannot read goes to the shared settings-changed DLQ with the reason."""
    hooks = [hook for service in services for hook in service.on_settings_changed]
    if not hooks:
        return None
    router = RabbitRouter()
    topology = runtime.topology

    async def on_settings_changed(change: SettingsChanged, _: RabbitMessage) -> None:
        log.info("settings %s changed to version %d", change.group, change.version)
        for hook in hooks:
            try:
                await hook(change)
            except Exception:
                log.exception(
                    "applying settings %s version %d failed", change.group, change.version
                )

    subscribe(
        router,
        runtime,
        topology.settings_listener(runtime.instance_id),
        topology.events,
        SettingsChanged,
        on_settings_changed,
        dead_letter_key=topology.settings_dead_letter_key,
    )
    return router


def job_run_listener(runtime: Runtime, services: list[Service]) -> RabbitRouter | None:
    """One subscriber per process of job.run (`mailroom jobs run`): a job this process runs
    runs now (its periodic tasks wake, and its service's own `run_now` hooks are called);
    the others are ignored. What it cannot read goes to the shared job-run DLQ."""
    triggers: dict[str, list[Callable[[], None]]] = {}
    for service in services:
        for task in service.periodic:
            if task.job is not None:
                triggers.setdefault(task.job, []).append(task.wake.set)
        for job, trigger in service.run_now.items():
            triggers.setdefault(job, []).append(trigger)
    if not triggers:
        return None
    router = RabbitRouter()
    topology = runtime.topology

    async def on_job_run(request: JobRun, _: RabbitMessage) -> None:
        if request.job in triggers:
            log.info("job %s asked to run now", request.job)
            for trigger in triggers[request.job]:
                trigger()

    subscribe(
        router,
        runtime,
        topology.job_run_listener(runtime.instance_id),
        topology.events,
        JobRun,
        on_job_run,
        dead_letter_key=topology.job_run_dead_letter_key,
    )
    return router


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ServiceProcess:
    def __init__(self, settings: Settings, factories: Mapping[str, ServiceFactory]) -> None:
        self.settings = settings
        self.factories = dict(factories)
        self.services: list[Service] = []
        self.runtime: Runtime | None = None
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: _HttpServer | None = None
        self._pool: Pool | None = None

    @property
    def http_port(self) -> int | None:
        if self._http is None or not self._http.servers:
            return None
        port: int = self._http.servers[0].sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        settings = self.settings
        await migrate(settings.database_url)
        self._pool = await create_pool(settings)
        broker = make_broker(settings)
        self.runtime = runtime = Runtime.build(settings, self._pool, broker)
        self.services = [factory(runtime) for factory in self.factories.values()]
        for service in self.services:
            if service.router is not None:
                broker.include_router(service.router)
        for listener in (
            settings_listener(runtime, self.services),
            job_run_listener(runtime, self.services),
        ):
            if listener is not None:
                broker.include_router(listener)
        await broker.connect()
        await declare_topology(broker, runtime.topology)
        for service in self.services:
            for hook in service.on_start:
                await hook()
        await broker.start()
        for service in self.services:
            SERVICE_UP.labels(service.name).set(1)
            for task in service.periodic:
                self._tasks.append(
                    asyncio.create_task(task.loop(self.stopping, runtime.jobs), name=task.name)
                )
        heartbeats = Heartbeats(
            self._pool,
            runtime.jobs,
            runtime.instance_id,
            jobs_of_services(s.name for s in self.services),
        )
        self._tasks.append(asyncio.create_task(heartbeats.loop(self.stopping), name="heartbeats"))
        config = uvicorn.Config(
            PathDispatcher(
                health_app([s.name for s in self.services], self.readiness),
                [(s.http_paths, s.http_app) for s in self.services if s.http_app is not None],
            ),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            lifespan="off",
        )
        self._http = _HttpServer(config)
        self._tasks.append(asyncio.create_task(self._http.serve(), name="http"))
        while not self._http.started:  # noqa: ASYNC110 - uvicorn offers no event for this
            await asyncio.sleep(0.01)
        log.info(
            "running %s (http port %s)", ", ".join(s.name for s in self.services), self.http_port
        )

    async def readiness(self) -> dict[str, str | None]:
        assert self.runtime is not None
        problems: dict[str, str | None] = {}
        try:
            await asyncio.wait_for(self.runtime.pool.fetchval("SELECT 1"), 2)
            problems["database"] = None
        except Exception as error:
            problems["database"] = f"unreachable: {error!r}"
        broker_ok = await self.runtime.broker.ping(timeout=2)
        problems["broker"] = None if broker_ok else "unreachable"
        for service in self.services:
            for check in service.ready_checks:
                problems[f"{service.name}:{check.__name__}"] = await check()
        return problems

    async def stop(self) -> None:
        """Drain: no new work, in-flight handlers finish, then everything closes."""
        self.stopping.set()
        assert self.runtime is not None
        self.runtime.stopping.set()
        log.info("stopping: draining in-flight work")
        # periodic work (generation, schedules) and the services' own work (the bounce
        # mailbox) end their current unit while they can still publish; only then does the
        # broker stop
        periodic = [t for t in self._tasks if t.get_name() != "http"]
        if periodic:
            _done, late = await asyncio.wait(
                periodic, timeout=self.settings.graceful_timeout_seconds
            )
            for task in late:
                task.cancel()
        for service in self.services:
            for drain in service.on_drain:
                try:
                    await drain()
                except Exception:
                    log.exception("draining %s failed", service.name)
        await self.runtime.broker.stop()
        if self._http is not None:
            self._http.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for service in self.services:
            for hook in service.on_stop:
                with contextlib.suppress(Exception):
                    await hook()
            SERVICE_UP.labels(service.name).set(0)
        if self._pool is not None:
            await self._pool.close()
        log.info("stopped")

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await self.start()
        await signalled.wait()
        await self.stop()
