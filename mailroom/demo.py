"""`mailroom demo`: a real campaign end to end on this machine.

It uses its own database (mailroom_demo, recreated each run) and queue prefix, so it never
touches a real installation's data.
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import httpx
from mailroom_common.broker_policy import BrokerPolicyError, ManagementApi
from mailroom_common.db import create_pool, quote_ident
from mailroom_common.events import CampaignLaunch
from mailroom_common.migrate import migrate
from mailroom_common.runtime_settings import SettingsStore, SmtpAccount
from mailroom_common.settings import Settings
from rich.console import Console

from mailroom import campaigns, smtp_sink
from mailroom.campaign_watch import print_summary, watch_campaign
from mailroom.contacts_import import import_contacts
from mailroom.local_processes import free_port, peak_rss_mib

console = Console()
TEMPLATES = Path(__file__).parent / "demo_templates"
DEMO_DATABASE = "mailroom_demo"
DEMO_PREFIX = "mailroom-demo"
HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    "  (or: docker compose up -d postgres)",
    "RabbitMQ": "rabbitmq-server -detached  (or: docker compose up -d rabbitmq)",
    "RabbitMQ management": "rabbitmq-plugins enable rabbitmq_management",
}


def demo_settings(database: str = DEMO_DATABASE, prefix: str = DEMO_PREFIX) -> Settings:
    """The demo's (and the benchmark's) settings: a database of its own, development mode
    unless MAILROOM_ENVIRONMENT says otherwise (for this process and the services it starts),
    so the development keys may be used, with a loud warning."""
    os.environ.setdefault("MAILROOM_ENVIRONMENT", "development")
    base = Settings()
    url = urlsplit(base.database_url)
    return base.model_copy(
        update={
            "database_url": urlunsplit(url._replace(path=f"/{database}")),
            "queue_prefix": prefix,
        }
    )


async def _unreachable(settings: Settings) -> list[str]:
    missing = []
    admin_url = urlunsplit(urlsplit(settings.database_url)._replace(path="/postgres"))
    try:
        conn = await asyncpg.connect(admin_url, timeout=5)
        await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError):
        missing.append("PostgreSQL")
    try:
        connection = await aio_pika.connect(settings.rabbitmq_url, timeout=5)
        await connection.close()
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError):
        missing.append("RabbitMQ")
    else:
        try:  # the services put the delivery-limit policy through it
            await ManagementApi.from_settings(settings).get_policy("mailroom-demo-probe")
        except BrokerPolicyError:
            missing.append("RabbitMQ management")
    return missing


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def check_services(settings: Settings) -> bool:
    missing = asyncio.run(_unreachable(settings))
    if not missing:
        return True
    where = {
        "PostgreSQL": f"{_without_password(settings.database_url)} (MAILROOM_DATABASE_URL)",
        "RabbitMQ": f"{_without_password(settings.rabbitmq_url)} (MAILROOM_RABBITMQ_URL)",
        "RabbitMQ management": f"{ManagementApi.from_settings(settings).base_url}"
        " (MAILROOM_RABBITMQ_MANAGEMENT_URL)",
    }
    for name in missing:
        console.print(f"[red]{name} cannot be reached[/red] at {where[name]}")
    compose = {"PostgreSQL": "postgres", "RabbitMQ": "rabbitmq"}
    services = sorted({compose[m] for m in missing if m in compose})
    if services and _docker_works():
        console.print("starting them with docker compose ...")
        subprocess.run(["docker", "compose", "up", "-d", "--wait", *services], check=False)
        return not asyncio.run(_unreachable(settings))
    for name in missing:
        console.print(f"  start {name}: {HOW_TO_START[name]}")
    return False


async def _fresh_database(settings: Settings) -> None:
    url = urlsplit(settings.database_url)
    admin_url = urlunsplit(url._replace(path="/postgres"))
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(
            f"DROP DATABASE IF EXISTS {quote_ident(url.path.lstrip('/'))} WITH (FORCE)"
        )
    finally:
        await admin.close()
    await migrate(settings.database_url, create_database=True)


def start_smtp_sink(port: int) -> subprocess.Popen[bytes]:
    process = smtp_sink.start_smtp_sink(port)
    hint = "" if smtp_sink.postfix_sink() else " (install postfix for smtp-sink)"
    console.print(f"SMTP sink: {smtp_sink.sink_name(process)} on 127.0.0.1:{port}{hint}")
    return process


def write_contacts(path: Path, count: int) -> None:
    plans = ("free", "pro", "team")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "plan"])
        for i in range(count):
            writer.writerow([f"reader{i:05d}@example.com", f"Reader{i}", "Demo", plans[i % 3]])
        writer.writerow(["not-an-address", "Bad", "Row", "free"])


async def _prepare(settings: Settings, sink_port: int, csv_path: Path) -> int:
    await _fresh_database(settings)
    pool = await create_pool(settings)
    try:
        await SettingsStore(pool, settings.settings_key).save(
            SmtpAccount(host="127.0.0.1", port=sink_port, security="none", pool_size=8),
            changed_by="demo",
        )
        report = await import_contacts(pool, csv_path, "demo-readers")
        console.print(f"imported {report.imported} contacts into list demo-readers")
        for line, reason in report.bad_rows[:5]:
            console.print(f"  {csv_path.name}:{line}: {reason} (skipped, as expected)")
        return await campaigns.create_campaign(
            pool,
            campaigns.NewCampaign(
                name="Demo newsletter",
                subject="What's new, {{ contact.first_name }}",
                from_email="news@mailroom.test",
                from_name="Mailroom Demo",
                html_template=(TEMPLATES / "newsletter.html").read_text(),
                text_template=None,
                lists=["demo-readers"],
            ),
            settings,
        )
    finally:
        await pool.close()


def _start_services(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {
        **os.environ,
        "MAILROOM_DATABASE_URL": settings.database_url,
        "MAILROOM_QUEUE_PREFIX": settings.queue_prefix,
        "MAILROOM_OPS_PORT": str(port),
        "MAILROOM_HTTP_PORT": str(free_port()),
        "MAILROOM_LOG_FORMAT": os.environ.get("MAILROOM_LOG_FORMAT", "text"),
    }
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailroom", "run", "all"], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the services exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                console.print(f"services running (all, http://127.0.0.1:{port}/metrics)")
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the services did not become ready; see {log_path}")


def run_campaign(settings: Settings, contacts: int) -> dict[str, Any] | None:
    """Sink, contacts, services, one campaign watched to its end; None if a server is missing.

    The returned status carries `seconds` and the services' `peak_rss_mib`.
    """
    if not check_services(settings):
        return None
    workdir = Path(tempfile.mkdtemp(prefix="mailroom-"))
    sink_port = free_port()
    sink = start_smtp_sink(sink_port)
    services: subprocess.Popen[bytes] | None = None
    try:
        csv_path = workdir / "contacts.csv"
        write_contacts(csv_path, contacts)
        campaign_id = asyncio.run(_prepare(settings, sink_port, csv_path))
        services = _start_services(settings, workdir / "services.log")
        asyncio.run(campaigns.send_command(settings, CampaignLaunch(campaign_id=campaign_id)))
        final = watch_campaign(settings, campaign_id)
        final["peak_rss_mib"] = peak_rss_mib(services.pid)
        final["log"] = str(workdir / "services.log")
        return final
    finally:
        if services is not None:
            services.send_signal(signal.SIGTERM)
            try:
                services.wait(timeout=60)
            except subprocess.TimeoutExpired:
                services.kill()
        sink.kill()
        sink.wait()


def run_demo(contacts: int) -> int:
    settings = demo_settings()
    settings.warn_about_keys()
    final = run_campaign(settings, contacts)
    if final is None:
        return 1
    print_summary(final)
    console.print(
        f"services log: {final['log']}; inspect with "
        f"MAILROOM_ENVIRONMENT={settings.environment} MAILROOM_DATABASE_URL={settings.database_url}"
        f" mailroom campaign status {final['id']}"
    )
    ok = final["status"] == "completed" and final["counts"].get("sent", 0) == contacts
    return 0 if ok else 1
