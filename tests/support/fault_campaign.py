"""One campaign of the fault matrix: 5,000 recipients, every service in a process of its
own, a recording SMTP server whose faults the test controls; then the figures every case
prints (in flight, duplicates, missing, failed, seconds to recover) and the checks every
case makes.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from mailroom_common.events import TERMINAL_STATUSES, CampaignLaunch

from mailroom.campaigns import campaign_status, send_command
from tests.support.environment import Installation
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.seed import Audience, make_audience, make_campaign, use_smtp_server

RECIPIENTS = 5000
CAMPAIGN_SERVICES = ("item_generator", "message_processor", "outbound_sender", "completion")
# Short back-off tiers that still outlast the longest outage of the matrix (60 s): a
# temporary failure is tried again 1, 3, 7, 15, 27, 42, 60, 80 s after the first.
RETRY_DELAYS_SECONDS = [1, 2, 4, 8, 12, 15, 18, 20]
SEND_RATE = 500  # messages a second: the campaign's sending takes about 10 s
FINISH_WITHIN_SECONDS = 240
SUMMARY_PREFIX = "FAULT-MATRIX"


def fault_installation(**overrides: Any) -> Installation:
    settings: dict[str, Any] = {
        "retry_delays_seconds": RETRY_DELAYS_SECONDS,
        "items_page_size": 250,
        "graceful_timeout_seconds": 20,
        "admin_token": "fault-matrix-admin-token",
        # some cases bounce a fifth of the campaign on purpose: the circuit breaker (tested
        # in tests/integration/test_sync_bounces_breaker.py) would pause it, as it should
        "breaker_hard_bounce_percent": 100,
        "breaker_complaint_percent": 100,
        **overrides,
    }
    return Installation(**settings)


async def _quietly(query: Callable[[], Awaitable[Any]], limit: float = 120) -> Any:
    """A query that rides out a database restart: tried again until it answers."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await query()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


@dataclass
class Figures:
    """What one case measured; `line()` is the summary the docs are refreshed from."""

    case: str
    status: str
    items: int
    counts: dict[str, int]
    open_items: int
    in_flight: int
    duplicates: int
    missing: int
    failed_wrongly: int  # failed although the server did not refuse the recipient for good
    failed_delivered: int  # failed although the server has the message
    recover_s: float | None  # fault over -> first message accepted after it
    finish_s: float  # fault over -> campaign completed
    total_s: float  # launched -> completed
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}"
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"{SUMMARY_PREFIX} {self.case}: status={self.status} in_flight={self.in_flight}"
            f" duplicates={self.duplicates} missing={self.missing}"
            f" failed={self.failed_wrongly} failed_delivered={self.failed_delivered}"
            f" open={self.open_items} recover_s={recover} finish_s={self.finish_s:.1f}"
            f" total_s={self.total_s:.1f} counts={self.counts}{extra}"
        )

    def check(self, *, zero_duplicates: bool) -> None:
        """The invariants of docs/RELIABILITY.md; every failure message carries the figures."""
        problems = []
        if self.status != "completed":
            problems.append(f"campaign is {self.status}, not completed")
        if self.open_items:
            problems.append(f"{self.open_items} items not in a terminal state")
        if self.items != RECIPIENTS:
            problems.append(f"{self.items} items for {RECIPIENTS} eligible recipients")
        if self.missing:
            problems.append(f"{self.missing} recipients missing at the SMTP server")
        if self.failed_wrongly:
            problems.append(f"{self.failed_wrongly} items failed that should not have")
        if self.failed_delivered:
            problems.append(f"{self.failed_delivered} items failed that were delivered")
        if zero_duplicates and self.duplicates:
            problems.append(f"{self.duplicates} duplicates where none are allowed")
        if self.duplicates > self.in_flight:
            problems.append(f"{self.duplicates} duplicates, more than {self.in_flight} in flight")
        assert not problems, "; ".join(problems) + f"\n{self.line()}"


