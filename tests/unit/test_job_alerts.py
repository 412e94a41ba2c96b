"""Alert expressions evaluated by Prometheus's own engine (`promtool test rules`) on series
shaped like those the processes export: an idle job is neither missing nor silent (job
alerts), a failing or stuck one is; a second replica of the completion service does not make
the backlog look as if it grew."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from mailroom_common.jobs import JOBS, PROCESS_BOUNCE_EMAIL, Job

from tests.support.deployment import ROOT

# CI: .ci/run installs promtool (Debian package prometheus); only a machine without it skips.
pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")

RULES = ROOT / "deploy" / "prometheus" / "mailroom-rules.yml"
EVAL_AT = "30m"
NOW = 1800  # seconds: promtool's clock starts at 0
RUNNING = "0+60x40"  # a timestamp that keeps up with the clock: it ran (or succeeded) just now
NEVER = "0x40"  # the value each job gauge has from the process's start until it happens
# jobs that run on a timer (a periodic task): not running for 15 minutes is being stuck
TIMED = {
    "generate-campaign-items",
    "mark-campaigns-completed",
    "process-autoresponder-messages",
    "sync-crm-contacts",
}


def _rule(alert: str) -> dict[str, Any]:
    document = yaml.safe_load(RULES.read_text())
    rules: list[dict[str, Any]] = [r for g in document["groups"] for r in g["rules"]]
    (rule,) = [r for r in rules if r.get("alert") == alert]
    return rule


def _expr(alert: str) -> str:
    expr: str = _rule(alert)["expr"]
    return expr


def _idle(job: Job) -> dict[str, str]:
    """One replica of a healthy job with nothing to do: a timed job runs and succeeds, a job
    fed by messages (or the bounce job without a mailbox) has not run since its start."""
    timed = job.name in TIMED
    return {"run": RUNNING if timed else NEVER, "success": RUNNING if timed else NEVER}


def _series(jobs: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    series = []
    for name, values in jobs.items():
        for gauge in ("run", "success", "error"):
            metric = f"mailroom_job_last_{gauge}_timestamp_seconds"
            series.append(
                {
                    "series": f'{metric}{{job="{name}", instance="pod-1:8081"}}',
                    "values": values.get(gauge, NEVER),
                }
            )
    return series


def _check(
    tmp_path: Path,
    jobs: dict[str, dict[str, str]],
    alert: str,
    expected: list[dict[str, Any]],
    series: list[dict[str, str]] | None = None,
) -> None:
    """The alert's expression at 30 minutes gives exactly `expected` (promtool says what it
    got otherwise)."""
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _series(jobs) if series is None else series,
                "promql_expr_test": [
                    {"expr": _expr(alert), "eval_time": EVAL_AT, "exp_samples": expected}
                ],
            }
        ],
    }
    _promtool_passes(tmp_path / "test.yml", test)


def _promtool_passes(path: Path, test: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _all_idle() -> dict[str, dict[str, str]]:
    return {job.name: _idle(job) for job in JOBS}


def test_an_idle_deployment_raises_no_job_alert(tmp_path: Path) -> None:
    """No campaign for 30 minutes: the sender and the renderer have not run since their start,
    and their series exist all the same (0: not yet)."""
    _check(tmp_path, _all_idle(), "MailroomJobMissing", [])
    _check(tmp_path, _all_idle(), "MailroomJobSilent", [])


def test_jobs_that_worked_then_went_idle_are_not_silent(tmp_path: Path) -> None:
    jobs = _all_idle()
    for name in ("process-outbound-email", "process-campaign-messages"):
        # a campaign sent during the first minutes, nothing since; one retried send on the way
        jobs[name] = {"run": "0+60x5 360x35", "success": "0+60x5 360x35", "error": "0 120x39"}
    _check(tmp_path, jobs, "MailroomJobSilent", [])


def test_a_job_without_a_replica_is_missing(tmp_path: Path) -> None:
    jobs = _all_idle()
    del jobs["process-outbound-email"]
    _check(
        tmp_path,
        jobs,
        "MailroomJobMissing",
        [{"labels": '{job="process-outbound-email"}', "value": 1}],
    )


def test_a_job_whose_runs_keep_failing_is_silent(tmp_path: Path) -> None:
    jobs = _all_idle()
    # the bounce mailbox refuses the login since the start: every poll fails
    jobs[PROCESS_BOUNCE_EMAIL] = {"run": RUNNING, "success": NEVER, "error": RUNNING}
    _check(
        tmp_path,
        jobs,
        "MailroomJobSilent",
        [{"labels": f'{{job="{PROCESS_BOUNCE_EMAIL}"}}', "value": NOW}],
    )


def test_a_timed_job_that_stopped_running_is_silent(tmp_path: Path) -> None:
    jobs = _all_idle()
    # ran and succeeded at 1 minute, then its loop hung
    jobs["generate-campaign-items"] = {"run": "0 60x39", "success": "0 60x39"}
    _check(
        tmp_path,
        jobs,
        "MailroomJobSilent",
        [{"labels": '{job="generate-campaign-items"}', "value": NOW - 60}],
    )


def test_the_timed_jobs_are_those_with_a_sweep() -> None:
    """The jobs the stuck-loop part of MailroomJobSilent names run on a timer: those with
    something to run on demand, but the bounce job (its poll interval may be a day)."""
    assert {j.name for j in JOBS if j.on_demand is not None} - {PROCESS_BOUNCE_EMAIL} == TIMED
    assert "|".join(sorted(TIMED)) in _expr("MailroomJobSilent")


def _open_items(instance: str, values: str) -> list[dict[str, str]]:
    return [
        {
            "series": f'mailroom_campaign_items{{status="{status}", instance="{instance}"}}',
            "values": values,
        }
        for status in ("pending", "queued")
    ]


def test_a_second_completion_replica_does_not_grow_the_backlog(tmp_path: Path) -> None:
    """Each completion replica exports the same counts: a rollout (a surge pod for a while)
    or a second replica is not a backlog that grows."""
    steady = _open_items("completion-1:8081", "500x40")
    surge = _open_items("completion-2:8081", "_x10 500x30")
    _check(tmp_path, {}, "MailroomBacklogGrowing", [], series=steady + surge)


def test_open_items_that_keep_growing_are_a_backlog(tmp_path: Path) -> None:
    growing = _open_items("completion-1:8081", "100+10x40")
    _check(tmp_path, {}, "MailroomBacklogGrowing", [{"labels": "{}", "value": 800}], series=growing)


# --- the delivery-limit policy: an alert with its `for` and annotations, as Prometheus fires it


def _rendered(template: str, labels: dict[str, str]) -> str:
    """The annotation as Prometheus renders it for `labels` (it only uses $labels.NAME)."""
    for name, value in labels.items():
        template = template.replace(f"{{{{ $labels.{name} }}}}", value)
    assert "{{" not in template, template
    return template


def _check_alert(
    tmp_path: Path,
    series: list[dict[str, str]],
    alert: str,
    expected: dict[str, list[dict[str, str]]],
) -> None:
    """The alert fires at each eval time for exactly the series whose labels are listed."""
    rule = _rule(alert)
    cases = [
        {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": {**labels, **rule["labels"]},
                    "exp_annotations": {
                        key: _rendered(text, labels) for key, text in rule["annotations"].items()
                    },
                }
                for labels in firing
            ],
        }
        for at, firing in expected.items()
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}],
    }
    _promtool_passes(tmp_path / "alert-test.yml", test)


def _policy_applied(instance: str, values: str) -> dict[str, str]:
    labels = f'job="mailroom", service="outbound_sender", instance="{instance}"'
    return {"series": f"mailroom_delivery_limit_policy_applied{{{labels}}}", "values": values}


def test_a_process_without_the_delivery_limit_policy_for_15_minutes_alerts(
    tmp_path: Path,
) -> None:
    """pod-1 never puts the policy (a wrong MAILROOM_RABBITMQ_MANAGEMENT_URL); pod-2 started
    during a management outage of 10 minutes and put it in the background; pod-3 put it at
    once: only pod-1 alerts, and only once it has been 0 for 15 minutes."""
    series = [
        _policy_applied("pod-1:8081", "0x40"),
        _policy_applied("pod-2:8081", "0x10 1x30"),
        _policy_applied("pod-3:8081", "1x40"),
    ]
    pod_1 = {"job": "mailroom", "service": "outbound_sender", "instance": "pod-1:8081"}
    _check_alert(
        tmp_path,
        series,
        "MailroomDeliveryLimitPolicyMissing",
        {"14m": [], "16m": [pod_1], "40m": [pod_1]},
    )
