"""The pure parts of the Job Manager and of `mailroom dlq`: job states, what a run records,
where a dead letter goes back to, which server an error names."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from mailroom_common.broker import Topology
from mailroom_common.job_overview import Heartbeat, JobsOverview, QueueFigures, job_status
from mailroom_common.jobs import JOBS, JOBS_BY_NAME, Job, JobActivity, job_of_queue
from mailroom_common.metrics import JOB_LAST_ERROR, JOB_LAST_RUN, JOB_LAST_SUCCESS
from prometheus_client import REGISTRY
from rich.console import Console

from mailroom import jobs_cli
from mailroom.dead_letters import (
    DEAD_LETTER_HEADERS,
    UnknownQueue,
    _replayed_copy,
    _topic_matches,
    describe,
    origin_of,
    resolve_queue,
)
from mailroom.unreachable import DATABASE, RABBITMQ, unreachable_setting, without_password

TOPOLOGY = Topology(prefix="p", delivery_limit=5, retry_delays_ms=(1000,))
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
COMPLETION = JOBS_BY_NAME["mark-campaigns-completed"]


def beat(seen_ago: float, ran_ago: float | None = 1, **extra: Any) -> Heartbeat:
    values: dict[str, Any] = {
        "job": COMPLETION.name,
        "instance": f"host:{seen_ago}",
        "service": "completion",
        "last_seen": NOW - timedelta(seconds=seen_ago),
        "last_run": None if ran_ago is None else NOW - timedelta(seconds=ran_ago),
        "last_success": None,
        "last_error": None,
        "last_error_at": None,
        "stopped_at": None,
    }
    return Heartbeat(**{**values, **extra})


def test_a_job_is_down_idle_or_up() -> None:
    assert job_status(COMPLETION, [], NOW, []).state == "down"
    assert job_status(COMPLETION, [beat(31)], NOW, []).state == "down"
    stopped = beat(1, stopped_at=NOW - timedelta(seconds=1))
    assert job_status(COMPLETION, [stopped], NOW, []).state == "down"
    assert job_status(COMPLETION, [beat(5, ran_ago=None)], NOW, []).state == "idle"
    assert job_status(COMPLETION, [beat(5, ran_ago=301)], NOW, []).state == "idle"
    status = job_status(COMPLETION, [beat(5), beat(45, ran_ago=40)], NOW, [])
    assert (status.state, status.replicas, status.instances) == ("up", 1, ["host:5"])
    assert status.last_run == NOW - timedelta(seconds=1)  # the latest of every instance


def test_the_newest_error_and_the_queue_sums_are_shown() -> None:
    older = beat(5, last_error="old", last_error_at=NOW - timedelta(seconds=50))
    newer = beat(6, last_error="new", last_error_at=NOW - timedelta(seconds=5))
    queues = [
        QueueFigures(queue="a", messages=3, consumers=1, dead_letters=0, dead_letter_queue="a.d"),
        QueueFigures(
            queue="b", messages=None, consumers=None, dead_letters=2, dead_letter_queue="b.d"
        ),
    ]
    status = job_status(COMPLETION, [older, newer], NOW, queues)
    assert (status.last_error, status.last_error_at) == ("new", NOW - timedelta(seconds=5))
    assert (status.queue_depth, status.consumers, status.dead_letters) == (3, 1, 2)


def test_every_job_queue_belongs_to_one_job() -> None:
    assert [job.service for job in JOBS] == [
        "item_generator",
        "message_processor",
        "outbound_sender",
        "completion",
        "autoresponder",
        "bounce_processor",
        "subscriptions",
    ]
    assert (
        job_of_queue(TOPOLOGY, "p.outbound_sender.priority")
        is JOBS_BY_NAME["process-outbound-email"]
    )
    assert job_of_queue(TOPOLOGY, "p.settings-changed.host-1") is None
    work_queues = {q.name for q, _, _ in TOPOLOGY.bindings()}
    assert work_queues == {n for job in JOBS for n in job.queue_names(TOPOLOGY)}


async def test_a_tracked_run_records_its_start_success_or_error() -> None:
    activity = JobActivity()
    calls: list[int] = []

    async def works(n: int) -> None:
        calls.append(n)

    async def fails(n: int) -> None:
        raise RuntimeError(f"broken {n}")

    await activity.tracked("job-a", works)(1)
    state = activity.state("job-a")
    assert calls == [1] and state.last_run is not None and state.last_success is not None
    assert JOB_LAST_SUCCESS.labels("job-a")._value.get() == state.last_success
    with pytest.raises(RuntimeError):
        await activity.tracked("job-b", fails)(2)
    failed = activity.state("job-b")
    assert failed.last_run is not None and failed.last_success is None
    assert failed.last_error == "RuntimeError: broken 2"
    assert JOB_LAST_RUN.labels("job-b")._value.get() == failed.last_run
    assert JOB_LAST_ERROR.labels("job-b")._value.get() == failed.last_error_at

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await activity.tracked("job-c", cancelled)()
    assert activity.state("job-c").last_error is None  # a stop is not an error


def test_a_job_is_exported_from_the_start_before_it_runs() -> None:
    """An idle job (no message yet for the sender) is in /metrics all the same, at 0: the
    alert MailroomJobMissing looks for its series."""
    idle = Job("idle-job", "outbound_sender", "Idle", (), None)
    JobActivity().expose([idle])
    for metric in ("run", "success", "error"):
        name = f"mailroom_job_last_{metric}_timestamp_seconds"
        assert REGISTRY.get_sample_value(name, {"job": "idle-job"}) == 0.0, name


class Letter:
    """What aio-pika hands over for a message taken from a queue (the parts read)."""

    def __init__(self, headers: dict[str, Any], type_: str | None = None) -> None:
        self.headers = headers
        self.type = type_
        self.body = b'{"campaign_id": 7}'
        self.content_type = "application/json"
        self.content_encoding = None
        self.message_id = None
        self.correlation_id = None
        self.app_id = None
        self.timestamp = None


def letter(headers: dict[str, Any], type_: str | None = None) -> AbstractIncomingMessage:
    message: Any = Letter(headers, type_)
    return message  # type: ignore[no-any-return]


def test_a_dead_letter_goes_back_the_way_it_came() -> None:
    dlq = "p.item_generator.commands.dlq"
    recorded = letter(
        {
            "x-mailroom-original-exchange": "p.commands",
            "x-mailroom-original-routing-key": "campaign.launch",
            "x-mailroom-error": "unknown campaign 7",
            "x-mailroom-deliveries": 1,
            "x-mailroom-dead-lettered-at": int(NOW.timestamp()),
        },
        "campaign.launch",
    )
    origin = origin_of(recorded, TOPOLOGY, dlq)
    assert origin is not None and (origin.exchange, origin.routing_key) == (
        "p.commands",
        "campaign.launch",
    )
    described = describe(recorded, TOPOLOGY, dlq)
    assert (described.reason, described.tries, described.dead_lettered_at) == (
        "unknown campaign 7",
        1,
        NOW,
    )

    # dead-lettered by RabbitMQ itself: x-death, the entry of the queue that gave up
    deaths = [
        {
            "queue": "p.outbound_sender.batches",
            "reason": "delivery_limit",
            "count": 1,
            "exchange": "p.work",
            "routing-keys": ["outbound.batch"],
            "time": NOW,
        },
        {
            "queue": "p.outbound.retry.1000ms",
            "reason": "expired",
            "count": 2,
            "exchange": "p.work",
            "routing-keys": ["retry.1000"],
        },
    ]
    by_broker = letter({"x-death": deaths}, "outbound.batch")
    origin = origin_of(by_broker, TOPOLOGY, "p.outbound_sender.batches.dlq")
    assert origin is not None and origin.routing_key == "outbound.batch"
    described = describe(by_broker, TOPOLOGY, "p.outbound_sender.batches.dlq")
    assert described.reason == "delivery_limit in p.outbound_sender.batches (by RabbitMQ)"
    assert described.dead_lettered_at == NOW

    # nothing recorded: the queue's binding that matches the message's type
    bare = origin_of(letter({}, "campaign.pause"), TOPOLOGY, dlq)
    assert bare is not None and (bare.exchange, bare.routing_key) == (
        "p.commands",
        "campaign.pause",
    )
    assert origin_of(letter({}, "items.page"), TOPOLOGY, dlq) is None
    assert origin_of(letter({}, None), TOPOLOGY, dlq) is None
    job_run = origin_of(letter({}, "job.run"), TOPOLOGY, "p.job-run.dlq")
    assert job_run is not None and job_run.exchange == "p.events"


def test_a_replayed_copy_starts_afresh() -> None:
    message = letter(
        {
            "x-mailroom-error": "why",
            "x-delivery-count": 4,
            "x-death": [],
            "x-mailroom-replays": 1,
            "traceparent": "00-abc",
        },
        "campaign.launch",
    )
    copy = _replayed_copy(message, "p.item_generator.commands.dlq")
    assert copy.headers == {
        "traceparent": "00-abc",
        "x-mailroom-replays": 2,
        "x-mailroom-replayed-from": "p.item_generator.commands.dlq",
    }
    assert copy.type == "campaign.launch" and copy.delivery_mode == 2
    assert not DEAD_LETTER_HEADERS & set(copy.headers)


def test_topic_patterns_and_queue_names() -> None:
    assert _topic_matches("campaign.*", "campaign.launch")
    assert not _topic_matches("campaign.*", "campaign.launch.now")
    assert _topic_matches("#", "a.b.c") and _topic_matches("a.#", "a")
    assert not _topic_matches("items.page", "items.pages")
    assert resolve_queue(TOPOLOGY, "completion.events.dlq") == "p.completion.events.dlq"
    assert resolve_queue(TOPOLOGY, "completion.events") == "p.completion.events.dlq"
    assert resolve_queue(TOPOLOGY, "p.job-run.dlq") == "p.job-run.dlq"
    # the work queue by its full name, as the alert MailroomDeadLetters gives it
    assert resolve_queue(TOPOLOGY, "p.completion.events") == "p.completion.events.dlq"
    with pytest.raises(UnknownQueue, match=re.escape("p.settings-changed.dlq")):
        resolve_queue(TOPOLOGY, "p.outbound.retry.1000ms")


def test_an_error_names_the_server_it_could_not_reach() -> None:
    async def connect_database() -> None:
        await asyncpg.connect("postgresql://postgres@127.0.0.1:1/x", timeout=5)

    with pytest.raises(OSError) as raised:
        asyncio.run(connect_database())
    assert unreachable_setting(raised.value) == DATABASE
    assert unreachable_setting(asyncpg.InvalidPasswordError("no")) == DATABASE
    assert unreachable_setting(asyncpg.UniqueViolationError("a query")) is None
    assert unreachable_setting(FileNotFoundError("people.csv")) is None

    async def connect_broker() -> None:
        import aio_pika

        await aio_pika.connect("amqp://guest:guest@127.0.0.1:1/", timeout=5)

    with pytest.raises(ConnectionError) as raised_amqp:
        asyncio.run(connect_broker())
    assert unreachable_setting(raised_amqp.value) == RABBITMQ

    assert (
        without_password("amqp://guest:guest@rabbit:5672/vh") == "amqp://guest:***@rabbit:5672/vh"
    )
    assert without_password("postgresql://pg@db/mailroom") == "postgresql://pg@db/mailroom"


def test_the_jobs_table_keeps_names_and_states_whole_in_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kubectl exec ... mailroom jobs` in an 80-column terminal: `jobs run NAME` needs the
    name as it is, and the state is what the operator came for."""

    statuses = [
        job_status(job, [beat(1) if job is COMPLETION else beat(60)], NOW, []) for job in JOBS
    ]
    screen = StringIO()
    monkeypatch.setattr(jobs_cli, "console", Console(file=screen, width=80))
    jobs_cli.print_overview(JobsOverview(checked_at=NOW, broker_problem=None, jobs=statuses))
    rows = {
        line.split("│")[1].strip(): line.split("│")[3].strip()
        for line in screen.getvalue().splitlines()
        if line.count("│") > 2 and line.split("│")[1].strip()
    }
    assert rows == {job.name: ("up" if job is COMPLETION else "down") for job in JOBS}, (
        screen.getvalue()
    )
