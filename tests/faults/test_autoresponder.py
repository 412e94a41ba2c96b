"""The fault matrix, autoresponders: 5,000 contacts subscribe (one contact.subscribed each),
and the autoresponder service is killed (SIGKILL) or stopped (SIGTERM) while their welcome
emails go out, then started again. Everyone gets exactly one welcome email; a SIGKILL may
repeat only what was in flight, a SIGTERM nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from mailroom_common.events import ContactSubscribed

from tests.support.autoresponders import make_autoresponder, make_list, trigger
from tests.support.environment import Installation
from tests.support.fault_campaign import RECIPIENTS, SEND_RATE, SUMMARY_PREFIX, FaultCampaign
from tests.support.faulty_smtp import FaultySmtpServer
from tests.support.seed import add_contacts, use_smtp_server

SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}
SERVICES = ("autoresponder", "outbound_sender")


async def _subscribers(pool: asyncpg.Pool, list_id: int) -> list[ContactSubscribed]:
    rows = [(f"welcome{i:06d}@welcome.example.test", f"First{i}", "Lee") for i in range(RECIPIENTS)]
    async with pool.acquire() as conn, conn.transaction():
        await add_contacts(conn, rows, list_id)
    ids = await pool.fetch("SELECT id FROM contacts ORDER BY id")
    return [
        ContactSubscribed(contact_id=r["id"], list_id=list_id, event_id=f"signup-{r['id']}")
        for r in ids
    ]


async def _open_items(pool: asyncpg.Pool, status: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT lower(email) AS email FROM autoresponder_items WHERE status = $1", status
    )
    return {r["email"] for r in rows}


@pytest.mark.parametrize("how", list(SIGNALS))
async def test_autoresponder_stopped_while_welcome_emails_go_out(
    installations: Callable[..., Awaitable[Installation]], smtp: FaultySmtpServer, how: str
) -> None:
    install = await installations()
    run = FaultCampaign(install, smtp)
    pool = run.pool
    list_id = await make_list(pool, "welcome")
    await make_autoresponder(install, "Welcome", list_name="welcome")
    await use_smtp_server(pool, smtp.port, messages_per_second=SEND_RATE, timeout_seconds=10)
    events = await _subscribers(pool, list_id)
    await run.start(*SERVICES)
    started = time.monotonic()
    await trigger(install, *events)

    await run.received(RECIPIENTS * 3 // 10)
    # received when the signal went: a drain may outlast the sender's last emails
    at_signal: list[int] = []
    exit_code = await run.stop(
        "autoresponder", SIGNALS[how], lambda: at_signal.append(smtp.handler.count())
    )
    in_flight = await _open_items(pool, "sending")
    mid_work = at_signal[0] < RECIPIENTS
    await run.start_again("autoresponder")

    async def all_terminal() -> bool:
        open_items = await pool.fetchval(
            "SELECT count(*) FROM autoresponder_items"
            " WHERE status NOT IN ('sent', 'failed', 'suppressed', 'skipped', 'bounced')"
        )
        total = await pool.fetchval("SELECT count(*) FROM autoresponder_items")
        return bool(total == RECIPIENTS and open_items == 0)

    await run.until(all_terminal, "every welcome email terminal", 180)
    received = smtp.handler.recipients()
    expected = {e.lower() for e in await _open_items(pool, "sent")}
    duplicates = sum(n - 1 for n in received.values())
    missing = len(expected - set(received))
    failed = await pool.fetchval("SELECT count(*) FROM autoresponder_items WHERE status = 'failed'")
    print(
        f"\n{SUMMARY_PREFIX} {how}-autoresponder: in_flight={len(in_flight)}"
        f" duplicates={duplicates} missing={missing} failed={failed} sent={len(expected)}"
        f" total_s={time.monotonic() - started:.1f} exit_code={exit_code}\n{run.log_digest()}"
    )
    assert mid_work, "the stop came after every welcome email was sent"
    assert len(expected) == RECIPIENTS and failed == 0
    assert missing == 0 and set(received) == expected
    if how == "sigterm":
        assert exit_code == 0
        assert duplicates == 0
    else:
        duplicated = {a for a, n in received.items() if n > 1}
        assert duplicated <= in_flight, (
            f"duplicated, not in flight: {sorted(duplicated - in_flight)}"
        )
