"""deploy/k8s: both overlays rendered by the real kustomize (`kubectl kustomize`), the core
objects validated against the Kubernetes schemas (kubernetes-validate), the KEDA and
Prometheus-operator objects checked by shape, and everything cross-checked with the code:
services, commands, labels, ports, settings, queue names, tables."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from mailroom_common.broker import Topology
from mailroom_common.runtime_settings import GROUPS
from mailroom_common.settings import GENERATE_KEY, MIN_KEY_LENGTH, Settings
from pydantic import SecretStr

from mailroom.services import SERVICES
from tests.support.deployment import (
    ROOT,
    http_port,
    matches,
    ops_port,
    setting_variables,
)

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["dev", "prod"]
KUBERNETES_VERSION = "1.32.0"
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
PUBLIC_SERVICES = {"subscriptions", "config", "bounce_processor"}
SECRET_NAME = "mailroom-secrets"
COMPONENT = "app.kubernetes.io/component"

Manifest = dict[str, Any]

# CI: .ci/run installs kubectl when the machine lacks it; only then could this skip.
needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (which ships kustomize) is not installed"
)
pytestmark = needs_kubectl


@functools.cache
def _render(overlay: str) -> tuple[Manifest, ...]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[Manifest, ...]:
    return _render(request.param)


def _of_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def _one(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [m for m in _of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _k8s_name(service: str) -> str:
    return "mailroom-" + service.replace("_", "-")


def _deployments(manifests: tuple[Manifest, ...]) -> dict[str, Manifest]:
    """The Deployments by the Mailroom service they run (their component label)."""
    return {d["metadata"]["labels"][COMPONENT]: d for d in _of_kind(manifests, "Deployment")}


def _container(workload: Manifest) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _settings_config_map(manifests: tuple[Manifest, ...]) -> dict[str, str]:
    maps = [
        m
        for m in _of_kind(manifests, "ConfigMap")
        if m["metadata"]["name"].startswith("mailroom-settings")
    ]
    assert len(maps) == 1
    data: dict[str, str] = maps[0]["data"]
    return data


def _example_secret() -> dict[str, str]:
    secret = yaml.safe_load((K8S / "overlays" / "dev" / "secret.example.yaml").read_text())
    data: dict[str, str] = secret["stringData"]
    return data


# --- rendering and schemas --------------------------------------------------------------


def test_core_objects_are_valid_kubernetes(rendered: tuple[Manifest, ...]) -> None:
    core = [m for m in rendered if m["kind"] not in CRD_KINDS]
    assert {m["kind"] for m in core} >= {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for manifest in core:
        # strict: an unknown (misspelt) field is an error, not silently dropped
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_example_secret_is_valid_and_holds_placeholders_only() -> None:
    secret = yaml.safe_load((K8S / "overlays" / "dev" / "secret.example.yaml").read_text())
    kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)
    assert secret["metadata"]["name"] == SECRET_NAME
    for variable, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{variable} is not a placeholder"
    for key in ("MAILROOM_SIGNING_KEY", "MAILROOM_SETTINGS_KEY"):
        # too short on purpose: a production service refuses to start with it
        assert len(secret["stringData"][key]) < MIN_KEY_LENGTH
    assert (
        GENERATE_KEY.split("'")[1] in (K8S / "overlays" / "dev" / "secret.example.yaml").read_text()
    )


def test_only_the_dev_overlay_carries_the_example_secret() -> None:
    assert [s["metadata"]["name"] for s in _of_kind(_render("dev"), "Secret")] == [SECRET_NAME]
    assert _of_kind(_render("prod"), "Secret") == []


def test_every_object_is_in_the_overlay_namespace() -> None:
    for overlay, namespace in (("dev", "mailroom-dev"), ("prod", "mailroom")):
        for manifest in _render(overlay):
            if manifest["kind"] == "Namespace":
                assert manifest["metadata"]["name"] == namespace
            else:
                assert manifest["metadata"]["namespace"] == namespace, manifest["metadata"]["name"]


# --- the services and their Deployments -------------------------------------------------


def test_every_service_has_a_deployment_running_it(rendered: tuple[Manifest, ...]) -> None:
    deployments = _deployments(rendered)
    assert set(deployments) == set(SERVICES)
    images = set()
    for service, deployment in deployments.items():
        assert deployment["metadata"]["name"] == _k8s_name(service)
        container = _container(deployment)
        assert container["command"] == ["mailroom", "run", service]
        images.add(container["image"])
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(deployment["spec"]["selector"], pod_labels)
        assert pod_labels[COMPONENT] == service
        assert pod_labels["app.kubernetes.io/part-of"] == "mailroom"
    # one image for every service, named mailroom (a registry path may come before it)
    assert len(images) == 1
    (image,) = images
    assert image.rsplit("/", 1)[-1].split(":")[0] == "mailroom"


def test_container_ports_are_the_settings_defaults(rendered: tuple[Manifest, ...]) -> None:
    config = _settings_config_map(rendered)
    assert int(config["MAILROOM_HTTP_PORT"]) == http_port()
    assert int(config["MAILROOM_OPS_PORT"]) == ops_port()
    for service, deployment in _deployments(rendered).items():
        ports = {p["name"]: p["containerPort"] for p in _container(deployment)["ports"]}
        expected = {"ops": ops_port()} | (
            {"http": http_port()} if service in PUBLIC_SERVICES else {}
        )
        assert ports == expected, service


def test_each_service_has_a_service_object_on_its_ports(rendered: tuple[Manifest, ...]) -> None:
    deployments = _deployments(rendered)
    services = {s["metadata"]["labels"][COMPONENT]: s for s in _of_kind(rendered, "Service")}
    assert set(services) == set(SERVICES)
    for name, service in services.items():
        assert service["metadata"]["name"] == _k8s_name(name)
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
        for other, deployment in deployments.items():
            if other != name:
                labels = deployment["spec"]["template"]["metadata"]["labels"]
                assert not matches({"matchLabels": service["spec"]["selector"]}, labels)
        container_ports = {p["name"] for p in _container(deployments[name])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
            assert port["port"] == {"http": http_port(), "ops": ops_port()}[port["name"]]


def test_probes_on_the_ops_port(rendered: tuple[Manifest, ...]) -> None:
    for service, deployment in _deployments(rendered).items():
        container = _container(deployment)
        paths = {
            probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert paths == {
            "startupProbe": ("/healthz", "ops"),
            "livenessProbe": ("/healthz", "ops"),
            "readinessProbe": ("/readyz", "ops"),
        }, service


def test_termination_grace_outlasts_the_drain(rendered: tuple[Manifest, ...]) -> None:
    drain = float(_settings_config_map(rendered)["MAILROOM_GRACEFUL_TIMEOUT_SECONDS"])
    for deployment in _deployments(rendered).values():
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain


def _assert_locked_down(workload: Manifest) -> None:
    pod = workload["spec"]["template"]["spec"]
    name = workload["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] != 0, name
    assert pod["automountServiceAccountToken"] is False, name
    container = _container(workload)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True, name
    assert context["allowPrivilegeEscalation"] is False, name
    assert context["capabilities"]["drop"] == ["ALL"], name
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], name
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]), name
    assert "memory" in resources["limits"], name


def test_every_pod_runs_locked_down(rendered: tuple[Manifest, ...]) -> None:
    for workload in [*_of_kind(rendered, "Deployment"), *_of_kind(rendered, "Job")]:
        _assert_locked_down(workload)


def test_every_pod_reads_the_settings_and_the_secret(rendered: tuple[Manifest, ...]) -> None:
    (config_map,) = [
        m
        for m in _of_kind(rendered, "ConfigMap")
        if m["metadata"]["name"].startswith("mailroom-settings")
    ]
    for workload in [*_of_kind(rendered, "Deployment"), *_of_kind(rendered, "Job")]:
        sources = _container(workload)["envFrom"]
        assert {"configMapRef": {"name": config_map["metadata"]["name"]}} in sources
        assert {"secretRef": {"name": SECRET_NAME}} in sources


# --- settings ---------------------------------------------------------------------------


def test_every_variable_is_a_setting(rendered: tuple[Manifest, ...]) -> None:
    known = setting_variables()
    variables = set(_settings_config_map(rendered)) | set(_example_secret())
    for workload in [*_of_kind(rendered, "Deployment"), *_of_kind(rendered, "Job")]:
        variables |= {e["name"] for e in _container(workload).get("env", [])}
    assert {v for v in variables if v.startswith("MAILROOM_")} == variables
    assert variables <= known, f"not settings: {sorted(variables - known)}"


def test_secrets_stay_out_of_the_config_map(rendered: tuple[Manifest, ...]) -> None:
    secret_fields = {
        f"MAILROOM_{name.upper()}": field.default
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
    }
    # the URLs carry the database's and the broker's passwords
    secret_fields |= {"MAILROOM_DATABASE_URL": "", "MAILROOM_RABBITMQ_URL": ""}
    assert not set(secret_fields) & set(_settings_config_map(rendered))
    # the optional ones (MAILROOM_SIGNING_KEY_PREVIOUS, during a key rotation) may be absent
    required = {variable for variable, default in secret_fields.items() if default is not None}
    assert required <= set(_example_secret())


def test_services_do_not_migrate_on_start(rendered: tuple[Manifest, ...]) -> None:
    assert _settings_config_map(rendered)["MAILROOM_MIGRATE_ON_START"] == "false"


def test_the_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each overlay's ConfigMap, with real keys in the Secret, is read by Settings without
    complaint (development mode in dev, production in prod)."""
    for overlay, mode in (("dev", "development"), ("prod", "production")):
        environment = _settings_config_map(_render(overlay)) | _example_secret()
        environment |= {
            "MAILROOM_SIGNING_KEY": "k" * MIN_KEY_LENGTH + "signing",
            "MAILROOM_SETTINGS_KEY": "k" * MIN_KEY_LENGTH + "settings",
        }
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)
        settings = Settings()
        assert settings.environment == mode
        assert settings.http_port == int(environment["MAILROOM_HTTP_PORT"])


