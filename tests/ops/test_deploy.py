"""The deployment files: docker-compose.yml, deploy/kubernetes/ and the Dockerfile.

There is no container engine or cluster in the test environment, so these are structural
checks: every file parses, the pieces name each other consistently (ports, probes,
labels, config and secret names), and the production config.yaml inside the ConfigMap
is accepted by the gateway's own config parser.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.backends.registry import Router, default_registry
from gateway.config import ConfigError, parse_config
from tests.support.paths import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
#: Placeholders only: kept out of the kustomization so `apply -k` never overwrites the
#: real Secret with them.
SECRET_EXAMPLE = "secret.example.yaml"

PORT = 8080
METRICS_PORT = 9090
PROD_ENV = {
    "DATABASE_URL": "postgresql://u@h/db",
    "REDIS_URL": "redis://h:6379/0",
    "GATEWAY_JWT_SECRET": "x" * 40,
}
POD_LABELS_API = {"app.kubernetes.io/name": "image-gateway", "app.kubernetes.io/component": "api"}


# -- helpers ----------------------------------------------------------------------------


def load_all(path: Path) -> list[Any]:
    """Every document of a (possibly multi-document) YAML file, empty ones dropped."""
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != KUSTOMIZATION.name)


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() for doc in load_all(path)]


def the(kind: str) -> dict[str, Any]:
    found = [obj for obj in k8s_objects() if obj["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE)
    return doc


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def compose_default(value: str) -> str:
    """The default of a compose ``${VAR:-default}`` value (the value itself if plain)."""
    match = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-(.*)\}", value)
    return match.group(1) if match else value


def prod_config_text() -> str:
    return the("ConfigMap")["data"]["config.yaml"]


def dockerfile_final_stage() -> list[str]:
    """The instructions of the last stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def instructions(name: str) -> list[str]:
    prefix = name.upper() + " "
    return [
        ln[len(prefix) :].strip()
        for ln in dockerfile_final_stage()
        if ln.upper().startswith(prefix)
    ]


# -- docker-compose.yml -------------------------------------------------------------------


