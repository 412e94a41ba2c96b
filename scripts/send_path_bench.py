"""CPU per message of the two halves of a 5 KB email's way out, each alone, no broker, no
database: what docs/PERFORMANCE.md ("CPU per message with DKIM on") compares.

    MAILROOM_ENVIRONMENT=development .venv/bin/python scripts/send_path_bench.py --messages 10000

- render: `render_outbound` for 1,000 bench recipients (the message processor's work per
  email, the batch's JSON included), without and with an RSA-2048 DKIM key;
- smtp: the sender's pool (`SmtpPool.send_all`, chunks of 32, the To check) and the bare
  aiosmtplib loop of `mailroom bench`, the same messages over 8 connections to one Postfix
  smtp-sink (aiosmtpd where it is missing), with the sink's own CPU.

CPU seconds per 1,000 messages of this process (and of the sink), the least of `--rounds`:
steadier than seconds on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop
from mailroom_common.dkim_signing import new_private_key
from mailroom_common.events import OutboundBatch, OutboundEmail
from mailroom_common.runtime_settings import SmtpAccount
from mailroom_common.settings import Settings
from mailroom_outbound_sender.recipients import to_header_problem
from mailroom_outbound_sender.smtp_pool import SmtpPool

from mailroom.bench.bare_smtp import send_bare
from mailroom.bench.content import (
    campaign_content,
    campaign_row,
    paragraphs_for,
    render_messages,
)
from mailroom.local_processes import cpu_seconds, free_port
from mailroom.smtp_sink import start_smtp_sink

CONNECTIONS = 8
CHUNK = 32


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def least(rounds: int, run: Callable[[], object]) -> float:
    spent = []
    for _ in range(rounds):
        started = own_cpu()
        run()
        spent.append(own_cpu() - started)
    return min(spent)


def messages(settings: Settings, count: int, account: SmtpAccount) -> list[OutboundEmail]:
    campaign = campaign_row(campaign_content("Bench", "bench", paragraphs_for(settings, 5000)))
    contacts = [
        {
            "email": f"reader{i:06d}@example.com",
            "first_name": f"Reader{i}",
            "last_name": "Demo",
            "attributes": {"plan": "pro"},
            "contact_id": i,
        }
        for i in range(count)
    ]
    return render_messages(settings, campaign, contacts, account=account)


def render_cost(settings: Settings, rounds: int, account: SmtpAccount) -> float:
    def run() -> None:
        emails = messages(settings, 1000, account)
        for start in range(0, 1000, 100):
            OutboundBatch(campaign_id=1, emails=emails[start : start + 100]).model_dump_json()

    return least(rounds, run)


async def through_pool(port: int, emails: list[OutboundEmail]) -> None:
    pool = SmtpPool(
        SmtpAccount(host="127.0.0.1", port=port, security="none", pool_size=CONNECTIONS)
    )
    try:
        for start in range(0, len(emails), CHUNK):
            chunk = emails[start : start + CHUNK]
            if any(to_header_problem(email) for email in chunk):
                raise SystemExit("a bench message failed the To check")
            outcomes = await pool.send_all(chunk)
            if any(outcome.status != "sent" for outcome in outcomes):
                raise SystemExit(f"not sent: {outcomes[0]}")
    finally:
        await pool.close()


async def through_bare_loop(port: int, emails: list[OutboundEmail]) -> None:
    await send_bare("127.0.0.1", port, emails, [e.recipient for e in emails], CONNECTIONS)


def smtp_cost(
    emails: list[OutboundEmail],
    rounds: int,
    send: Callable[[int, list[OutboundEmail]], Coroutine[Any, Any, None]],
) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(rounds):
        port = free_port()
        sink = start_smtp_sink(port, 0, 64)
        try:
            started, sink_started = own_cpu(), cpu_seconds(sink.pid) or 0.0
            uvloop.run(send(port, emails))
            client, server = own_cpu() - started, (cpu_seconds(sink.pid) or 0.0) - sink_started
        finally:
            sink.kill()
            sink.wait()
        if not best or client < best["client"]:
            best = {"client": client, "sink": server}
    return {k: round(v / len(emails) * 1000, 3) for k, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    dkim = SmtpAccount(
        dkim_domain="mailroom.test",
        dkim_selector="bench",
        dkim_private_key=new_private_key("rsa-sha256"),
    )
    emails = messages(settings, args.messages, SmtpAccount())
    figures: dict[str, Any] = {
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "render_cpu_s_per_1000": round(render_cost(settings, args.rounds, SmtpAccount()), 3),
        "render_dkim_cpu_s_per_1000": round(render_cost(settings, args.rounds, dkim), 3),
        "sender_pool_cpu_s_per_1000": smtp_cost(emails, args.rounds, through_pool),
        "bare_loop_cpu_s_per_1000": smtp_cost(emails, args.rounds, through_bare_loop),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
