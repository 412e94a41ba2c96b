"""The `mailroom` command: run services, manage contacts and campaigns, demo."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Coroutine
from datetime import datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import httpx
import typer
from mailroom_common import archive as archiving
from mailroom_common.broker import Topology
from mailroom_common.broker_policy import BrokerPolicyError, delivery_limit_policy_name
from mailroom_common.campaign_lifecycle import CANCELLABLE_STATUSES, PAUSABLE_STATUSES
from mailroom_common.db import MissingDatabase, create_pool
from mailroom_common.delivery_limit_keeper import put_for_migrate
from mailroom_common.events import CampaignCancel, CampaignLaunch, CampaignPause, CampaignResume
from mailroom_common.logs import configure_logging
from mailroom_common.migrate import SchemaOutdated, require_current_schema
from mailroom_common.migrate import migrate as apply_migrations
from mailroom_common.service import StartRefused
from mailroom_common.settings import Settings
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailroom import campaigns
from mailroom.autoresponder_cli import autoresponder_app
from mailroom.campaign_watch import print_summary, watch_campaign
from mailroom.cli_help import JsonFlag
from mailroom.contacts_import import ImportReport, import_contacts
from mailroom.contacts_subscribe import subscribe_contact
from mailroom.dlq_cli import dlq_app
from mailroom.import_progress import ImportBars
from mailroom.jobs_cli import jobs_app
from mailroom.unreachable import DATABASE, describe, unreachable_setting

app = typer.Typer(
    help="Mailroom: email campaigns on RabbitMQ and PostgreSQL.", no_args_is_help=True
)


def _print_version(asked: bool) -> None:
    if asked:
        print(f"mailroom {package_version('mailroom')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    """Mailroom: email campaigns on RabbitMQ and PostgreSQL. The database and the broker are
    MAILROOM_DATABASE_URL and MAILROOM_RABBITMQ_URL."""


contacts_app = typer.Typer(help="Contacts and lists.", no_args_is_help=True)
campaign_app = typer.Typer(help="Campaigns.", no_args_is_help=True)
settings_app = typer.Typer(
    help="Runtime settings (SMTP account, marketing footers, bounce mailbox) through the config"
    " service's admin API (MAILROOM_CONFIG_URL, MAILROOM_ADMIN_TOKEN).",
    no_args_is_help=True,
)
app.add_typer(contacts_app, name="contacts")
app.add_typer(campaign_app, name="campaign")
app.add_typer(settings_app, name="settings")
app.add_typer(autoresponder_app, name="autoresponder")
bounce_app = typer.Typer(help="The bounce mailbox's messages.", no_args_is_help=True)
app.add_typer(bounce_app, name="bounce")
app.add_typer(jobs_app, name="jobs")
app.add_typer(dlq_app, name="dlq")

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)  # one line
    return typer.Exit(code=code)


async def _with_pool(settings: Settings, work: Any) -> Any:
    await require_current_schema(settings.database_url)
    pool = await create_pool(settings)
    try:
        return await work(pool)
    finally:
        await pool.close()


@app.command()
def run(
    services: Annotated[list[str], typer.Argument(help="'all', or service names.")],
) -> None:
    """Run services in this process until SIGTERM (drains in-flight work first)."""
    # imported here: the other commands start without every service's modules
    from mailroom_common.runner import ServiceProcess

    from mailroom.services import SERVICES, service_factory

    names = list(SERVICES) if services == ["all"] else services
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise _fail(f"unknown service(s) {', '.join(unknown)}; known: all, {', '.join(SERVICES)}")
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    settings.warn_about_keys()
    process = ServiceProcess(settings, {n: service_factory(n) for n in names})
    try:
        import uvloop

        uvloop.run(process.run_until_signalled())
    except (StartRefused, MissingDatabase, SchemaOutdated) as error:
        raise _fail(f"refusing to start: {error}") from None
    except OSError as error:
        if unreachable_setting(error) is not None:
            raise  # main() names the setting of the server that cannot be reached
        raise _fail(f"cannot start: {error}") from error


@app.command()
def migrate(
    create_database: Annotated[
        bool,
        typer.Option(
            "--create-database",
            help="Create the database named by MAILROOM_DATABASE_URL when it does not exist.",
        ),
    ] = False,
    skip_broker_policy: Annotated[
        bool,
        typer.Option(
            "--skip-broker-policy",
            help="Do not put the delivery-limit policy on RabbitMQ (the services try at start).",
        ),
    ] = False,
) -> None:
    """Apply pending migrations (safe to run concurrently), then put the delivery-limit policy
    on the work queues through RabbitMQ's management API: a deployment's one explicit step,
    where a wrong MAILROOM_RABBITMQ_MANAGEMENT_URL fails (the services only warn and keep
    trying). Services do not migrate unless MAILROOM_MIGRATE_ON_START=true; they refuse to
    start on an older schema."""
    settings = Settings()
    configure_logging(settings.log_level, "text")
    applied = _run(apply_migrations(settings.database_url, create_database=create_database))
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    if skip_broker_policy:
        return
    topology = Topology.from_settings(settings)
    try:
        _run(put_for_migrate(settings, topology))
    except BrokerPolicyError as error:
        raise _fail(
            f"cannot put the delivery-limit policy {delivery_limit_policy_name(topology)}:"
            f" {error} (the migrations are applied; the services start without the policy and"
            " keep trying; --skip-broker-policy skips this step)"
        ) from None
    console.print(
        f"delivery-limit policy {delivery_limit_policy_name(topology)}:"
        f" {topology.delivery_limit} on the work queues"
    )


@contacts_app.command("subscribe")
def contacts_subscribe(
    email: Annotated[str, typer.Argument(help="The address to subscribe.")],
    list_name: Annotated[str, typer.Option("--list", help="The list.")],
    first_name: Annotated[str, typer.Option(help="First name of a new contact.")] = "",
    last_name: Annotated[str, typer.Option(help="Last name of a new contact.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Subscribe one contact to a list (announced as contact.subscribed: autoresponders)."""
    settings = Settings()
    try:
        result = _run(
            _with_pool(
                settings,
                lambda pool: subscribe_contact(
                    pool, settings, email, list_name, first_name, last_name
                ),
            )
        )
    except ValueError as error:
        raise _fail(str(error)) from error
    if as_json:
        console.print_json(json.dumps(result.__dict__))
    elif result.newly_subscribed:
        console.print(f"subscribed contact {result.contact_id} to {list_name}")
    else:
        console.print(f"contact {result.contact_id} was subscribed to {list_name} already")


