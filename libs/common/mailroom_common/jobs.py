"""The jobs (the original product's six campaign jobs, and the CRM's contacts): what each
one is, and what a process records about the jobs it runs.

A job "runs" when its periodic task runs or its consumer handles a message. Each process
keeps the times of its runs in memory (`JobActivity`: a few assignments per run) and writes
one row per job to `job_heartbeats` every HEARTBEAT_SECONDS (`Heartbeats`), whatever the
traffic. A job none of whose instances was seen for LIVE_SECONDS is down; a process that
stops writes a last heartbeat with `stopped_at`, so its jobs show as down at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from asyncpg.pool import Pool

from mailroom_common.broker import Topology
from mailroom_common.metrics import JOB_LAST_ERROR, JOB_LAST_RUN, JOB_LAST_SUCCESS

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
LIVE_SECONDS = 30.0  # an instance not seen for this long is gone
# rows of instances gone for this long are deleted (the job's history keeps the newer ones)
FORGET_AFTER = "7 days"

GENERATE_CAMPAIGN_ITEMS = "generate-campaign-items"
PROCESS_CAMPAIGN_MESSAGES = "process-campaign-messages"
PROCESS_OUTBOUND_EMAIL = "process-outbound-email"
MARK_CAMPAIGNS_COMPLETED = "mark-campaigns-completed"
PROCESS_AUTORESPONDER_MESSAGES = "process-autoresponder-messages"
PROCESS_BOUNCE_EMAIL = "process-bounce-email"
SYNC_CRM_CONTACTS = "sync-crm-contacts"


@dataclass(frozen=True)
class Job:
    name: str
    service: str
    title: str  # as the original product names it
    # the work queues it consumes (properties of Topology)
    queues: tuple[str, ...]
    # what `mailroom jobs run` does; None: its work only arrives as messages
    on_demand: str | None

    def queue_names(self, topology: Topology) -> list[str]:
        return [getattr(topology, queue).name for queue in self.queues]


JOBS: tuple[Job, ...] = (
    Job(
        GENERATE_CAMPAIGN_ITEMS,
        "item_generator",
        "Generate campaign items",
        ("campaign_commands",),
        "looks for due campaigns now and republishes item pages not yet published",
    ),
    Job(
        PROCESS_CAMPAIGN_MESSAGES,
        "message_processor",
        "Process campaign messages",
        ("item_pages",),
        None,
    ),
    Job(
        PROCESS_OUTBOUND_EMAIL,
        "outbound_sender",
        "Process Outbound Email Job",
        ("outbound_batches", "outbound_priority"),
        None,
    ),
    Job(
        MARK_CAMPAIGNS_COMPLETED,
        "completion",
        "Mark campaigns as completed",
        ("completion_events",),
        "sweeps every sending campaign for completion now",
    ),
    Job(
        PROCESS_AUTORESPONDER_MESSAGES,
        "autoresponder",
        "Process autoresponder messages",
        ("autoresponder_triggers",),
        "sends the autoresponder items that are due now",
    ),
    Job(
        PROCESS_BOUNCE_EMAIL,
        "bounce_processor",
        "Process Bounce Email Job",
        (),
        "reconnects to the bounce mailbox and reads it now",
    ),
    Job(
        SYNC_CRM_CONTACTS,
        "subscriptions",
        "Sync contacts from the CRM",
        ("crm_contacts",),
        "announces the new memberships of contact batches left unannounced",
    ),
)
JOBS_BY_NAME = {job.name: job for job in JOBS}


def not_runnable_reason(job: Job) -> str:
    """Why `mailroom jobs run` cannot run a job whose work only arrives as messages."""
    if job.name == PROCESS_CAMPAIGN_MESSAGES:
        return (
            f"{job.name} has no sweep: it renders the pages it is sent (items.page). Pages"
            f" never published are republished by `mailroom jobs run {GENERATE_CAMPAIGN_ITEMS}`"
        )
    return (
        f"{job.name} has no sweep: it delivers the batches it is sent (outbound.batch);"
        " temporary failures come back by themselves from the retry queues"
    )


def jobs_of_services(services: Iterable[str]) -> list[Job]:
    names = set(services)
    return [job for job in JOBS if job.service in names]


def job_of_queue(topology: Topology, queue: str) -> Job | None:
    """The job whose consumer takes `queue`, if any."""
    for job in JOBS:
        if queue in job.queue_names(topology):
            return job
    return None


@dataclass
class JobState:
    last_run: float | None = None  # unix seconds
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


class JobActivity:
    """What this process's jobs did, in memory until the next heartbeat."""

    def __init__(self) -> None:
        self._states: dict[str, JobState] = {}

    def _state(self, job: str) -> JobState:
        state = self._states.get(job)
        if state is None:
            state = self._states[job] = JobState()
        return state

    def expose(self, jobs: Iterable[Job]) -> None:
        """Create the metric series of the jobs this process runs (0 until they run): a job
        with nothing to do is present all the same (MailroomJobMissing)."""
        for job in jobs:
            for gauge in (JOB_LAST_RUN, JOB_LAST_SUCCESS, JOB_LAST_ERROR):
                gauge.labels(job.name)

    def ran(self, job: str) -> None:
        now = time.time()
        self._state(job).last_run = now
        JOB_LAST_RUN.labels(job).set(now)

    def succeeded(self, job: str) -> None:
        now = time.time()
        self._state(job).last_success = now
        JOB_LAST_SUCCESS.labels(job).set(now)

    def failed(self, job: str, error: str) -> None:
        state = self._state(job)
        state.last_error = error[:1000]
        state.last_error_at = time.time()
        JOB_LAST_ERROR.labels(job).set(state.last_error_at)

    def state(self, job: str) -> JobState:
        return self._state(job)

    def tracked(
        self, job: str, work: Callable[..., Awaitable[None]]
    ) -> Callable[..., Awaitable[None]]:
        """`work`, recording each call as a run of `job` (its success or its error)."""

        async def run(*args: object) -> None:
            self.ran(job)
            try:
                await work(*args)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.failed(job, f"{type(error).__name__}: {error}")
                raise
            self.succeeded(job)

        return run


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