def test_the_example_keys_are_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in (_settings_config_map(_render("prod")) | _example_secret()).items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match="MAILROOM_SIGNING_KEY"):
        Settings()


def test_the_cli_finds_the_config_service(rendered: tuple[Manifest, ...]) -> None:
    url = _settings_config_map(rendered)["MAILROOM_CONFIG_URL"]
    assert url == f"http://{_k8s_name('config')}:{http_port()}"


# --- the migration Job --------------------------------------------------------------------


def test_the_migration_job_runs_mailroom_migrate(rendered: tuple[Manifest, ...]) -> None:
    job = _one(rendered, "Job", "mailroom-migrate")
    container = _container(job)
    assert container["command"] == ["mailroom", "migrate"]
    assert container["image"] == _container(_deployments(rendered)["config"])["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


# --- disruption budgets and network policies ---------------------------------------------


def test_each_deployment_has_its_own_disruption_budget(rendered: tuple[Manifest, ...]) -> None:
    deployments = _deployments(rendered)
    budgets = _of_kind(rendered, "PodDisruptionBudget")
    for service, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if matches(b["spec"]["selector"], labels)]
        assert len(covering) == 1, service
        assert covering[0]["spec"] == {**covering[0]["spec"], "maxUnavailable": 1}
    assert len(budgets) == len(deployments)


