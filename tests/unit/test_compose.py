"""docker-compose.yml cannot run here (no Docker engine): check it with Debian's
docker-compose (`config`), and against the code: services, commands, settings, ports, the
public URL, the runtime settings its `configure` step writes, the Dovecot mailbox."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from mailroom_common.runtime_settings import GROUPS, MarketingSettings
from mailroom_common.settings import DEVELOPMENT_SETTINGS_KEY, DEVELOPMENT_SIGNING_KEY

from mailroom.services import SERVICES
from tests.support.deployment import ROOT, http_port, ops_port, setting_variables

COMPOSE = ROOT / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _mailroom_services() -> dict[str, Any]:
    """The containers that run `mailroom run SERVICE`."""
    return {
        name: spec
        for name, spec in _services().items()
        if spec.get("command", [])[:2] == ["mailroom", "run"]
    }


def _published(spec: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    pairs = (str(p).split(":") for p in spec.get("ports", []))
    return {int(container): int(host) for host, container in pairs}


def _configure_steps() -> dict[str, dict[str, str]]:
    """The `mailroom settings set GROUP KEY=VALUE ...` commands of the configure step."""
    (script,) = _services()["configure"]["command"]
    steps: dict[str, dict[str, str]] = {}
    for command in script.split("&&"):
        words = shlex.split(command)
        assert words[:3] == ["mailroom", "settings", "set"], command
        group, *assignments = words[3:]
        steps[group] = dict(a.split("=", 1) for a in assignments)
    return steps


def test_every_service_has_a_container_running_it() -> None:
    services = _mailroom_services()
    assert set(services) == set(SERVICES)
    for name, spec in services.items():
        assert spec["command"] == ["mailroom", "run", name]


def test_one_image_for_every_mailroom_container() -> None:
    images = {spec["image"] for spec in _services().values() if "build" in spec}
    assert images == {"mailroom:latest"}
    assert _services()["configure"]["image"] == "mailroom:latest"


def test_environment_names_real_settings() -> None:
    known = setting_variables()
    for name, spec in _services().items():
        for variable in spec.get("environment", {}):
            if variable.startswith("MAILROOM_"):
                assert variable in known, f"{name}: {variable} is not a setting"


def test_no_variable_aborts_a_partial_up() -> None:
    """Every ${VAR} has a development default: `docker compose up postgres` never fails on
    a variable nobody set."""
    text = COMPOSE.read_text()
    references = re.findall(r"\$\{([^}]*)\}", text)
    assert references
    for reference in references:
        assert re.fullmatch(r"[A-Z_]+:-[^}]*", reference), reference


def test_the_default_keys_are_the_public_development_keys() -> None:
    """So production mode refuses them: only a laptop runs on the defaults."""
    text = COMPOSE.read_text()
    assert f"${{MAILROOM_SIGNING_KEY:-{DEVELOPMENT_SIGNING_KEY}}}" in text
    assert f"${{MAILROOM_SETTINGS_KEY:-{DEVELOPMENT_SETTINGS_KEY}}}" in text
    assert "${MAILROOM_ENVIRONMENT:-development}" in text


def test_every_mailroom_container_shares_the_settings() -> None:
    environments = [spec["environment"] for spec in _mailroom_services().values()]
    environments += [_services()[step]["environment"] for step in ("migrate", "configure")]
    assert all(e == environments[0] for e in environments)
    environment = environments[0]
    assert {"MAILROOM_SETTINGS_KEY", "MAILROOM_SIGNING_KEY", "MAILROOM_ADMIN_TOKEN"} <= set(
        environment
    )
    assert environment["MAILROOM_HTTP_PORT"] == str(http_port())
    assert environment["MAILROOM_OPS_PORT"] == str(ops_port())
    assert environment["MAILROOM_MIGRATE_ON_START"] == "false"
    host = urlsplit(environment["MAILROOM_DATABASE_URL"]).hostname
    assert host in _services()
    assert urlsplit(environment["MAILROOM_RABBITMQ_URL"]).hostname in _services()
    config_url = urlsplit(environment["MAILROOM_CONFIG_URL"])
    assert (config_url.hostname, config_url.port) == ("config", http_port())


def test_migrations_run_once_before_every_service() -> None:
    migrate = _services()["migrate"]
    assert migrate["command"] == ["mailroom", "migrate"]
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    # it puts the delivery-limit policy too (and fails when it cannot)
    assert migrate["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    for name, spec in _mailroom_services().items():
        assert spec["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, (
            name
        )


def test_every_service_has_a_health_check_on_the_ops_port() -> None:
    for name, spec in _mailroom_services().items():
        test = spec["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        assert f"http://127.0.0.1:{ops_port()}/healthz" in test[3], name


def test_dependencies_exist_and_have_health_checks() -> None:
    services = _services()
    for name, spec in services.items():
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency


def test_the_whole_stack_starts_without_a_profile_monitoring_with_one() -> None:
    for name, spec in _services().items():
        expected = ["monitoring"] if name in {"prometheus", "grafana"} else None
        assert spec.get("profiles") == expected, name


def test_the_public_url_points_at_the_subscriptions_service() -> None:
    public = _configure_steps()["marketing"]["public_base_url"]
    MarketingSettings(public_base_url=public)  # a URL the config service accepts
    published = _published(_services()["subscriptions"])
    assert urlsplit(public).port == published[http_port()]
    # the default public URL (no configure step yet) reaches subscriptions too, not config
    assert urlsplit(MarketingSettings().public_base_url).port == published[http_port()]
    assert published[http_port()] not in _published(_services()["config"]).values()


def test_the_configure_step_points_mail_at_mailpit_and_dovecot() -> None:
    steps = _configure_steps()
    for group, values in steps.items():
        current = GROUPS[group]().model_dump()
        GROUPS[group].model_validate(current | values)  # real settings, valid values
    services = _services()
    assert steps["smtp"]["host"] == "mailpit" and "mailpit" in services
    assert int(steps["smtp"]["port"]) in _published(services["mailpit"])
    assert steps["bounce"]["host"] == "dovecot" and "dovecot" in services
    assert int(steps["bounce"]["port"]) in _published(services["dovecot"])
    users = (ROOT / "deploy" / "compose" / "dovecot-users").read_text().split()
    assert f"{steps['bounce']['username']}:{{PLAIN}}{steps['bounce']['password']}" in users
    assert set(services["configure"]["depends_on"]) == {"config", "mailpit", "dovecot"}
    # the health check of config is its ops port, up before its admin API: a first call
    # refused must not leave Mailroom unconfigured for good
    assert services["configure"]["restart"] == "on-failure"


def test_mounted_files_exist() -> None:
    for name, spec in _services().items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"


@pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot is not installed")
def test_the_dovecot_config_parses() -> None:
    config = ROOT / "deploy" / "compose" / "dovecot.conf"
    result = subprocess.run(
        ["dovecot", "-n", "-c", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "passwd-file" in result.stdout


# CI: .ci/run installs Debian's docker-compose; only a machine without it skips this.
@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is not installed"
)
def test_docker_compose_accepts_the_file() -> None:
    """With none of its variables set (as on a fresh clone)."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "GRAFANA_"))
    }
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    expected = set(SERVICES) | {
        "postgres",
        "rabbitmq",
        "mailpit",
        "dovecot",
        "migrate",
        "configure",
    }
    assert set(resolved["services"]) == expected | {"prometheus", "grafana"}
    for name in ("prometheus", "grafana"):
        assert resolved["services"][name]["profiles"] == ["monitoring"]
    environment_of = resolved["services"]["subscriptions"]["environment"]
    assert environment_of["MAILROOM_ENVIRONMENT"] == "development"
    assert environment_of["MAILROOM_SIGNING_KEY"] == DEVELOPMENT_SIGNING_KEY