@contacts_app.command("import")
def contacts_import(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV with an 'email' column.")
    ],
    list_name: Annotated[str, typer.Option("--list", help="The list to subscribe them to.")],
    as_json: JsonFlag = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Validate the file and say what would change; write nothing."
        ),
    ] = False,
) -> None:
    """Import contacts from CSV: good rows are imported, bad rows reported by line number."""
    settings = Settings()

    async def work(pool: asyncpg.Pool) -> ImportReport:
        with ImportBars(errors) as bars:
            return await import_contacts(
                pool, file, list_name, settings, dry_run=dry_run, progress=bars
            )

    try:
        report = _run(_with_pool(settings, work))
    except ValueError as error:  # the file is refused as a whole (ImportRefused)
        raise _fail(f"{error}; nothing was imported") from error
    except asyncpg.PostgresError as error:
        raise _fail(f"the database refused the import, nothing was imported: {error}") from error
    except OSError as error:  # the file cannot be read, or the database cannot be reached
        if unreachable_setting(error) is not None:
            raise  # main() names the setting of the server that cannot be reached
        raise _fail(f"cannot import {file}: {error}") from error
    if as_json:
        console.print_json(json.dumps(report.__dict__))
    elif dry_run:
        console.print(
            f"dry run: would import {report.imported} contacts into list"
            f" [bold]{list_name}[/bold] ({report.created} new, {report.updated} updated,"
            f" {report.subscribed} newly subscribed, {report.kept_unsubscribed} kept"
            " unsubscribed); nothing was written"
        )
    else:
        console.print(
            f"imported {report.imported} contacts into list [bold]{list_name}[/bold]"
            f" ({report.created} new, {report.updated} updated,"
            f" {report.kept_unsubscribed} kept unsubscribed)"
        )
    if as_json:
        return
    for line, reason in report.bad_rows:
        # one line per bad row, as written (no markup: a value may hold "[...]")
        errors.print(f"{file}:{line}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if report.bad_rows:
        errors.print(f"{len(report.bad_rows)} bad row(s) skipped", soft_wrap=True)


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Option(help="Internal name.")],
    subject: Annotated[str, typer.Option(help="Subject (a template).")],
    from_email: Annotated[str, typer.Option("--from", help="From address.")],
    html: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="HTML template file.")],
    lists: Annotated[list[str], typer.Option("--list", help="Target list (repeatable).")],
    text: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Text template; derived from the HTML if omitted."
        ),
    ] = None,
    from_name: Annotated[str, typer.Option(help="From display name.")] = "",
    reply_to: Annotated[str | None, typer.Option(help="Reply-To address.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Run again with the same key and content: the campaign made the first time.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a draft campaign (templates are checked now, not at send time), with the same
    checks as the campaign.create command."""
    settings = Settings()
    new = campaigns.NewCampaign(
        name=name,
        subject=subject,
        from_email=from_email,
        from_name=from_name,
        html_template=html.read_text(encoding="utf-8"),
        text_template=text.read_text(encoding="utf-8") if text else None,
        lists=lists,
        reply_to=reply_to,
    )
    try:
        created: campaigns.CreatedCampaign = _run(
            _with_pool(
                settings,
                lambda pool: campaigns.create_draft(
                    pool, settings, new, idempotency_key=idempotency_key
                ),
            )
        )
    except campaigns.CampaignProblem as problem:
        raise _fail(str(problem)) from problem
    if as_json:
        console.print_json(
            json.dumps({"campaign_id": created.campaign_id, "replayed": created.replayed})
        )
    elif created.replayed:
        console.print(f"campaign {created.campaign_id} was created before with this key")
    else:
        console.print(f"created campaign {created.campaign_id}")


def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise _fail(f"--at {value!r}: use ISO 8601, e.g. 2026-12-01T09:00:00+01:00") from error
    return moment if moment.tzinfo else moment.astimezone()  # naive: this machine's local time


@campaign_app.command("launch")
def campaign_launch(
    campaign_id: int,
    at: Annotated[str | None, typer.Option("--at", help="Send at (ISO 8601); default now.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Show progress until it ends.")] = False,
) -> None:
    """Publish campaign.launch for a draft campaign."""
    settings = Settings()
    send_at = _parse_time(at) if at else None
    status = _run(_with_pool(settings, lambda pool: campaigns.campaign_status(pool, campaign_id)))
    if status is None:
        raise _fail(f"no campaign {campaign_id}: nothing was published", code=1)
    if status["status"] != "draft":
        raise _fail(f"campaign {campaign_id} is {status['status']}: only a draft can be launched")
    _run(campaigns.send_command(settings, CampaignLaunch(campaign_id=campaign_id, send_at=send_at)))
    console.print(f"launch of campaign {campaign_id} published")
    if watch:
        final = watch_campaign(settings, campaign_id)
        print_summary(final)
        if final["status"] != "completed":
            raise typer.Exit(code=1)


def _command(campaign_id: int, command: Any, applies_to: tuple[str, ...], done: str) -> None:
    """Publish a command for a campaign that exists, in a status the command changes (checked
    first: an unknown id would only end in the dead-letter queue, a campaign in another
    status would be left as it is)."""
    settings = Settings()
    status = _run(_with_pool(settings, lambda pool: campaigns.campaign_state(pool, campaign_id)))
    if status is None:
        raise _fail(f"no campaign {campaign_id}: nothing was published", code=1)
    if status not in applies_to:
        raise _fail(
            f"campaign {campaign_id} is {status}: only a campaign that is"
            f" {' or '.join(applies_to)} can be {done}; nothing was published",
            code=1,
        )
    _run(campaigns.send_command(settings, command))
    console.print(f"{command.routing_key} for campaign {campaign_id} published")


@campaign_app.command("list")
def campaign_list(
    limit: Annotated[int, typer.Option(min=1, help="The newest this many campaigns.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Campaigns, newest first: status and progress (items done of all, by status)."""
    listed = _run(_with_pool(Settings(), lambda pool: campaigns.list_campaigns(pool, limit)))
    if as_json:
        console.print_json(json.dumps(listed))
        return
    table = Table(title="campaigns")
    table.add_column("id", justify="right")
    table.add_column("name")
    table.add_column("status")
    for column in ("items", "done", "sent", "failed", "open"):
        table.add_column(column, justify="right")
    for campaign in listed:
        counts = campaign["counts"]
        table.add_row(
            str(campaign["id"]),
            escape(campaign["name"]),
            campaign["status"],
            str(campaign["items"]),
            str(campaign["done"]),
            str(counts.get("sent", 0)),
            str(counts.get("failed", 0)),
            str(campaign["open"]),
        )
    console.print(table)


@campaign_app.command("pause")
def campaign_pause(campaign_id: int) -> None:
    """Pause generation and sending (resume picks up where it stopped)."""
    _command(campaign_id, CampaignPause(campaign_id=campaign_id), PAUSABLE_STATUSES, "paused")


@campaign_app.command("resume")
def campaign_resume(campaign_id: int) -> None:
    """Resume a paused campaign."""
    _command(campaign_id, CampaignResume(campaign_id=campaign_id), ("paused",), "resumed")


@campaign_app.command("cancel")
def campaign_cancel(campaign_id: int) -> None:
    """Cancel: unsent items are skipped."""
    _command(
        campaign_id, CampaignCancel(campaign_id=campaign_id), CANCELLABLE_STATUSES, "cancelled"
    )


@campaign_app.command("status")
def campaign_status(campaign_id: int, as_json: JsonFlag = False) -> None:
    """A campaign's state and its items by status."""
    status = _run(_with_pool(Settings(), lambda pool: campaigns.campaign_status(pool, campaign_id)))
    if status is None:
        raise _fail(f"no campaign {campaign_id}")
    if as_json:
        console.print_json(json.dumps(status, default=str))
        return
    table = Table(title=f"campaign {campaign_id}: {status['name']} — {status['status']}")
    table.add_column("items")
    table.add_column("count", justify="right")
    for key, value in sorted(status["counts"].items()):
        table.add_row(key, str(value))
    table.add_row("total", str(status["items"]))
    console.print(table)
    if status["archived_at"]:
        console.print(f"items archived at {status['archived_at']}")
    if status["failure_reason"]:
        console.print(f"[red]failed:[/red] {escape(status['failure_reason'])}")
    if status["pause_reason"]:
        console.print(f"[yellow]paused:[/yellow] {escape(status['pause_reason'])}")
    if status["send_rate"]:
        console.print(_send_rate_line(status["send_rate"]))


def _send_rate_line(rate: dict[str, Any]) -> str:
    line = (
        f"send rate (the SMTP account's, shared): {rate['rate_per_second']:g}/s"
        f" of {rate['ceiling_per_second']:g}/s"
    )
    if rate["reason"] != "ceiling":
        ago = rate["seconds_since_decrease"]
        line += f", {escape(rate['reason'])} ({ago:g} s ago)" if ago is not None else ""
    if rate["throttle_events"]:
        line += f"; {rate['throttle_events']} throttling replies so far"
    return line


@campaign_app.command("archive")
def campaign_archive(
    campaign_id: int,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Archive items still in flight as they are (their results are lost)."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Move a finished campaign's items to the archive: its counts stay, late bounces still
    match, and campaign_items holds only today's items. Safe to interrupt and run again."""
    settings = Settings()

    async def archive(pool: asyncpg.Pool) -> archiving.ArchiveResult:
        with Progress(
            TextColumn(f"archiving campaign {campaign_id}"),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("archive", total=None)
            return await archiving.archive_campaign(
                pool,
                campaign_id,
                settings.archive_chunk_items,
                force=force,
                progress=lambda moved: progress.advance(task, moved),
            )

    try:
        result = _run(_with_pool(settings, archive))
    except archiving.ArchiveRefused as refused:
        raise _fail(str(refused)) from refused
    if as_json:
        console.print_json(json.dumps(dataclasses.asdict(result)))
        return
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
    console.print(
        f"campaign {campaign_id} archived: {result.moved} items moved now;"
        f" its items: {counts or 'none'}"
    )


# --- settings: a client of the config service's admin API --------------------------------


def _admin_request(
    method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> Any:
    """Call the admin API; an error answer is printed as the API says it, and exits (2 for
    a refused request, 1 for a failure of the service)."""
    settings = Settings()
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not token:
        raise _fail("MAILROOM_ADMIN_TOKEN is not set (the admin API's bearer token)")
    try:
        with httpx.Client(
            base_url=settings.config_url,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            timeout=90,
        ) as client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as error:
        raise _fail(
            f"cannot reach the config service at {settings.config_url} (MAILROOM_CONFIG_URL):"
            f" {error}"
        ) from None
    if response.status_code < 400:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text or response.reason_phrase
    problems = (
        [f"{p.get('field')}: {p.get('problem')}" for p in detail]
        if isinstance(detail, list)
        else [str(detail)]
    )
    for problem in problems:
        errors.print(f"[red]error:[/red] {escape(problem)}", soft_wrap=True)
    raise typer.Exit(code=2 if response.status_code < 500 else 1)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _print_group(view: dict[str, Any]) -> None:
    by = f", by {view['updated_by']} at {view['updated_at']}" if view.get("updated_by") else ""
    table = Table(title=f"{view['group']} (version {view['version']}{by})", show_lines=True)
    table.add_column("setting")
    table.add_column("value")
    for key, value in view["settings"].items():
        table.add_row(key, escape(_shown(value)))
    for key, value in view["read_only"].items():
        table.add_row(f"{key} [dim](read-only)[/dim]", escape(_shown(value)))
    console.print(table)


@settings_app.command("show")
def settings_show(
    group: Annotated[
        str | None, typer.Argument(help="smtp, marketing or bounce; all if omitted.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the settings (passwords are never shown: "********" when one is set)."""
    answer = _admin_request("GET", f"/settings/{group}" if group else "/settings")
    if as_json:
        console.print_json(json.dumps(answer))
        return
    for view in [answer] if group else answer.values():
        _print_group(view)


def parse_assignments(pairs: list[str], current: dict[str, Any]) -> dict[str, Any]:
    """KEY=VALUE pairs as a change. A value is taken as written for a setting that holds
    text (a password "123456" stays a string); otherwise as JSON when it parses (port=2525,
    verify_certificates=false), else as a string. A KEY without "=" is asked for without
    echo (for passwords: nothing in the shell's history)."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        key = key.strip()
        if not key:
            raise _fail(f"{pair!r}: expected KEY=VALUE")
        if not equals:
            raw = typer.prompt(key, hide_input=True)
        if isinstance(current.get(key), str):
            changes[key] = raw
            continue
        try:
            changes[key] = json.loads(raw)
        except ValueError:
            changes[key] = raw
    return changes


@settings_app.command("set")
def settings_set(
    group: Annotated[str, typer.Argument(help="smtp, marketing or bounce.")],
    assignments: Annotated[
        list[str], typer.Argument(help="KEY=VALUE (JSON values: port=2525, flag=true).")
    ],
    actor: Annotated[
        str | None, typer.Option(help="Who makes the change (recorded; default 'admin').")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change some settings of a group; the others keep their value."""
    current = _admin_request("GET", f"/settings/{group}")["settings"]
    changes = parse_assignments(assignments, current)
    headers = {"X-Mailroom-Actor": actor} if actor else None
    result = _admin_request("PUT", f"/settings/{group}", changes, headers)
    if as_json:
        console.print_json(json.dumps(result))
        return
    if result["changed"]:
        console.print(
            f"{group}: version {result['version']}, changed: {', '.join(result['changed_keys'])}"
        )
        if not result["announced"]:
            errors.print(f"[yellow]warning:[/yellow] {escape(result['message'])}", soft_wrap=True)
    else:
        console.print(f"{group}: nothing changed (still version {result['version']})")


def _action(path: str, body: Any, as_json: bool) -> None:
    result = _admin_request("POST", path, body)
    if as_json:
        console.print_json(json.dumps(result))
    else:
        label = "[green]ok[/green]" if result["ok"] else "[red]failed[/red]"
        console.print(f"{label}: {escape(result['reply'])}", soft_wrap=True)
    if not result["ok"]:
        raise typer.Exit(code=1)


@settings_app.command("test-smtp")
def settings_test_smtp(
    address: Annotated[str, typer.Argument(help="Where the test email goes.")],
    as_json: JsonFlag = False,
) -> None:
    """Send a test email through the global SMTP account (exit 1 when it fails)."""
    _action("/actions/test-smtp", {"to": address}, as_json)


@settings_app.command("test-imap")
def settings_test_imap(
    as_json: JsonFlag = False,
) -> None:
    """Log in to the bounce mailbox and select its folder (exit 1 when it fails)."""
    _action("/actions/test-imap", None, as_json)


@settings_app.command("dkim-keygen")
def settings_dkim_keygen(
    selector: Annotated[
        str | None, typer.Option(help="The DNS selector (default: mr<YYYYMMDD>).")
    ] = None,
    domain: Annotated[
        str | None, typer.Option(help="The signing domain (default: dkim_domain, else From's).")
    ] = None,
    ed25519: Annotated[
        bool, typer.Option("--ed25519", help="A key for the second, ed25519-sha256 signature.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Make a DKIM key pair, store its private key (encrypted, write-only) and print the DNS
    TXT record to publish (rotation: docs/config.md)."""
    from mailroom.dkim_keygen import NEXT_STEPS, KeygenRefused, plan_keygen

    current = _admin_request("GET", "/settings/smtp")["settings"]
    try:
        keygen = plan_keygen(current, selector, domain, ed25519)
    except KeygenRefused as refused:
        raise _fail(str(refused)) from None
    result = _admin_request("PUT", "/settings/smtp", keygen.changes)
    if as_json:
        console.print_json(json.dumps({**keygen.summary(), "version": result["version"]}))
        return
    sys.stdout.write(keygen.record + "\n")
    step = NEXT_STEPS[keygen.stored_as].format(selector=keygen.selector)
    errors.print(f"smtp: version {result['version']}: {escape(step)}", soft_wrap=True)


@settings_app.command("openapi")
def settings_openapi(
    out: Annotated[Path | None, typer.Option(help="Write here instead of printing.")] = None,
) -> None:
    """The OpenAPI document of the admin API (docs/openapi-config.json)."""
    from mailroom_config.public import openapi_document

    document = openapi_document()
    if out is None:
        sys.stdout.write(document)
    else:
        out.write_text(document)
        console.print(f"wrote {out}")


@bounce_app.command("parse")
def bounce_parse(
    files: Annotated[list[str], typer.Argument(help="Message files (raw RFC 5322); - for stdin.")],
) -> None:
    """Classify messages as the bounce processor does: one JSON object per line (item_id from
    the VERP address or Message-ID, verified with MAILROOM_SIGNING_KEY)."""
    from mailroom_bounce_processor.public import describe
    from mailroom_common.signing import Signer

    settings = Settings()
    previous = settings.signing_key_previous
    signer = Signer(
        settings.signing_key.get_secret_value().encode(),
        previous.get_secret_value().encode() if previous else None,
    )
    failed = False
    for name in files:
        try:
            raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as error:
            errors.print(f"[red]error:[/red] {escape(name)}: {escape(str(error))}", soft_wrap=True)
            failed = True
            continue
        sys.stdout.write(json.dumps(describe(name, raw, signer)) + "\n")
    if failed:
        raise typer.Exit(code=2)


@app.command()
def asyncapi(
    out: Annotated[Path | None, typer.Option(help="Write here instead of printing.")] = None,
) -> None:
    """The AsyncAPI document of every command and event, generated from the code."""
    from mailroom.asyncapi import render

    document = render()
    if out is None:
        sys.stdout.write(document)
    else:
        out.write_text(document)
        console.print(f"wrote {out}")


@app.command()
def bench(
    recipients: Annotated[int, typer.Option(help="Recipients of the benchmark campaign.")] = 50_000,
    size: Annotated[int, typer.Option(help="Bytes of each message, about.")] = 5_000,
    smtp_latency: Annotated[
        float, typer.Option(help="Seconds the SMTP server waits before answering each message.")
    ] = 0.0,
    pool: Annotated[int, typer.Option(help="SMTP connections (account pool_size, bare loop).")] = 8,
    processes: Annotated[
        str, typer.Option(help="single: `mailroom run all`; separate: a process per service.")
    ] = "single",
    sender_replicas: Annotated[
        int, typer.Option(help="outbound_sender processes (with --processes separate).")
    ] = 1,
    bare_messages: Annotated[
        int | None,
        typer.Option(help="Messages of the bare aiosmtplib loop (default min(N, 20,000))."),
    ] = None,
    smtp_throttle_above: Annotated[
        int,
        typer.Option(
            help="The SMTP server answers 421 4.7.0 above this many msg/s (the account's rate:"
            " twice that); prints the rate the senders found and the deferrals."
        ),
    ] = 0,
    keep: Annotated[bool, typer.Option(help="Keep the run's database and logs.")] = False,
    dkim: Annotated[
        bool, typer.Option(help="Sign every message (DKIM rsa-sha256, a key made for the run).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """A campaign end to end on this machine, with its own database and queues: generation,
    throughput, latency, CPU and memory per service, import rate, the bare SMTP ceiling."""
    from mailroom.bench import BenchFailed, BenchOptions, run_bench
    from mailroom.bench.figures import tables

    if processes not in ("single", "separate"):
        raise _fail("--processes is single or separate")
    options = BenchOptions(
        recipients=recipients,
        size=size,
        smtp_latency=smtp_latency,
        pool=pool,
        processes="single" if processes == "single" else "separate",
        sender_replicas=sender_replicas,
        bare_messages=bare_messages,
        smtp_throttle_above=smtp_throttle_above,
        keep=keep,
        dkim=dkim,
    )
    try:
        figures = run_bench(options)
    except BenchFailed as error:
        raise _fail(str(error)) from error
    if as_json:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    for table in tables(figures):
        console.print(table)


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(help="How many contacts to generate.")] = 10_000,
) -> None:
    """A real campaign end to end: SMTP sink, every service, 10,000 contacts, a summary."""
    from mailroom.demo import run_demo

    code = run_demo(contacts)
    raise typer.Exit(code=code)


def main() -> None:
    if sys.argv[1:2] != ["run"]:
        # a command says in one line that the broker cannot be reached; aiormq would log it too
        logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except (MissingDatabase, SchemaOutdated) as error:
        errors.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        sys.exit(2)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        setting = unreachable_setting(error)
        if setting is None:
            raise
        try:
            settings = Settings()
            url = settings.database_url if setting == DATABASE else settings.rabbitmq_url
        except ValidationError:
            url = "?"
        errors.print(f"[red]error:[/red] {escape(describe(error, setting, url))}", soft_wrap=True)
        sys.exit(1)
    except ValidationError as error:
        # the deployment settings (environment), or a value of the command line that an
        # event or setting refuses (an id past int64): one line each, no traceback
        environment = error.title == Settings.__name__
        for problem in error.errors(include_input=False, include_url=False):
            where = "_".join(str(part) for part in problem["loc"])
            # a check of several settings together has no location: its message names them
            where = f"MAILROOM_{where.upper()}" if environment and where else where
            message = str(problem["msg"]).removeprefix("Value error, ")
            errors.print(
                f"[red]error:[/red] {escape(f'{where}: ' if where else '')}{escape(message)}",
                soft_wrap=True,
            )
        sys.exit(2)


if __name__ == "__main__":
    main()
