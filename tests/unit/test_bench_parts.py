"""The benchmark's parts that need no server: options, the process plan, message size."""

from __future__ import annotations

import pytest
from mailroom_common.settings import Settings

from mailroom.bench.content import _sample_size, paragraphs_for
from mailroom.bench.figures import (
    backend_figures,
    broker_figures,
    database_figures,
    service_figures,
)
from mailroom.bench.options import BenchOptions
from mailroom.bench.processes import plan
from mailroom.services import SERVICES


def test_options_refuse_what_cannot_run() -> None:
    assert BenchOptions().problems() == []
    assert BenchOptions(pool=0).problems()
    assert BenchOptions(pool=201).problems()
    assert BenchOptions(sender_replicas=2).problems()  # needs separate processes
    assert BenchOptions(processes="separate", sender_replicas=2).problems() == []


def test_bare_sample_is_bounded_and_short_with_a_slow_server() -> None:
    assert BenchOptions(recipients=500).bare_sample() == 500
    assert BenchOptions(recipients=1_000_000).bare_sample() == 20_000
    slow = BenchOptions(recipients=100_000, smtp_latency=1, pool=50)
    assert slow.bare_sample() == 1000  # 20 s of 50 messages/s
    assert BenchOptions(recipients=100, bare_messages=5000).bare_sample() == 100
    two = BenchOptions(
        recipients=100_000, smtp_latency=1, pool=50, processes="separate", sender_replicas=2
    )
    assert two.bare_connections == 100 and two.bare_sample() == 2000


def test_separate_processes_run_every_service_and_k_senders() -> None:
    assert plan("single", 1) == [("all", ["all"])]
    processes = plan("separate", 3)
    labels = [label for label, _ in processes]
    assert sorted({s for _, services in processes for s in services}) == sorted(SERVICES)
    assert labels.count("outbound_sender#1") == 1 and "outbound_sender#3" in labels
    assert len(processes) == len(SERVICES) + 2


@pytest.mark.parametrize("size", [5_000, 22_000])
def test_messages_are_about_the_size_asked_for(size: int) -> None:
    settings = Settings()
    rendered = _sample_size(settings, paragraphs_for(settings, size))
    assert abs(rendered - size) < 0.05 * size


def test_per_message_figures() -> None:
    services = service_figures({"all": 1.0}, {"all": 3.0}, {"all": 95.0}, sent=1000)
    assert services == [
        {"process": "all", "cpu_seconds": 2.0, "cpu_seconds_per_1000": 2.0, "peak_rss_mib": 95.0}
    ]
    before = dict.fromkeys(("xact_commit", "xact_rollback", "tup_inserted", "tup_updated"), 0)
    before["tup_deleted"] = 0
    after = {**before, "xact_commit": 110, "tup_inserted": 100, "tup_updated": 300}
    database = database_figures(before, after, watcher_transactions=10, sent=100)
    assert database["xact_commit"] == 100 and database["xact_commit_per_message"] == 1.0
    assert database["tup_updated_per_message"] == 3.0
    broker = broker_figures(
        {"p.q.a": 1.0}, {"p.q.a": 3.0, "p.q.b": 0.0}, recipients=200, prefix="p"
    )
    assert broker == {"consumed": 2, "consumed_per_recipient": 0.01, "by_queue": {"q.a": 2}}
    backends = backend_figures({1: 1.0, 2: 5.0}, {1: 2.0, 2: 6.0, 3: 0.5}, sent=500)
    assert backends == {
        "backends": 3,
        "backend_cpu_seconds": 2.5,
        "backend_cpu_seconds_per_1000": 5.0,
    }
    assert backend_figures({}, {}, sent=500)["backend_cpu_seconds"] is None
