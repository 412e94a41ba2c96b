"""docker-compose.yml cannot run here (no Docker engine): check it agrees with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mailroom_common.settings import Settings

from mailroom.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_every_service_has_a_container_running_it() -> None:
    services = _compose()["services"]
    commands = {name: spec["command"] for name, spec in services.items() if "command" in spec}
    assert {c[-1] for c in commands.values()} == set(SERVICES)
    for name, command in commands.items():
        assert command == ["mailroom", "run", name]


def test_environment_names_real_settings() -> None:
    known = {f"MAILROOM_{name.upper()}" for name in Settings.model_fields}
    for name, spec in _compose()["services"].items():
        for variable in spec.get("environment", {}):
            if variable.startswith("MAILROOM_"):
                assert variable in known, f"{name}: {variable} is not a setting"


def test_dependencies_exist_and_have_health_checks() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        for dependency in spec.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert "healthcheck" in services[dependency]


def test_every_mailroom_container_shares_the_secrets_keys() -> None:
    for name, spec in _compose()["services"].items():
        if "command" in spec:
            environment = spec["environment"]
            assert {"MAILROOM_SETTINGS_KEY", "MAILROOM_SIGNING_KEY"} <= set(environment), name
