"""`mailroom jobs [--json]` and `mailroom jobs run NAME`: the Job Manager from a terminal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, TypeVar

import asyncpg
import typer
from asyncpg.pool import Pool
from mailroom_common.broker import Topology
from mailroom_common.db import create_pool
from mailroom_common.events import JobRun
from mailroom_common.job_overview import (
    JobRunRefused,
    JobRunRequest,
    JobsOverview,
    read_overview_connecting,
    run_request,
)
from mailroom_common.jobs import JOBS
from mailroom_common.settings import Settings
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailroom.cli_help import JsonFlag
from mailroom.publishing import publisher

STATE_STYLE = {"up": "green", "idle": "yellow", "down": "bold red"}
T = TypeVar("T")

jobs_app = typer.Typer(
    help="The jobs (the Job Manager): replicas, runs, queues, dead letters."
    " A job none of whose replicas was seen for 30 s is down.",
    invoke_without_command=True,
)
# not a terminal (a pipe, `kubectl exec` without -t: 80 columns by default): wide enough for
# the whole table, as `kubectl get -o wide` is
console = Console()
if not console.is_terminal:
    console = Console(width=max(console.width, 200))
errors = Console(stderr=True, soft_wrap=True)  # a message is one line, never folded


def _with_pool(settings: Settings, work: Callable[[Pool], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = await create_pool(settings)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except asyncpg.UndefinedTableError:
        errors.print(
            "[red]error:[/red] the database has no job_heartbeats table yet: run `mailroom migrate`"
        )
        raise typer.Exit(code=1) from None


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _figure(value: int | None) -> str:
    return "?" if value is None else str(value)


def print_overview(overview: JobsOverview) -> None:
    now = overview.checked_at
    table = Table(title="jobs")
    # a narrow terminal shortens the other cells, never a job's name (`jobs run NAME`) or state
    table.add_column("job", no_wrap=True)
    table.add_column("service")
    table.add_column("state", no_wrap=True)
    for column in ("replicas", "last run", "last success"):
        table.add_column(column)
    for column in ("queued", "consumers", "dead letters"):
        table.add_column(column, justify="right")
    table.add_column("last error", overflow="fold")
    for job in overview.jobs:
        style = STATE_STYLE[job.state]
        error = ""
        if job.last_error:
            error = f"{ago(job.last_error_at, now)}: {job.last_error[:200]}"
        table.add_row(
            job.job,
            job.service,
            f"[{style}]{job.state}[/{style}]",
            str(job.replicas),
            ago(job.last_run, now),
            ago(job.last_success, now),
            _figure(job.queue_depth) if job.queues else "-",
            _figure(job.consumers) if job.queues else "-",
            _figure(job.dead_letters) if job.queues else "-",
            escape(error),
        )
    console.print(table)
    if overview.broker_problem:
        errors.print(f"[yellow]warning:[/yellow] {escape(overview.broker_problem)}")


@jobs_app.callback()
def jobs(
    context: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """Each job with its service, live replicas, last run, last success, last error and its
    queues (depth, consumers, dead letters); state up, idle (alive, nothing to do) or down."""
    if context.invoked_subcommand is not None:
        return
    settings = Settings()
    topology = Topology.from_settings(settings)
    overview = _with_pool(
        settings, lambda pool: read_overview_connecting(pool, topology, settings.rabbitmq_url)
    )
    if as_json:
        print(overview.model_dump_json(indent=2))
        return
    print_overview(overview)


async def _publish_run(settings: Settings, job: str) -> None:
    async with publisher(settings, declare=False) as publish:
        await publish(JobRun(job=job))


@jobs_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(j.name for j in JOBS)}.")],
    as_json: JsonFlag = False,
) -> None:
    """Ask every live replica of a job to run it now (publishes job.run). Exit 1 when the job
    is down or has nothing to run on demand (its work only arrives as messages)."""
    settings = Settings()
    try:
        request: JobRunRequest = _with_pool(settings, lambda pool: run_request(pool, name))
    except JobRunRefused as refused:
        errors.print(f"[red]error:[/red] {escape(str(refused))}")
        raise typer.Exit(code=2 if refused.unknown else 1) from None
    asyncio.run(_publish_run(settings, name))
    if as_json:
        print(request.model_dump_json(indent=2))
        return
    console.print(
        f"job.run published: {request.replicas} replica(s) of {name} {escape(request.does)}"
    )
