"""What the Job Manager shows: each job's replicas, runs and queues (`mailroom jobs`, and
GET /admin/jobs of the config service: the same JSON).

Replicas, runs and errors come from `job_heartbeats`; queue depth, consumers and dead
letters from RabbitMQ, by a passive queue declare (it creates nothing, and needs no
management plugin). A broker that cannot be reached leaves the queue figures empty and says
why; the database is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from asyncpg.pool import Pool
from pydantic import BaseModel, Field

from mailroom_common.broker import Topology
from mailroom_common.jobs import JOBS, JOBS_BY_NAME, LIVE_SECONDS, Job, not_runnable_reason

# a live job that has not run for this long (or never) is idle: nothing to do
IDLE_AFTER = timedelta(minutes=5)
LIVE = timedelta(seconds=LIVE_SECONDS)
BROKER_SECONDS = 5.0

JobState = Literal["up", "idle", "down"]


class QueueFigures(BaseModel):
    queue: str
    messages: int | None = Field(description="Messages ready in the queue (its depth).")
    consumers: int | None
    dead_letters: int | None = Field(description="Messages in its dead-letter queue.")
    dead_letter_queue: str


class JobStatus(BaseModel):
    job: str = Field(description='The name for `mailroom jobs run`, e.g. "process-bounce-email".')
    title: str = Field(description="The job as the original product names it.")
    service: str
    state: JobState = Field(
        description="down: no replica seen for 30 s (or every one stopped); idle: alive, no"
        " run for 5 minutes (or never: nothing to do); up: alive and running."
    )
    replicas: int = Field(description="Instances (host:pid) seen in the last 30 s.")
    instances: list[str] = Field(description="Those instances.")
    last_seen: datetime | None
    last_run: datetime | None
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    runnable: bool = Field(description="`mailroom jobs run` has something to run for it.")
    queue_depth: int | None = Field(description="Messages waiting in its queues.")
    consumers: int | None = Field(description="Consumers of its queues.")
    dead_letters: int | None = Field(description="Messages in its queues' dead-letter queues.")
    queues: list[QueueFigures]


class JobsOverview(BaseModel):
    checked_at: datetime = Field(description="The database's clock when this was read.")
    broker_problem: str | None = Field(
        description="Why the queue figures are missing (the broker could not be reached)."
    )
    jobs: list[JobStatus]


async def queue_counts(
    connection: AbstractConnection, names: list[str]
) -> dict[str, tuple[int, int] | None]:
    """(messages, consumers) of each queue, None for a queue that does not exist."""
    counts: dict[str, tuple[int, int] | None] = {}
    channel: AbstractChannel | None = None
    try:
        for name in names:
            if channel is None or channel.is_closed:
                channel = await connection.channel(publisher_confirms=False)
            try:
                queue = await channel.declare_queue(name, passive=True, timeout=BROKER_SECONDS)
            except aio_pika.exceptions.ChannelClosed:  # 404: the server closed the channel
                counts[name] = None
                continue
            result = queue.declaration_result
            counts[name] = (result.message_count or 0, result.consumer_count or 0)
    finally:
        if channel is not None and not channel.is_closed:
            await channel.close()
    return counts


def _sum(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


@dataclass(frozen=True)
class Heartbeat:
    """One row of job_heartbeats: what one instance last said about one job."""

    job: str
    instance: str
    service: str
    last_seen: datetime
    last_run: datetime | None
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    stopped_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.stopped_at is None and self.last_seen > now - LIVE


def _latest(values: list[datetime | None]) -> datetime | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def job_status(
    job: Job, heartbeats: list[Heartbeat], now: datetime, queues: list[QueueFigures]
) -> JobStatus:
    live = sorted(h.instance for h in heartbeats if h.live(now))
    last_run = _latest([h.last_run for h in heartbeats])
    errors = [h for h in heartbeats if h.last_error_at is not None]
    last_error = max(errors, key=lambda h: h.last_error_at or now) if errors else None
    state: JobState
    if not live:
        state = "down"
    elif last_run is None or last_run < now - IDLE_AFTER:
        state = "idle"
    else:
        state = "up"
    return JobStatus(
        job=job.name,
        title=job.title,
        service=job.service,
        state=state,
        replicas=len(live),
        instances=live,
        last_seen=_latest([h.last_seen for h in heartbeats]),
        last_run=last_run,
        last_success=_latest([h.last_success for h in heartbeats]),
        last_error=last_error.last_error if last_error else None,
        last_error_at=last_error.last_error_at if last_error else None,
        runnable=job.on_demand is not None,
        queue_depth=_sum([q.messages for q in queues]),
        consumers=_sum([q.consumers for q in queues]),
        dead_letters=_sum([q.dead_letters for q in queues]),
        queues=queues,
    )


async def read_overview(
    pool: Pool, topology: Topology, connection: AbstractConnection | None
) -> JobsOverview:
    """Every job's status; `connection` None: the broker could not be reached."""
    now: datetime = await pool.fetchval("SELECT now()")
    heartbeats = [
        Heartbeat(**dict(row))
        for row in await pool.fetch(
            "SELECT job, instance, service, last_seen, last_run, last_success, last_error,"
            " last_error_at, stopped_at FROM job_heartbeats"
        )
    ]
    names = [n for job in JOBS for n in job.queue_names(topology)]
    counts: dict[str, tuple[int, int] | None] = {}
    problem = None if connection is not None else "the broker could not be reached"
    if connection is not None:
        try:
            counts = await queue_counts(connection, names + [f"{n}.dlq" for n in names])
        except Exception as error:
            problem = f"cannot read the queues: {error!r}"
    jobs = []
    for job in JOBS:
        queues = []
        for name in job.queue_names(topology):
            own, dead = counts.get(name), counts.get(f"{name}.dlq")
            queues.append(
                QueueFigures(
                    queue=name,
                    messages=own[0] if own else None,
                    consumers=own[1] if own else None,
                    dead_letters=dead[0] if dead else None,
                    dead_letter_queue=f"{name}.dlq",
                )
            )
        mine = [h for h in heartbeats if h.job == job.name]
        jobs.append(job_status(job, mine, now, queues))
    return JobsOverview(checked_at=now, broker_problem=problem, jobs=jobs)


