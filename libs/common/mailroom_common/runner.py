"""Runs a set of services in one process (`mailroom run all` or `mailroom run SERVICE`).

Start: check the schema is current (or migrate, with MAILROOM_MIGRATE_ON_START=true), open
the ops port (/healthz, /readyz, /metrics), connect, declare the whole topology, try to put the
delivery-limit policy (a few seconds at most; on failure it is retried in the background, never
holding the start up: `delivery_limit_keeper`), start consumers, periodic tasks and the public
pages (only a process running a service that has some). Stop (SIGTERM/SIGINT): stop taking
work, let in-flight handlers finish (up to the graceful timeout), then close connections.

Readiness (/readyz): the process is ready once started, with its database and broker
reachable, unless every service it runs fails a check of its own. A service's own check (the
bounce mailbox) makes that service not ready (/readyz/SERVICE answers 503, /readyz reports
it) without taking the other services of the process out of service: in `run all` a bounce
mailbox that is down leaves the subscriptions pages ready; `run bounce_processor` alone is
not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping

import uvicorn
from asyncpg.pool import Pool
from faststream.rabbit import RabbitRouter
from faststream.rabbit.annotations import RabbitMessage

from mailroom_common.broker import declare_topology, make_broker
from mailroom_common.db import create_pool
from mailroom_common.delivery_limit_keeper import DeliveryLimitKeeper
from mailroom_common.events import JobRun, SettingsChanged
from mailroom_common.http import PathDispatcher, Readiness, health_app, keep_peer, not_found
from mailroom_common.intake import subscribe
from mailroom_common.jobs import Heartbeats, jobs_of_services
from mailroom_common.metrics import SERVICE_UP
from mailroom_common.migrate import migrate, require_current_schema
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
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._http: _HttpServer | None = None
        self._ops: _HttpServer | None = None
        self._pool: Pool | None = None
        self._policy: DeliveryLimitKeeper | None = None

    @staticmethod
    def _port(server: _HttpServer | None) -> int | None:
        if server is None or not server.servers:
            return None
        port: int = server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def http_port(self) -> int | None:
        """The public pages' port; None when no service of this process has pages."""
        return self._port(self._http)

    @property
    def ops_port(self) -> int | None:
        return self._port(self._ops)

    async def _serve(self, app: object, port: int, name: str) -> _HttpServer:
        config = uvicorn.Config(
            keep_peer(app, os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")),  # type: ignore[arg-type]
            proxy_headers=False,  # done by keep_peer, as uvicorn would
            host=self.settings.http_host,
            port=port,
            log_level="warning",
            log_config=None,  # uvicorn's lines go through our handler (JSON or text)
            lifespan="off",
        )
        server = _HttpServer(config)
        self._tasks.append(asyncio.create_task(server.serve(), name=name))
        while not server.started:  # uvicorn offers no event for this
            if self._tasks[-1].done():  # the port is taken: uvicorn gave up
                raise OSError(f"cannot listen on {self.settings.http_host}:{port} ({name})")
            await asyncio.sleep(0.01)
        return server

    async def start(self) -> None:
        settings = self.settings
        if settings.migrate_on_start:
            await migrate(settings.database_url)
        else:
            await require_current_schema(settings.database_url)
        self._pool = await create_pool(settings)
        broker = make_broker(settings)
        self.runtime = runtime = Runtime.build(settings, self._pool, broker)
        self.services = [factory(runtime) for factory in self.factories.values()]
        self._ops = await self._serve(
            health_app([s.name for s in self.services], self.readiness),
            settings.ops_port,
            "ops-http",
        )
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
        self._policy = DeliveryLimitKeeper.of(settings, runtime.topology)
        await self._policy.start()
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
        jobs = jobs_of_services(s.name for s in self.services)
        runtime.jobs.expose(jobs)
        heartbeats = Heartbeats(self._pool, runtime.jobs, runtime.instance_id, jobs)
        self._tasks.append(asyncio.create_task(heartbeats.loop(self.stopping), name="heartbeats"))
        public = [(s.http_paths, s.http_app) for s in self.services if s.http_app is not None]
        if public:
            self._http = await self._serve(
                PathDispatcher(not_found, public), settings.http_port, "http"
            )
        self.started = True
        log.info(
            "running %s (ops port %s, http port %s)",
            ", ".join(s.name for s in self.services),
            self.ops_port,
            self.http_port,
        )

    async def readiness(self) -> Readiness:
        assert self.runtime is not None
        # a stopping process takes no new traffic (its pages leave the Service's endpoints)
        state = "stopping" if self.stopping.is_set() else None if self.started else "starting"
        shared: dict[str, str | None] = {"process": state}
        try:
            await asyncio.wait_for(self.runtime.pool.fetchval("SELECT 1"), 2)
            shared["database"] = None
        except Exception as error:
            shared["database"] = f"unreachable: {error!r}"
        broker_ok = await self.runtime.broker.ping(timeout=2)
        shared["broker"] = None if broker_ok else "unreachable"
        own: dict[str, dict[str, str | None]] = {}
        for service in self.services:
            own[service.name] = {
                f"{service.name}:{check.__name__}": await check() for check in service.ready_checks
            }
        return Readiness.of(shared, own)

    async def stop(self) -> None:
        """Drain: no new work, in-flight handlers finish, then everything closes."""
        self.stopping.set()
        assert self.runtime is not None
        self.runtime.stopping.set()
        log.info("stopping: draining in-flight work")
        if self._policy is not None:
            await self._policy.stop()
        # periodic work (generation, schedules) and the services' own work (the bounce
        # mailbox) end their current unit while they can still publish; only then does the
        # broker stop
        periodic = [t for t in self._tasks if t.get_name() not in ("http", "ops-http")]
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
        for server in (self._http, self._ops):
            if server is not None:
                server.should_exit = True
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