def _policies_for(rendered: tuple[Manifest, ...], labels: dict[str, str]) -> list[Manifest]:
    return [
        p for p in _of_kind(rendered, "NetworkPolicy") if matches(p["spec"]["podSelector"], labels)
    ]


def _ingress_ports(policies: list[Manifest]) -> dict[str, list[Any]]:
    """Ingress port -> the `from` of each rule that opens it ([] = from anywhere)."""
    opened: dict[str, list[Any]] = {}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                opened.setdefault(port["port"], []).append(rule.get("from", []))
    return opened


def _egress_ports(policies: list[Manifest]) -> set[int]:
    return {
        port["port"]
        for policy in policies
        for rule in policy["spec"].get("egress", [])
        for port in rule["ports"]
        if "to" not in rule
    }


def test_network_policies_deny_by_default(rendered: tuple[Manifest, ...]) -> None:
    deny = _one(rendered, "NetworkPolicy", "mailroom-default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for workload in [*_of_kind(rendered, "Deployment"), *_of_kind(rendered, "Job")]:
        assert matches(
            deny["spec"]["podSelector"], workload["spec"]["template"]["metadata"]["labels"]
        )


def test_ingress_only_to_public_pages_and_ops_from_monitoring(
    rendered: tuple[Manifest, ...],
) -> None:
    monitoring = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    for service, deployment in _deployments(rendered).items():
        opened = _ingress_ports(
            _policies_for(rendered, deployment["spec"]["template"]["metadata"]["labels"])
        )
        assert opened.get("ops") == [monitoring], service
        if service in PUBLIC_SERVICES:
            assert opened.get("http") == [[]], service
        assert set(opened) <= {"ops", "http"} and ("http" in opened) == (service in PUBLIC_SERVICES)


def test_egress_to_dns_database_broker_and_mail(rendered: tuple[Manifest, ...]) -> None:
    database = 5432
    broker = 5672
    management = 15672  # the delivery-limit policy: the migrate Job, every process at start
    smtp = {25, 465, 587}
    imap = {143, 993}
    for service, deployment in _deployments(rendered).items():
        ports = _egress_ports(
            _policies_for(rendered, deployment["spec"]["template"]["metadata"]["labels"])
        )
        assert {53, database, broker, management} <= ports, service
        assert (smtp <= ports) == (service in {"outbound_sender", "config"}), service
        assert (imap <= ports) == (service in {"bounce_processor", "config"}), service
        assert (443 in ports) == (service == "bounce_processor"), service  # SNS
    job = _one(rendered, "Job", "mailroom-migrate")
    assert {53, database} <= _egress_ports(
        _policies_for(rendered, job["spec"]["template"]["metadata"]["labels"])
    )


# --- KEDA -------------------------------------------------------------------------------


def _scaled_objects(rendered: tuple[Manifest, ...]) -> dict[str, Manifest]:
    deployments = {d["metadata"]["name"]: s for s, d in _deployments(rendered).items()}
    scaled = {}
    for scaled_object in _of_kind(rendered, "ScaledObject"):
        target = scaled_object["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"{scaled_object['metadata']['name']} scales unknown {target}"
        scaled[deployments[target]] = scaled_object
    return scaled


def test_scaled_objects_have_keda_shape(rendered: tuple[Manifest, ...]) -> None:
    secret = set(_example_secret())
    for service, scaled_object in _scaled_objects(rendered).items():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        assert set(spec) <= {
            "scaleTargetRef",
            "minReplicaCount",
            "maxReplicaCount",
            "pollingInterval",
            "cooldownPeriod",
            "triggers",
            "advanced",
            "fallback",
            "idleReplicaCount",
        }
        assert set(spec["scaleTargetRef"]) == {"name"}
        # every job keeps a live replica for its sweeps and heartbeats
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], service
        assert "replicas" not in _deployments(rendered)[service]["spec"], (
            f"{service}: KEDA owns replicas"
        )
        for trigger in spec["triggers"]:
            metadata = trigger["metadata"]
            assert all(isinstance(v, str) for v in metadata.values()), (
                "KEDA metadata values are strings"
            )
            if trigger["type"] == "rabbitmq":
                assert set(metadata) == {"protocol", "mode", "value", "queueName", "hostFromEnv"}
                assert metadata["protocol"] == "amqp" and metadata["mode"] == "QueueLength"
                assert float(metadata["value"]) > 0
                assert (
                    metadata["hostFromEnv"] == "MAILROOM_RABBITMQ_URL"
                    and metadata["hostFromEnv"] in secret
                )
            elif trigger["type"] == "postgresql":
                assert set(metadata) == {
                    "connectionFromEnv",
                    "query",
                    "targetQueryValue",
                    "activationTargetQueryValue",
                }
                assert (
                    metadata["connectionFromEnv"] == "MAILROOM_DATABASE_URL"
                    and metadata["connectionFromEnv"] in secret
                )
                assert float(metadata["targetQueryValue"]) > 0
                assert metadata["query"].lstrip().upper().startswith("SELECT COUNT(*)")
            else:
                pytest.fail(f"{service}: unexpected trigger {trigger['type']}")


def test_scaled_queues_are_the_queues_each_consumer_reads(rendered: tuple[Manifest, ...]) -> None:
    prefix = _settings_config_map(rendered)["MAILROOM_QUEUE_PREFIX"]
    topology = Topology(prefix=prefix, delivery_limit=5, retry_delays_ms=())
    work_queues = {queue.name for queue, _, _ in topology.bindings()}
    scaled = _scaled_objects(rendered)
    consumers = {name.split(".")[1] for name in work_queues}
    # every service that consumes a work queue scales on it, and on each of its queues
    assert consumers == set(scaled)
    for service, scaled_object in scaled.items():
        queues = {
            t["metadata"]["queueName"]
            for t in scaled_object["spec"]["triggers"]
            if t["type"] == "rabbitmq"
        }
        assert queues == {q for q in work_queues if q.startswith(f"{prefix}.{service}.")}, service


def test_table_backlogs_scale_the_generator_and_the_autoresponder(
    rendered: tuple[Manifest, ...],
) -> None:
    migrations = "\n".join(
        p.read_text() for p in sorted(ROOT.glob("libs/common/mailroom_common/migrations/*.sql"))
    )
    tables = set(re.findall(r"CREATE TABLE (\w+)", migrations))
    scaled = _scaled_objects(rendered)
    by_table = {}
    for service, scaled_object in scaled.items():
        for trigger in scaled_object["spec"]["triggers"]:
            if trigger["type"] == "postgresql":
                (table,) = re.findall(r"\bFROM (\w+)", trigger["metadata"]["query"])
                assert table in tables, f"{service}: no table {table}"
                by_table[service] = table
    assert by_table == {"item_generator": "campaigns", "autoresponder": "autoresponder_items"}


# --- Prometheus operator ----------------------------------------------------------------


def test_the_service_monitor_scrapes_every_ops_port(rendered: tuple[Manifest, ...]) -> None:
    (monitor,) = _of_kind(rendered, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= {
        "jobLabel",
        "selector",
        "endpoints",
        "namespaceSelector",
        "targetLabels",
        "podTargetLabels",
    }
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "ops" and endpoint["path"] == "/metrics"
    # the Job Manager's metric has a label `job` that must survive the scrape
    assert endpoint["honorLabels"] is True
    selected = [
        s
        for s in _of_kind(rendered, "Service")
        if matches(spec["selector"], s["metadata"]["labels"])
    ]
    assert {s["metadata"]["labels"][COMPONENT] for s in selected} == set(SERVICES)
    for service in selected:
        assert "ops" in {p["name"] for p in service["spec"]["ports"]}
        # job="mailroom", as in compose's prometheus.yml and the alert rules
        assert service["metadata"]["labels"][spec["jobLabel"]] == "mailroom"
    (relabel,) = endpoint["relabelings"]
    assert relabel == {
        "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_component"],
        "targetLabel": "service",
    }


def test_the_prometheus_rule_is_the_rules_file(rendered: tuple[Manifest, ...]) -> None:
    (rule,) = _of_kind(rendered, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    rules_file = yaml.safe_load((ROOT / "deploy" / "prometheus" / "mailroom-rules.yml").read_text())
    assert rule["spec"] == rules_file


def test_runtime_groups_are_known() -> None:
    """The README's and the secret example's advice names real settings groups."""
    readme = (K8S / "README.md").read_text()
    for group in re.findall(r"mailroom settings set (\w+)", readme):
        assert group in GROUPS
