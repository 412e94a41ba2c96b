"""deploy/prometheus and deploy/grafana: the alert rules, compose's Prometheus and the
dashboard name metrics the code exports, with the labels the scrapes give them."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from mailroom_common.metrics import SMTP_SEND_SECONDS
from mailroom_common.runtime_settings import SmtpAccount

from mailroom.services import SERVICES
from tests.support.deployment import (
    JOB_NAMES,
    ROOT,
    metric_names_in_code,
    ops_port,
)

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "mailroom.json"
METRIC = re.compile(r"\b(mailroom_[a-z0-9_]+)")


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "mailroom-rules.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _dashboard_expressions() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_every_alert_can_be_acted_on() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "MailroomProcessDown",
        "MailroomDeliveryLimitPolicyMissing",
        "MailroomJobMissing",
        "MailroomJobSilent",
        "MailroomBacklogGrowing",
        "MailroomDeadLetters",
        "MailroomSendFailureRatioHigh",
        "MailroomBounceRateHigh",
        "MailroomComplaints",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" in rule, rule["alert"]


def test_the_alerts_use_metrics_the_code_exports() -> None:
    known = metric_names_in_code()
    used = {name for rule in _rules() for name in METRIC.findall(rule["expr"])}
    assert used <= known, f"unknown metrics: {sorted(used - known)}"
    assert used >= {"mailroom_job_last_success_timestamp_seconds", "mailroom_dead_letters_total"}


def test_a_job_without_replicas_is_named_by_the_alert() -> None:
    (rule,) = [r for r in _rules() if r["alert"] == "MailroomJobMissing"]
    assert set(re.findall(r'\{job="([^"]+)"\}', rule["expr"])) == JOB_NAMES


def test_the_bounce_rate_alert_fires_above_five_percent() -> None:
    (rule,) = [r for r in _rules() if r["alert"] == "MailroomBounceRateHigh"]
    assert "> 0.05" in rule["expr"]


def test_compose_prometheus_scrapes_every_ops_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/mailroom-rules.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mailroom"]
    assert job["honor_labels"] is True
    targets = {c["labels"]["service"]: c["targets"] for c in job["static_configs"]}
    assert targets == {name: [f"{name}:{ops_port()}"] for name in SERVICES}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = compose["prometheus"]["volumes"]
    assert "./deploy/prometheus/mailroom-rules.yml:/etc/prometheus/mailroom-rules.yml:ro" in mounts


# CI: .ci/run installs promtool (Debian package prometheus); only a machine without it skips.
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules_and_the_config() -> None:
    for command in (
        ["promtool", "check", "rules", str(PROMETHEUS / "mailroom-rules.yml")],
        ["promtool", "check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml")],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_uses_metrics_the_code_exports() -> None:
    known = metric_names_in_code()
    used = {name for expr in _dashboard_expressions() for name in METRIC.findall(expr)}
    assert used <= known, f"unknown metrics: {sorted(used - known)}"


def test_the_dashboard_shows_what_an_sre_looks_at() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "mailroom"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "Campaigns",
        "SMTP",
        "Queues",
        "Bounces and complaints",
        "Dead letters and jobs",
    ]
    expressions = " ".join(_dashboard_expressions())
    for metric in (
        "mailroom_deliveries_total",
        "mailroom_smtp_send_seconds_bucket",
        "mailroom_smtp_replies_total",
        "mailroom_queue_message_age_seconds",
        "mailroom_bounces_total",
        "mailroom_dead_letters_total",
        "mailroom_job_last_success_timestamp_seconds",
        "mailroom_campaign_items",
    ):
        assert metric in expressions, metric


def test_the_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "prefix"}
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]


def test_grafana_in_compose_is_provisioned_with_the_dashboard() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "mailroom.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert (
        f"./deploy/grafana/mailroom.json:{folder}/mailroom.json:ro" in compose["grafana"]["volumes"]
    )


def test_smtp_latency_buckets_reach_the_longest_timeout() -> None:
    """A slow transaction lands in a bucket of its own, whatever timeout the account has."""
    field = SmtpAccount.model_fields["timeout_seconds"]
    longest = next(m.le for m in field.metadata if getattr(m, "le", None) is not None)
    SMTP_SEND_SECONDS.labels("sent")
    bounds = {
        float(sample.labels["le"])
        for metric in SMTP_SEND_SECONDS.collect()
        for sample in metric.samples
        if sample.name.endswith("_bucket")
    }
    assert max(b for b in bounds if not math.isinf(b)) >= longest >= field.default
