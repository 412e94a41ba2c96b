"""A campaign followed to its end on the terminal (`campaign launch --watch`, `mailroom demo`):
a progress bar while it runs, a summary table when it ends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mailroom_common.campaign_lifecycle import FINAL_STATUSES
from mailroom_common.db import create_pool
from mailroom_common.settings import Settings
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailroom import campaigns

console = Console()


def watch_campaign(
    settings: Settings, campaign_id: int, poll_seconds: float = 0.5
) -> dict[str, Any]:
    """A progress bar until the campaign ends; returns its final status (with `seconds`)."""

    async def watch() -> dict[str, Any]:
        pool = await create_pool(settings)
        started = time.monotonic()
        try:
            with Progress(
                TextColumn("[bold]campaign {task.fields[campaign]}[/bold] {task.fields[state]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task("send", total=None, campaign=campaign_id, state="")
                while True:
                    status = await campaigns.campaign_status(pool, campaign_id)
                    assert status is not None
                    total = status["items"] if status["generation_done"] else None
                    progress.update(
                        task, completed=status["done"], total=total, state=status["status"]
                    )
                    if status["status"] in FINAL_STATUSES:
                        status["seconds"] = time.monotonic() - started
                        return status
                    await asyncio.sleep(poll_seconds)
        finally:
            await pool.close()

    return asyncio.run(watch())


def print_summary(status: dict[str, Any]) -> None:
    counts = status["counts"]
    seconds = status.get("seconds") or 0.0
    sent = counts.get("sent", 0)
    table = Table(title=f"campaign {status['id']} {status['status']}")
    for column in ("sent", "failed", "suppressed", "skipped", "seconds", "messages/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(sent),
        str(counts.get("failed", 0)),
        str(counts.get("suppressed", 0)),
        str(counts.get("skipped", 0)),
        f"{seconds:.1f}",
        f"{sent / seconds:.0f}" if seconds else "-",
    )
    console.print(table)
    if status.get("failure_reason"):
        console.print(f"[red]failed:[/red] {escape(status['failure_reason'])}")
