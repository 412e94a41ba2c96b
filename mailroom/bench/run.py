"""One benchmark run, start to end: SMTP sink, database, audience (CLI import), campaign,
the bare SMTP loop, the services, the campaign watched to its end, the figures, clean-up."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aio_pika.exceptions import AMQPError
from mailroom_common.campaign_lifecycle import FINAL_STATUSES
from mailroom_common.db import create_pool
from mailroom_common.events import CampaignLaunch
from mailroom_common.rendering.benchmark import measure
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mailroom import campaigns
from mailroom.bench import figures
from mailroom.bench.audience import LIST_NAME, import_audience, write_audience
from mailroom.bench.bare_smtp import BareFigures, send_bare
from mailroom.bench.content import campaign_content, paragraphs_for, render_messages
from mailroom.bench.database import (
    CampaignWatcher,
    backend_pids,
    campaign_timings,
    database_stats,
)
from mailroom.bench.installation import BenchInstallation
from mailroom.bench.options import BenchOptions
from mailroom.bench.processes import ServiceProcesses
from mailroom.demo import check_services
from mailroom.local_processes import cpu_seconds, free_port
from mailroom.smtp_sink import sink_name, start_smtp_sink

SAMPLE_MESSAGES = 50  # distinct rendered messages the bare loop takes in turn
STATS_FLUSH_SECONDS = 1.5  # PostgreSQL publishes a backend's counters at most once a second


class BenchFailed(RuntimeError):
    pass


async def _campaign(installation: BenchInstallation, paragraphs: int) -> int:
    pool = await create_pool(installation.settings)
    try:
        content = campaign_content(f"Bench {installation.tag}", LIST_NAME, paragraphs)
        return await campaigns.create_campaign(pool, content, installation.settings)
    finally:
        await pool.close()


async def _bare_loop(
    installation: BenchInstallation, campaign_id: int, sink_port: int, options: BenchOptions
) -> tuple[BareFigures, int]:
    """The bare loop's figures and the size of the campaign's messages (bytes, mean)."""
    pool = await create_pool(installation.settings)
    try:
        campaign = await pool.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
        contacts = await pool.fetch(
            "SELECT id AS contact_id, email, first_name, last_name, attributes FROM contacts"
            " ORDER BY id LIMIT $1",
            options.bare_sample(),
        )
    finally:
        await pool.close()
    assert campaign is not None
    messages = render_messages(
        installation.settings, dict(campaign), [dict(c) for c in contacts[:SAMPLE_MESSAGES]]
    )
    size = round(sum(len(m.message) for m in messages) / len(messages))
    bare = await send_bare(
        "127.0.0.1", sink_port, messages, [c["email"] for c in contacts], options.bare_connections
    )
    return bare, size


def _check_alive(services: ServiceProcesses) -> None:
    for service in services.dead():
        code = service.process.returncode
        raise BenchFailed(f"{service.label} exited ({code}); see {service.log}")


def _wait_idle(installation: BenchInstallation, services: ServiceProcesses, limit: float) -> None:
    """Until the work queues are empty and the services have stopped taking messages (the
    import's contact.subscribed events handled by the autoresponder)."""
    deadline = time.monotonic() + limit
    consumed = -1.0
    while True:
        waiting = any(asyncio.run(installation.queue_depths()).values())
        now = sum(services.broker_messages().values())
        if not waiting and now == consumed:
            break
        _check_alive(services)
        if time.monotonic() > deadline:
            raise BenchFailed(f"the queues did not empty in {limit:.0f} s before the launch")
        consumed = now
        time.sleep(1)
    time.sleep(STATS_FLUSH_SECONDS)


def _backends_cpu(installation: BenchInstallation) -> dict[int, float]:
    """CPU seconds of each server process of the run's database that this machine can see
    (none where PostgreSQL runs elsewhere, e.g. in a container)."""
    pids = asyncio.run(backend_pids(installation.admin_url, installation.database))
    found = {pid: cpu_seconds(pid) for pid in pids}
    return {pid: cpu for pid, cpu in found.items() if cpu is not None}


async def _watch(
    installation: BenchInstallation,
    services: ServiceProcesses,
    campaign_id: int,
    recipients: int,
    console: Console,
    rates: list[float],
) -> int:
    """Until the campaign ends; the watcher's own transactions on the run's database. The
    shared send rate as the senders saw it, every second, goes into `rates`."""
    async with CampaignWatcher(installation.settings.database_url) as watcher:
        with Progress(
            SpinnerColumn(),
            TextColumn("campaign {task.fields[state]}: {task.fields[sent]:,} of {task.total:,}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("send", total=recipients, state="launched", sent=0)
            while True:
                state = await watcher.status(campaign_id)
                sent = int(services.counter("mailroom_deliveries_total", status="sent"))
                progress.update(task, state=state, sent=sent)
                seen = services.gauges("mailroom_send_rate_per_second")
                if seen and state == "sending":
                    rates.append(sum(seen) / len(seen))
                if state in FINAL_STATUSES:
                    return watcher.transactions
                _check_alive(services)
                await asyncio.sleep(1)


def _throttle_note(options: BenchOptions) -> str:
    if not options.smtp_throttle_above:
        return ""
    return (
        f" (421 4.7.0 above {options.smtp_throttle_above} msg/s; the account's"
        f" messages_per_second {options.account_rate:g})"
    )


def _throttle_figures(
    options: BenchOptions, services: ServiceProcesses, rates: list[float]
) -> dict[str, Any]:
    """With a throttling relay: the rate the senders found (the shared rate, mean over the
    sending and at its end) and the deferrals (throttling replies) and retries."""
    if not options.smtp_throttle_above:
        return {}
    later = rates[len(rates) // 2 :]  # the second half: after the first decreases
    return {
        "smtp_throttle_above": options.smtp_throttle_above,
        "account_messages_per_second": options.account_rate,
        "rate_found_per_second": round(sum(later) / len(later), 1) if later else None,
        "rate_at_end_per_second": round(rates[-1], 1) if rates else None,
        "throttle_deferrals": int(services.counter("mailroom_throttle_events_total")),
        "retries": int(services.counter("mailroom_deliveries_total", status="retry")),
    }


def run_bench(options: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    problems = options.problems()
    if problems:
        raise BenchFailed("; ".join(problems))
    installation = BenchInstallation()
    if not check_services(installation.settings):
        raise BenchFailed("PostgreSQL or RabbitMQ cannot be reached")
    workdir = Path(tempfile.mkdtemp(prefix=f"mailroom-bench-{installation.tag}-"))
    render = measure(2000)
    sink_port = free_port()
    connections = options.bare_connections + options.pool * options.sender_replicas + 16
    sink = start_smtp_sink(sink_port, options.smtp_latency, connections)
    # a throttling relay for the account; the bare loop keeps the plain sink (it would stop
    # at the first 421)
    relay, relay_port = sink, sink_port
    if options.smtp_throttle_above:
        relay_port = free_port()
        relay = start_smtp_sink(
            relay_port, options.smtp_latency, connections, options.smtp_throttle_above
        )
    console.print(
        f"run {installation.tag}: database {installation.database}, queues"
        f" {installation.settings.queue_prefix}.*, SMTP sink {sink_name(relay)} on"
        f" 127.0.0.1:{relay_port}{_throttle_note(options)}, logs in {workdir}"
    )
    finished = False
    try:
        asyncio.run(
            installation.create(relay_port, options.pool, options.account_rate, dkim=options.dkim)
        )
        paragraphs = paragraphs_for(installation.settings, options.size)
        csv_path = workdir / "audience.csv"
        write_audience(csv_path, options.recipients)
        console.print(f"importing {options.recipients:,} contacts (mailroom contacts import)")
        imported = import_audience(
            csv_path,
            options.recipients,
            installation.service_env(),
            installation.settings.database_url,
            workdir / "import.log",
        )
        campaign_id = asyncio.run(_campaign(installation, paragraphs))
        console.print(
            f"bare aiosmtplib loop: {options.bare_sample():,} messages,"
            f" {options.bare_connections} connections"
        )
        bare, message_bytes = asyncio.run(_bare_loop(installation, campaign_id, sink_port, options))
        with ServiceProcesses(installation.service_env(), workdir) as services:
            console.print(f"starting the services ({options.processes})")
            services.start(options.processes, options.sender_replicas)
            _wait_idle(installation, services, limit=600)
            stats_before = asyncio.run(
                database_stats(installation.admin_url, installation.database)
            )
            cpu_before = services.cpu()
            backends_before = _backends_cpu(installation)
            broker_before = services.broker_messages()
            asyncio.run(
                campaigns.send_command(
                    installation.settings, CampaignLaunch(campaign_id=campaign_id)
                )
            )
            rates: list[float] = []
            watcher_transactions = asyncio.run(
                _watch(installation, services, campaign_id, options.recipients, console, rates)
            )
            throttling = _throttle_figures(options, services, rates)
            cpu_after = services.cpu()
            backends_after = _backends_cpu(installation)
            rss = services.peak_rss()
            broker_after = services.broker_messages()
            services.stop()
        time.sleep(STATS_FLUSH_SECONDS)
        stats_after = asyncio.run(database_stats(installation.admin_url, installation.database))
        timings = asyncio.run(campaign_timings(installation.settings.database_url, campaign_id))
        finished = True
        return figures.report(
            options,
            run={
                "run": installation.tag,
                "smtp_server": sink_name(relay),
                "message_bytes": message_bytes,
                **throttling,
            },
            imported=imported,
            timings=timings,
            bare=bare,
            services=figures.service_figures(cpu_before, cpu_after, rss, timings.sent),
            database=figures.database_figures(
                stats_before, stats_after, watcher_transactions, timings.sent
            )
            | figures.backend_figures(backends_before, backends_after, timings.sent),
            broker=figures.broker_figures(
                broker_before,
                broker_after,
                options.recipients,
                installation.settings.queue_prefix,
            ),
            render=render,
        )
    finally:
        for server in {sink, relay}:
            server.kill()
            server.wait()
        if options.keep:
            console.print(f"kept database {installation.database} and logs in {workdir}")
        else:
            try:
                asyncio.run(installation.drop())
            except (OSError, TimeoutError, AMQPError) as error:
                console.print(
                    f"[yellow]could not delete the queues {installation.settings.queue_prefix}.*:"
                    f" {error!r}[/yellow]"
                )
            if finished:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                console.print(f"the logs of the failed run are in {workdir}")