async def read_overview_connecting(
    pool: Pool, topology: Topology, rabbitmq_url: str
) -> JobsOverview:
    """`read_overview` on a connection of its own (the CLI)."""
    try:
        connection = await aio_pika.connect(rabbitmq_url, timeout=BROKER_SECONDS)
    except Exception as error:
        overview = await read_overview(pool, topology, None)
        return overview.model_copy(
            update={"broker_problem": f"cannot reach the broker (MAILROOM_RABBITMQ_URL): {error}"}
        )
    async with connection:
        return await read_overview(pool, topology, connection)


class JobRunRefused(Exception):
    """`mailroom jobs run` cannot ask this job to run; str() says why."""

    def __init__(self, message: str, *, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown


class JobRunRequest(BaseModel):
    job: str
    replicas: int = Field(description="Live replicas, each of which runs the job now.")
    does: str = Field(description="What running it now does.")


async def run_request(pool: Pool, name: str) -> JobRunRequest:
    """What asking `name` to run would do, or JobRunRefused: unknown, nothing to run, or no
    live replica to hear it. The caller then publishes job.run."""
    job = JOBS_BY_NAME.get(name)
    if job is None:
        raise JobRunRefused(
            f"no job {name!r}; the jobs: {', '.join(j.name for j in JOBS)}", unknown=True
        )
    if job.on_demand is None:
        raise JobRunRefused(not_runnable_reason(job))
    replicas: int = await pool.fetchval(
        "SELECT count(*) FROM job_heartbeats WHERE job = $1 AND stopped_at IS NULL"
        " AND last_seen > now() - make_interval(secs => $2)",
        name,
        LIVE_SECONDS,
    )
    if not replicas:
        raise JobRunRefused(
            f"{name} is down (no replica of {job.service} seen for {LIVE_SECONDS:g} s):"
            " nothing would hear the request"
        )
    return JobRunRequest(job=name, replicas=replicas, does=job.on_demand)
