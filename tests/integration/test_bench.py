"""`mailroom bench` as an operator runs it: a tiny campaign, single and separate processes;
the report has every figure, with values that make sense (never timings as assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import aio_pika
import asyncpg
import pytest

from tests.support.environment import POSTGRES_SERVER, RABBITMQ_URL, ROOT

pytestmark = pytest.mark.integration

RECIPIENTS = 200
SECONDS = (
    "import_seconds",
    "generate_seconds",
    "seconds",
    "p50_seconds",
    "p99_seconds",
    "bare_seconds",
)
RATES = ("import_rows_per_second", "messages_per_second", "bare_messages_per_second")


def run_bench(*options: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "mailroom", "bench", "--json"]
    result = subprocess.run(
        [*command, "--recipients", str(RECIPIENTS), *options],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=540,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


async def assert_cleaned_up(run: str) -> None:
    admin = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres")
    try:
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", f"mailroom_bench_{run}"
        )
    finally:
        await admin.close()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            await channel.declare_queue(f"bench-{run}.outbound_sender.batches", passive=True)


def assert_sane(figures: dict[str, Any], processes: list[str]) -> None:
    assert figures["status"] == "completed"
    assert figures["sent"] == figures["items"] == RECIPIENTS
    assert figures["import_rows"] == figures["import_subscribed"] == RECIPIENTS
    assert figures["bare_sent"] == figures["bare_messages"] == RECIPIENTS
    for key in (*SECONDS, *RATES, "ratio_to_bare", "cpu_seconds_per_1000", "message_bytes"):
        assert figures[key] is not None and figures[key] > 0, key
    assert figures["p99_seconds"] >= figures["p50_seconds"]
    assert figures["seconds"] >= figures["generate_seconds"]
    assert figures["seconds"] >= figures["p99_seconds"] - 0.01  # sent_at precedes completion
    assert [s["process"] for s in figures["services"]] == processes
    for service in figures["services"]:
        assert service["cpu_seconds"] >= 0 and service["peak_rss_mib"] > 10, service
    database = figures["postgres"]
    assert database["tup_inserted"] >= RECIPIENTS  # one item per recipient, at least
    assert database["tup_updated"] >= RECIPIENTS  # each item's status moved
    assert database["xact_commit_per_message"] > 0
    if database["backends"]:  # PostgreSQL runs on this machine: its processes' CPU is seen
        assert database["backend_cpu_seconds_per_1000"] > 0
    broker = figures["broker"]
    assert 0 < broker["consumed_per_recipient"] < 1  # batches: far fewer than one per email
    assert broker["by_queue"]["outbound_sender.batches"] >= 1


async def test_bench_in_one_process() -> None:
    figures = run_bench("--size", "3000", "--dkim")
    assert_sane(figures, ["all"])
    assert figures["processes"] == "single" and figures["dkim"] is True
    assert 2500 <= figures["message_bytes"] <= 3500
    await assert_cleaned_up(figures["run"])


async def test_bench_in_separate_processes_with_two_senders() -> None:
    figures = run_bench("--processes", "separate", "--sender-replicas", "2", "--pool", "4")
    senders = ["outbound_sender#1", "outbound_sender#2"]
    assert_sane(
        figures,
        [
            "config",
            "item_generator",
            "message_processor",
            *senders,
            "completion",
            "bounce_processor",
            "subscriptions",
            "autoresponder",
        ],
    )
    assert figures["pool"] == 4 and figures["sender_replicas"] == 2
    busy = {s["process"]: s["cpu_seconds"] for s in figures["services"]}
    assert busy["message_processor"] > 0 and any(busy[s] > 0 for s in senders)
    await assert_cleaned_up(figures["run"])


async def test_bench_against_a_throttling_relay() -> None:
    """The relay answers 421 4.7.0 above 40 msg/s, the account allows 80: every recipient
    is reached once the sender found the rate, and the report says what it found."""
    figures = run_bench("--smtp-throttle-above", "40")
    assert figures["status"] == "completed"
    assert figures["sent"] == figures["items"] == RECIPIENTS
    assert figures["bare_sent"] == RECIPIENTS  # the bare loop keeps a plain sink
    assert figures["smtp_server"] == "aiosmtpd"
    assert figures["smtp_throttle_above"] == 40
    assert figures["account_messages_per_second"] == 80
    assert 0 < figures["rate_found_per_second"] <= 80
    assert figures["throttle_deferrals"] > 0
    assert figures["retries"] >= figures["throttle_deferrals"]
    await assert_cleaned_up(figures["run"])
