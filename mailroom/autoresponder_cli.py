"""`mailroom autoresponder create|list|enable|disable`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from mailroom_common.db import create_pool
from mailroom_common.migrate import require_current_schema
from mailroom_common.settings import Settings
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailroom import autoresponders
from mailroom.autoresponders import AutoresponderProblem, NewAutoresponder, TriggerKind
from mailroom.cli_help import JsonFlag

autoresponder_app = typer.Typer(
    help="Autoresponders: an email per contact and trigger event, after a delay.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # a message is one line, never folded


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=2)


def _with_pool(work: Any) -> Any:
    settings = Settings()

    async def run() -> Any:
        await require_current_schema(settings.database_url)
        pool = await create_pool(settings)
        try:
            return await work(pool, settings)
        finally:
            await pool.close()

    return asyncio.run(run())


@autoresponder_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Internal name (unique).")],
    subject: Annotated[str, typer.Option(help="Subject (a template).")],
    html: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="HTML template file.")],
    trigger: Annotated[
        str, typer.Option(help="contact.subscribed (with --list) or contact.event (--event-type).")
    ] = "contact.subscribed",
    list_name: Annotated[
        str | None, typer.Option("--list", help="Send when a contact subscribes to this list.")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option(help="Send on contact.event events of this type.")
    ] = None,
    delay: Annotated[str, typer.Option(help="Wait this long first: 0, 90s, 15m, 2h, 3d.")] = "0",
    text: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Text template; derived from the HTML if omitted."
        ),
    ] = None,
    from_email: Annotated[
        str | None, typer.Option("--from", help="From address (default: the SMTP account's).")
    ] = None,
    from_name: Annotated[str | None, typer.Option(help="From display name.")] = None,
    reply_to: Annotated[str | None, typer.Option(help="Reply-To address.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create an autoresponder (its templates are checked first)."""
    if trigger not in ("contact.subscribed", "contact.event"):
        raise _fail("--trigger is contact.subscribed or contact.event")
    try:
        new = NewAutoresponder(
            name=name,
            trigger=cast(TriggerKind, trigger),
            subject=subject,
            html_template=html.read_text(encoding="utf-8"),
            text_template=text.read_text(encoding="utf-8") if text else None,
            list_name=list_name,
            event_type=event_type,
            delay_seconds=autoresponders.parse_delay(delay),
            from_name=from_name,
            from_email=from_email,
            reply_to=reply_to,
            enabled=not disabled,
        )
        autoresponder_id = _with_pool(
            lambda pool, settings: autoresponders.create_autoresponder(pool, new, settings)
        )
    except AutoresponderProblem as problem:
        raise _fail(str(problem)) from problem
    if as_json:
        console.print_json(json.dumps({"id": autoresponder_id}))
    else:
        console.print(f"created autoresponder {autoresponder_id}")


@autoresponder_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """Every autoresponder, with its emails sent and waiting."""
    rows = _with_pool(lambda pool, _settings: autoresponders.list_autoresponders(pool))
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "name", "trigger", "delay (s)", "enabled", "sent", "waiting")
    for row in rows:
        trigger = f"{row['trigger']} {row['list'] or row['event_type']}"
        table.add_row(
            str(row["id"]),
            escape(row["name"]),
            escape(trigger),
            str(row["delay_seconds"]),
            "yes" if row["enabled"] else "no",
            str(row["sent"]),
            str(row["waiting"]),
        )
    console.print(table)


def _set_enabled(autoresponder_id: int, enabled: bool) -> None:
    found = _with_pool(
        lambda pool, _settings: autoresponders.set_enabled(pool, autoresponder_id, enabled)
    )
    if not found:
        raise _fail(f"no autoresponder {autoresponder_id}")
    console.print(f"autoresponder {autoresponder_id} {'enabled' if enabled else 'disabled'}")


@autoresponder_app.command("enable")
def enable(autoresponder_id: int) -> None:
    """Send again for new trigger events."""
    _set_enabled(autoresponder_id, True)


@autoresponder_app.command("disable")
def disable(autoresponder_id: int) -> None:
    """Stop: new events create nothing, and emails not yet sent are skipped."""
    _set_enabled(autoresponder_id, False)