def test_compose_services() -> None:
    services = compose()["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "gateway", "demo"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("migrate", "gateway", "demo"):
        assert "build" in services[name], f"{name} is built from the Dockerfile"


def test_compose_commands() -> None:
    services = compose()["services"]
    assert command_of(services["migrate"]) == ["migrate"]
    assert command_of(services["gateway"]) == ["serve"]  # not --dev: real secrets
    assert command_of(services["demo"]) == ["demo"]
    assert str(services["migrate"]["restart"]) == "no"
    assert str(services["demo"]["restart"]) == "no"


def test_compose_dependencies() -> None:
    services = compose()["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: body["condition"] for dep, body in services[name]["depends_on"].items()}

    assert conditions("migrate")["postgres"] == "service_healthy"
    gateway = conditions("gateway")
    assert gateway["migrate"] == "service_completed_successfully"
    assert gateway["redis"] == "service_healthy"
    assert conditions("demo")["migrate"] == "service_completed_successfully"


def test_compose_gateway_port_and_healthcheck() -> None:
    gateway = compose()["services"]["gateway"]
    assert [str(p) for p in gateway["ports"]] == [f"{PORT}:{PORT}"]
    test = gateway["healthcheck"]["test"]
    test = test if isinstance(test, str) else " ".join(test)
    assert "/healthz" in test
    assert f":{PORT}/" in test


def test_compose_postgres_and_redis() -> None:
    doc = compose()
    services = doc["services"]
    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    volume = pg["volumes"][0].split(":")[0]
    assert volume in doc["volumes"], "Postgres keeps its data in a named volume"
    redis = services["redis"]
    assert command_of(redis)[-2:] == ["--appendonly", "yes"]
    assert "ping" in " ".join(redis["healthcheck"]["test"])


def test_compose_environment_starts_the_gateway() -> None:
    """The shipped config.yaml with the compose environment (its demo defaults) parses."""
    services = compose()["services"]
    env = {k: compose_default(str(v)) for k, v in services["gateway"]["environment"].items()}
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    for name in ("GATEWAY_JWT_SECRET", "GATEWAY_ADMIN_TOKEN"):
        raw = services["gateway"]["environment"][name]
        assert raw.startswith("${" + name + ":-"), f"{name} can be set from the outside"
    # The JWT secret's demo default is marked as such (and warned about at start-up);
    # the admin API stays off until an admin token of one's own is set.
    assert len(env["GATEWAY_JWT_SECRET"]) >= 40
    assert env["GATEWAY_JWT_SECRET"].startswith("INSECURE-")
    assert env["GATEWAY_ADMIN_TOKEN"] == ""
    config = parse_config(yaml.safe_load((ROOT / "config.yaml").read_text()), env)
    assert config.auth.jwt_secrets == (env["GATEWAY_JWT_SECRET"],)
    assert config.admin.token == ""
    assert config.server.port == PORT
    for name in ("migrate", "demo"):
        other = services[name]["environment"]
        assert other["DATABASE_URL"] == env["DATABASE_URL"]


def test_compose_gateway_outlives_its_shutdown_timeout() -> None:
    gateway = compose()["services"]["gateway"]
    grace = int(str(gateway["stop_grace_period"]).rstrip("s"))
    assert (
        grace
        > parse_config(
            yaml.safe_load((ROOT / "config.yaml").read_text()), {}
        ).server.shutdown_timeout_seconds
    )


# -- Kubernetes: every object -------------------------------------------------------------


def test_every_kubernetes_file_parses_into_named_objects() -> None:
    files = k8s_files()
    assert files
    for path in files:
        docs = load_all(path)
        assert docs, f"{path.name} is empty"
        for obj in docs:
            assert isinstance(obj, dict), path.name
            assert obj.get("apiVersion"), path.name
            assert obj.get("kind"), path.name
            assert obj.get("metadata", {}).get("name"), path.name


def test_one_namespace_throughout() -> None:
    namespace = the("Namespace")["metadata"]["name"]
    assert yaml.safe_load(KUSTOMIZATION.read_text())["namespace"] == namespace
    for obj in k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def test_kustomization_lists_exactly_the_files_present() -> None:
    listed = yaml.safe_load(KUSTOMIZATION.read_text())["resources"]
    assert len(listed) == len(set(listed))
    present = {p.name for p in k8s_files()}
    assert SECRET_EXAMPLE in present
    assert set(listed) == present - {SECRET_EXAMPLE}


# -- Kubernetes: the Deployment -----------------------------------------------------------


def test_deployment_image_args_and_port() -> None:
    deployment = the("Deployment")
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["spec"]["replicas"] == 3
    c = container(deployment)
    assert c["image"] == "image-gateway:latest"
    assert c["args"] == ["serve", "--config", "/etc/gateway/config.yaml"]
    assert c["ports"] == [
        {"name": "http", "containerPort": PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
    ]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))


def test_deployment_probes() -> None:
    c = container(the("Deployment"))
    ready, live = c["readinessProbe"], c["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "http"}
    assert live["httpGet"] == {"path": "/healthz", "port": "http"}
    if "startupProbe" in c:
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    for probe in (ready, live):
        assert 1 <= probe["periodSeconds"] <= 30
        assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    # /readyz checks Postgres then Redis, up to 2 s each.
    assert ready["timeoutSeconds"] >= 4
    assert ready["periodSeconds"] < live["periodSeconds"]


def test_deployment_mounts_the_config_and_the_secret() -> None:
    deployment = the("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/gateway"]
    assert (
        volumes[config_mount["name"]]["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    )
    assert "config.yaml" in the("ConfigMap")["data"]
    secret = load_all(K8S / SECRET_EXAMPLE)[0]
    assert secret["kind"] == "Secret"
    assert c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]


def test_deployment_resources() -> None:
    resources = container(the("Deployment"))["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), section


def test_deployment_security_context() -> None:
    deployment = the("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    sc = container(deployment)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser", 1) != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_termination_grace_outlasts_prestop_and_shutdown_timeout() -> None:
    deployment = the("Deployment")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert 3 <= pre_stop <= 15
    shutdown = parse_config(yaml.safe_load(prod_config_text()), PROD_ENV).server
    assert shutdown.shutdown_timeout_seconds == 30
    assert grace > 30
    assert grace > pre_stop + shutdown.shutdown_timeout_seconds


def test_pods_spread_over_nodes() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    labels = pod_labels(the("Deployment"))
    spread = [
        c
        for c in pod.get("topologySpreadConstraints", [])
        if c["topologyKey"] == "kubernetes.io/hostname"
    ]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    anti_terms = [
        t.get("podAffinityTerm", t)
        for kind in anti.values()
        for t in kind
        if t.get("podAffinityTerm", t)["topologyKey"] == "kubernetes.io/hostname"
    ]
    terms = spread + anti_terms
    assert terms, "a topologySpreadConstraint or podAntiAffinity over kubernetes.io/hostname"
    for term in terms:
        assert selects(term["labelSelector"]["matchLabels"], labels)


# -- Kubernetes: the ConfigMap's config.yaml ------------------------------------------------


def test_configmap_config_parses() -> None:
    config = parse_config(yaml.safe_load(prod_config_text()), PROD_ENV)
    Router(config, default_registry())  # what `gateway check-config` does: backends valid
    assert config.server.host == "0.0.0.0"
    assert config.server.port == PORT
    assert config.database.url == PROD_ENV["DATABASE_URL"]
    assert config.redis.url == PROD_ENV["REDIS_URL"]
    assert config.auth.jwt_secrets == (PROD_ENV["GATEWAY_JWT_SECRET"],)
    assert config.admin.token == ""
    assert set(config.plans) == {"free", "pro"}
    assert config.backends["local"].type == "local"
    # A model maps to a backend name (or, newer, a fallback chain of them).
    for target in config.models.values():
        chain = (target,) if isinstance(target, str) else tuple(target)
        assert chain
        assert set(chain) <= set(config.backends)
    assert config.default_model in config.models


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL", "GATEWAY_JWT_SECRET"])
def test_configmap_config_has_no_fallback_for_secrets(missing: str) -> None:
    """Without a secret the gateway refuses to start rather than trying localhost."""
    env = {k: v for k, v in PROD_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        parse_config(yaml.safe_load(prod_config_text()), env)


def test_configmap_config_takes_a_previous_jwt_secret_for_rotation() -> None:
    env = {**PROD_ENV, "GATEWAY_JWT_SECRET_PREVIOUS": "y" * 40}
    config = parse_config(yaml.safe_load(prod_config_text()), env)
    assert config.auth.jwt_secrets == ("x" * 40, "y" * 40)


def test_secret_example_has_placeholders_for_every_variable() -> None:
    (secret,) = load_all(K8S / SECRET_EXAMPLE)
    data = secret["stringData"]
    assert set(data) == {"DATABASE_URL", "REDIS_URL", "GATEWAY_JWT_SECRET", "GATEWAY_ADMIN_TOKEN"}
    for name, value in data.items():
        assert "EXAMPLE" in value, f"{name} is clearly a placeholder"
    # Even the placeholders are well-formed, so a copy only needs its values changed.
    config = parse_config(yaml.safe_load(prod_config_text()), data)
    assert config.admin.token == data["GATEWAY_ADMIN_TOKEN"]


# -- Kubernetes: Service, HPA, PDB, Job ---------------------------------------------------------


def test_service_targets_the_http_port() -> None:
    service = the("Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert port["targetPort"] == "http"
    assert selects(service["spec"]["selector"], pod_labels(the("Deployment")))


def test_hpa_scales_the_deployment() -> None:
    hpa, deployment = the("HorizontalPodAutoscaler"), the("Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    assert hpa["spec"]["minReplicas"] == 3 == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] == 20
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # Utilization is relative to the request, so there must be one.
    assert "cpu" in container(deployment)["resources"]["requests"]


def test_pdb_selects_the_deployment_pods() -> None:
    pdb = the("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    spec = pdb["spec"]
    assert spec.get("minAvailable") == 2 or spec.get("maxUnavailable") == 1
    assert selects(spec["selector"]["matchLabels"], pod_labels(the("Deployment")))


def test_migration_job() -> None:
    job, deployment = the("Job"), the("Deployment")
    assert job["apiVersion"] == "batch/v1"
    c = container(job)
    assert "migrate" in c["args"]
    assert c["args"][0] == "migrate"
    assert c["image"] == container(deployment)["image"]
    assert c["envFrom"] == container(deployment)["envFrom"]
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/gateway"]
    assert (
        volumes[config_mount["name"]]["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    )
    assert c["args"][1:] == ["--config", "/etc/gateway/config.yaml"]
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False


def test_migration_pod_is_no_gateway_pod() -> None:
    """The Service, PDB and spread constraints must not count the Job's pod."""
    labels = pod_labels(the("Job"))
    assert not selects(the("Service")["spec"]["selector"], labels)
    assert not selects(the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert not selects(the("Deployment")["spec"]["selector"]["matchLabels"], labels)
    assert selects(POD_LABELS_API, pod_labels(the("Deployment")))


# -- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_exposes_the_port() -> None:
    exposed = [p.split("/")[0] for line in instructions("EXPOSE") for p in line.split()]
    assert exposed == [str(PORT)]


def test_dockerfile_healthcheck() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert "/healthz" in check
    assert f":{PORT}/" in check


def test_dockerfile_runs_as_non_root() -> None:
    users = instructions("USER")
    assert users, "the runtime stage sets a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_entrypoint() -> None:
    assert instructions("ENTRYPOINT") == ['["gateway"]']
    assert instructions("CMD") == ['["serve"]']
