"""What the deployment tests (Kubernetes manifests, compose, monitoring) share: the settings
the code reads, the names fixed by issue 12, and label selectors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mailroom_common.jobs import JOBS
from mailroom_common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# The Job Manager's six jobs (issue 12): the alert MailroomJobMissing names each.
JOB_NAMES = frozenset(job.name for job in JOBS)


def setting_variables() -> set[str]:
    """Every MAILROOM_* variable the code reads."""
    return {f"MAILROOM_{name.upper()}" for name in Settings.model_fields}


def setting_default(variable: str) -> Any:
    """The default of a setting, by its variable."""
    return Settings.model_fields[variable.removeprefix("MAILROOM_").lower()].default


def http_port() -> int:
    port: int = setting_default("MAILROOM_HTTP_PORT")
    return port


def ops_port() -> int:
    port: int = setting_default("MAILROOM_OPS_PORT")
    return port


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def metric_names_in_code() -> set[str]:
    """Names of the metrics the code defines (Counter/Gauge/Histogram("mailroom_...")),
    with the series names a histogram adds."""
    names: set[str] = set()
    for path in [
        *ROOT.glob("libs/*/mailroom_*/**/*.py"),
        *ROOT.glob("services/*/mailroom_*/**/*.py"),
    ]:
        text = path.read_text()
        for kind, name in re.findall(
            r'\b(Counter|Gauge|Histogram|Summary)\(\s*"(mailroom_\w+)"', text
        ):
            names.add(name)
            if kind in ("Histogram", "Summary"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names