UPSERT = """
INSERT INTO job_heartbeats
    (job, instance, service, last_seen, last_run, last_success, last_error, last_error_at,
     stopped_at)
VALUES ($1, $2, $3, now(), $4, $5, $6, $7, CASE WHEN $8 THEN now() END)
ON CONFLICT (job, instance) DO UPDATE SET
    service = excluded.service, last_seen = excluded.last_seen, last_run = excluded.last_run,
    last_success = excluded.last_success, last_error = excluded.last_error,
    last_error_at = excluded.last_error_at, stopped_at = excluded.stopped_at
"""


class Heartbeats:
    """Writes this process's row of each of its jobs: one statement per interval."""

    def __init__(
        self,
        pool: Pool,
        activity: JobActivity,
        instance: str,
        jobs: list[Job],
        interval_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.pool = pool
        self.activity = activity
        self.instance = instance
        self.jobs = jobs
        self.interval_seconds = interval_seconds

    async def beat(self, *, stopped: bool = False) -> None:
        rows = []
        for job in self.jobs:
            state = self.activity.state(job.name)
            rows.append(
                (
                    job.name,
                    self.instance,
                    job.service,
                    _moment(state.last_run),
                    _moment(state.last_success),
                    state.last_error,
                    _moment(state.last_error_at),
                    stopped,
                )
            )
        async with self.pool.acquire() as conn:
            await conn.executemany(UPSERT, rows)

    async def forget_gone_instances(self) -> None:
        await self.pool.execute(
            f"DELETE FROM job_heartbeats WHERE last_seen < now() - interval '{FORGET_AFTER}'"
        )

    async def loop(self, stopping: asyncio.Event) -> None:
        """Beat at once, then every interval, until stopping (a last beat then)."""
        if not self.jobs:
            return
        with contextlib.suppress(Exception):
            await self.forget_gone_instances()
        while True:
            stopped = stopping.is_set()
            try:
                await self.beat(stopped=stopped)
            except Exception as error:
                log.warning("could not record the jobs' heartbeat: %r", error)
            if stopped:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval_seconds)