class FaultCampaign:
    """A launched campaign whose services the test can kill, stop and start again."""

    def __init__(self, install: Installation, smtp: FaultySmtpServer) -> None:
        self.install = install
        self.smtp = smtp
        self.audience = Audience(list_names=[])
        self.campaign_id = 0
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self.launched = 0.0
        self.wrong_failures: Counter[str] = Counter()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.install.pool is not None, "installation.setup() was not run"
        return self.install.pool

    async def prepare(self, rate: float = SEND_RATE, **smtp_changes: object) -> None:
        """The audience, the SMTP account pointed at our server, the campaign (not launched)."""
        self.audience = await make_audience(self.pool, RECIPIENTS)
        await use_smtp_server(
            self.pool, self.smtp.port, messages_per_second=rate, timeout_seconds=10, **smtp_changes
        )
        self.campaign_id = await make_campaign(self.pool, self.audience)

    async def start(self, *services: str) -> None:
        """Each service in its own process, started side by side, each waited for."""
        started = await asyncio.gather(
            *(
                asyncio.to_thread(self.install.start_services, service, log_name=service)
                for service in services
            )
        )
        self.processes.update(zip(services, started, strict=True))

    async def launch(self) -> None:
        self.launched = time.monotonic()
        await send_command(self.install.settings, CampaignLaunch(campaign_id=self.campaign_id))

    # --- faults on our own processes -----------------------------------------------------

    async def stop(self, service: str, how: signal.Signals, then: Callable[[], None]) -> int:
        """Send `how` to the service, run `then` at once, and wait for the process to end."""
        process = self.processes[service]
        process.send_signal(how)
        then()
        return await asyncio.to_thread(process.wait, 60)

    async def start_again(self, service: str) -> None:
        self.restarts += 1
        self.processes[service] = await asyncio.to_thread(
            self.install.start_services, service, log_name=f"{service}-again{self.restarts}"
        )

    # --- waiting for the moment of a fault ----------------------------------------------

    async def until(
        self, condition: Callable[[], Awaitable[bool]], what: str, limit: float = 120
    ) -> None:
        deadline = time.monotonic() + limit
        while not await condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {limit} s waiting for {what}")
            await asyncio.sleep(0.02)

    async def received(self, count: int, smtp: FaultySmtpServer | None = None) -> None:
        server = smtp or self.smtp

        async def enough() -> bool:
            return server.handler.count() >= count

        await self.until(enough, f"{count} messages at the SMTP server")

    async def item_count(self, where: str = "true") -> int:
        query = f"SELECT count(*) FROM campaign_items WHERE campaign_id = $1 AND ({where})"
        count: int = await _quietly(lambda: self.pool.fetchval(query, self.campaign_id))
        return count

    async def handed_over(self) -> int:
        """Items in pages the generator published (it creates them all at once first)."""
        query = (
            "SELECT coalesce(sum(item_count), 0) FROM item_pages"
            " WHERE campaign_id = $1 AND published_at IS NOT NULL"
        )
        count: int = await _quietly(lambda: self.pool.fetchval(query, self.campaign_id))
        return count

    async def in_flight(self) -> set[str]:
        """Recipients of the items being sent right now (claimed, result not recorded)."""
        rows = await _quietly(
            lambda: self.pool.fetch(
                "SELECT lower(email) AS email FROM campaign_items"
                " WHERE campaign_id = $1 AND status = 'sending'",
                self.campaign_id,
            )
        )
        return {r["email"] for r in rows}

    async def finished(self, limit: float = FINISH_WITHIN_SECONDS) -> dict[str, Any]:
        """Wait until the campaign is completed (or failed or cancelled)."""
        status: dict[str, Any] = {}

        async def final() -> bool:
            found = await _quietly(lambda: campaign_status(self.pool, self.campaign_id))
            assert found is not None
            status.update(found)
            return status["status"] in ("completed", "failed", "cancelled")

        try:
            await self.until(final, "the campaign to complete", limit)
        except AssertionError as error:
            raise AssertionError(f"{error}: {status}\n{self.log_digest()}") from None
        return status

    # --- figures -------------------------------------------------------------------------

    async def figures(
        self,
        case: str,
        *,
        in_flight: int,
        fault_over: float,
        refused_for_good: Iterable[str] = (),
        servers: Iterable[FaultySmtpServer] = (),
        **extra: Any,
    ) -> Figures:
        """Figures once the campaign is over; `fault_over` is time.monotonic() when the
        fault ended (service started again, server back)."""
        status = await self.finished()
        all_servers = [self.smtp, *servers]
        recipients: Counter[str] = Counter()
        message_ids: Counter[str] = Counter()
        for server in all_servers:
            recipients += server.handler.recipients()
            message_ids += server.handler.message_ids()
        refused = {a.lower() for a in refused_for_good}
        failed_rows = await self.pool.fetch(
            "SELECT lower(email) AS email, coalesce(smtp_reply, error, '') AS why"
            " FROM campaign_items WHERE campaign_id = $1 AND status = 'failed'",
            self.campaign_id,
        )
        failed = {r["email"] for r in failed_rows}
        self.wrong_failures = Counter(
            r["why"][:160] for r in failed_rows if r["email"] not in refused
        )
        open_items = await self.item_count(f"status <> ALL('{{{','.join(TERMINAL_STATUSES)}}}')")
        firsts = [t for s in all_servers if (t := s.handler.first_after(fault_over)) is not None]
        completed = time.monotonic()
        launched, done = status.get("launched_at"), status.get("completed_at")
        total = (
            (datetime.fromisoformat(done) - datetime.fromisoformat(launched)).total_seconds()
            if launched and done
            else float("nan")
        )
        return Figures(
            case=case,
            status=status["status"],
            items=status["items"],
            counts=status["counts"],
            open_items=open_items,
            in_flight=in_flight,
            duplicates=max(
                sum(n - 1 for n in recipients.values()), sum(n - 1 for n in message_ids.values())
            ),
            missing=len(self.audience.eligible - refused - set(recipients)),
            failed_wrongly=len(failed - refused),
            failed_delivered=len(failed & set(recipients)),
            recover_s=(min(firsts) - fault_over) if firsts else None,
            finish_s=completed - fault_over,
            total_s=total,
            extra=extra,
        )

    def log_digest(self, lines: int = 12) -> str:
        """The errors and warnings the services logged, most frequent first."""
        found: Counter[str] = Counter()
        for line in self.install.log_text().splitlines():
            if re.search(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b|Error:", line):
                text = re.sub(r"^[\d-]+ [\d:,]+ ", "", line)
                found[re.sub(r"\d+", "N", text)[:220]] += 1
        if not found:
            return "services logged no warnings or errors"
        return "services logged:\n" + "\n".join(
            f"  {n:5d} x {text}" for text, n in found.most_common(lines)
        )

    def report(self, figures: Figures) -> None:
        why = "".join(f"\n  {n:5d} x {text}" for text, n in self.wrong_failures.most_common(5))
        failures = f"\nwrongly failed items:{why}" if why else ""
        print(f"\n{figures.line()}{failures}\n{self.log_digest()}")


async def prepared_run(
    install: Installation, smtp: FaultySmtpServer, *services: str, rate: float = SEND_RATE
) -> FaultCampaign:
    run = FaultCampaign(install, smtp)
    await run.prepare(rate=rate)
    await run.start(*(services or CAMPAIGN_SERVICES))
    return run
