"""`mailroom dlq list|show|replay|purge`: the dead-letter queues, each message with its reason,
tries and age; replay sends them back where they came from (see dead_letters)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from aio_pika.abc import AbstractConnection
from mailroom_common.broker import Topology
from mailroom_common.settings import Settings
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailroom import dead_letters
from mailroom.cli_help import JsonFlag
from mailroom.dead_letters import UnknownQueue

QUEUE_HELP = "A dead-letter queue as `mailroom dlq list` names it (the prefix may be left off)."
T = TypeVar("T")

dlq_app = typer.Typer(
    help="Dead-letter queues: what consumers gave up on, why, and replaying it.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=code)


def _with_broker(work: Callable[[AbstractConnection, Topology, float], Awaitable[T]]) -> T:
    """`work(connection, topology, wait)`: every wait on the broker at most `wait` seconds
    (MAILROOM_BROKER_WAIT_SECONDS, as for the CLI's other commands)."""
    settings = Settings()
    topology = Topology.from_settings(settings)
    wait = settings.broker_wait_seconds

    async def run() -> T:
        connection = await dead_letters.connect(settings.rabbitmq_url, wait)
        async with connection:
            return await work(connection, topology, wait)

    try:
        return asyncio.run(run())
    except UnknownQueue as unknown:
        raise _fail(str(unknown)) from None


def _queue(name: str) -> str:
    settings = Settings()
    try:
        return dead_letters.resolve_queue(Topology.from_settings(settings), name)
    except UnknownQueue as unknown:
        raise _fail(str(unknown)) from None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


@dlq_app.command("list")
def list_queues(as_json: JsonFlag = False) -> None:
    """Every dead-letter queue with the messages in it."""
    depths = _with_broker(
        lambda connection, topology, _wait: dead_letters.depths(connection, topology)
    )
    if as_json:
        print(json.dumps([{"queue": q, "messages": n} for q, n in depths.items()], indent=2))
        return
    table = Table(title="dead-letter queues")
    table.add_column("queue")
    table.add_column("messages", justify="right")
    for queue, count in depths.items():
        table.add_row(queue, "not declared" if count is None else str(count))
    console.print(table)


@dlq_app.command("show")
def show(
    queue: Annotated[str, typer.Argument(help=QUEUE_HELP)],
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many messages.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The first messages of a DLQ: reason (x-mailroom-error), tries, age, where it came from.
    Nothing is removed (each message is taken and given back)."""
    name = _queue(queue)
    total, letters = _with_broker(
        lambda connection, topology, wait: dead_letters.show(
            connection, topology, name, limit, wait
        )
    )
    if as_json:
        document = {"queue": name, "messages": total, "shown": [d.as_json() for d in letters]}
        print(json.dumps(document, indent=2))
        return
    table = Table(title=f"{name}: {total} message(s), the first {len(letters)}", show_lines=True)
    for column in ("type", "reason", "tries", "age", "came by", "body"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        came_by = f"{letter.origin.exchange} {letter.origin.routing_key}" if letter.origin else "?"
        table.add_row(
            escape(letter.message_type or "?"),
            escape(letter.reason or "?"),
            "?" if letter.tries is None else str(letter.tries),
            _age(letter.age_seconds),
            escape(came_by),
            escape(letter.body[:160]),
        )
    console.print(table)


@dlq_app.command("replay")
def replay(
    queue: Annotated[str, typer.Argument(help=QUEUE_HELP)],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Replay at most this many (default: all).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Publish dead letters again to the exchange and routing key they came by (confirmed),
    removing each from the DLQ once the broker has it. Safe to repeat. Exit 1 when some
    could not be replayed (they stay in the DLQ)."""
    name = _queue(queue)
    with Progress(
        TextColumn(f"replaying {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("replay", total=None)
        report = _with_broker(
            lambda connection, topology, wait: dead_letters.replay(
                connection,
                topology,
                name,
                limit,
                wait,
                progress=lambda done, wanted: bar.update(task, completed=done, total=wanted),
            )
        )
    if as_json:
        print(
            json.dumps(
                {
                    "queue": report.queue,
                    "replayed": report.replayed,
                    "kept": [{"message": m, "why": why} for m, why in report.kept],
                    "left": report.left,
                },
                indent=2,
            )
        )
    else:
        console.print(f"replayed {report.replayed} message(s) from {name}; {report.left} left")
        for message, why in report.kept:
            errors.print(f"kept {escape(message)}: {escape(why)}", soft_wrap=True)
    if report.kept:
        raise typer.Exit(code=1)


@dlq_app.command("purge")
def purge(
    queue: Annotated[str, typer.Argument(help=QUEUE_HELP)],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every message of a DLQ (asks first unless --yes)."""
    name = _queue(queue)
    if not yes:
        depths = _with_broker(
            lambda connection, topology, _wait: dead_letters.depths(connection, topology)
        )
        typer.confirm(f"delete the {depths.get(name) or 0} message(s) of {name}?", abort=True)
    purged = _with_broker(lambda connection, _topology, _wait: dead_letters.purge(connection, name))
    console.print(f"purged {purged} message(s) from {name}")
