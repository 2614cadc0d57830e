"""What a release needs from the deployment files: one image for the Deployment and the
migration Job, a Job of its own per release, the same user everywhere, the journal as
the one thing on disk, the config mounted from the host, and every environment variable
the gateway reads listed in ``.env.example`` and passed through by docker compose."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import parse_config
from tests.support.paths import ROOT
from tests.support.tools import tool

K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY_README = ROOT / "deploy" / "README.md"
CONFIG_IN_CONTAINER = "/etc/gateway/config.yaml"
PROD_ENV = {
    "DATABASE_URL": "postgresql://u@h/db",
    "REDIS_URL": "redis://h:6379/0",
    "GATEWAY_JWT_SECRET": "x" * 40,
}
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+_?")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_CREDENTIAL = re.compile(r"\b\w+_env:\s*\"?([A-Z][A-Z0-9_]+)")


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def objects(docs: list[Any], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def the(docs: list[Any], kind: str) -> dict[str, Any]:
    (found,) = objects(docs, kind)
    return found


def manifests() -> list[Any]:
    paths = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for path in paths for doc in load_all(path)]


def image_of(workload: dict[str, Any]) -> str:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    image: str = container["image"]
    return image


def prod_config_text() -> str:
    text: str = the(manifests(), "ConfigMap")["data"]["config.yaml"]
    return text


# -- Kubernetes: one image per release, a Job per release -----------------------------------


def kustomize_version(kubectl: str) -> tuple[int, ...]:
    out = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"Kustomize Version: v(\d+)\.(\d+)", out)
    return tuple(int(part) for part in match.groups()) if match else (0,)


def render(kubectl: str, directory: Path) -> list[Any]:
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def release(tmp_path: Path, name: str, tag: str) -> Path:
    """A copy of deploy/kubernetes set to an image, as `kustomize edit set image` does."""
    directory = tmp_path / tag
    shutil.copytree(K8S, directory)
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    (image,) = kustomization["images"]
    image.update(newName=name, newTag=tag)
    path.write_text(yaml.safe_dump(kustomization))
    return directory


def test_the_rendered_release_runs_one_image_and_a_job_of_its_own(tmp_path: Path):
    kubectl = tool("kubectl")
    if kustomize_version(kubectl) < (4, 1):
        pytest.skip("this kubectl's kustomize is older than 4.1 (no replacements)")
    names = set()
    for tag in ("1.2.3", "1.3.0"):
        docs = render(kubectl, release(tmp_path, "registry.example.com/image-gateway", tag))
        deployment, job = the(docs, "Deployment"), the(docs, "Job")
        assert image_of(deployment) == f"registry.example.com/image-gateway:{tag}"
        assert image_of(job) == image_of(deployment)
        assert job["metadata"]["name"] == f"image-gateway-migrate-{tag}"
        names.add(job["metadata"]["name"])
    assert len(names) == 2  # a Job cannot be changed: each release creates its own

    shipped = render(kubectl, K8S)
    assert image_of(the(shipped, "Deployment")) == "image-gateway:latest"
    assert the(shipped, "Job")["metadata"]["name"] == "image-gateway-migrate-latest"


def test_the_kustomization_sets_the_image_of_both_workloads():
    """Without kubectl: the ``images:`` entry names the image both containers use, and
    the Job's name is the replacement's target."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    docs = manifests()
    deployment, job = the(docs, "Deployment"), the(docs, "Job")
    for workload in (deployment, job):
        assert image_of(workload).split(":")[0] == image["name"]
    assert image_of(job) == image_of(deployment) == f"{image['newName']}:{image['newTag']}"
    (replacement,) = kustomization["replacements"]
    assert replacement["source"]["kind"] == "Deployment"
    (target,) = replacement["targets"]
    assert target["select"] == {"kind": "Job", "name": job["metadata"]["name"]}
    assert target["fieldPaths"] == ["metadata.name"]
    assert job["metadata"]["name"].endswith(f"-{image['newTag']}")


def test_the_upgrade_runs_the_job_through_the_kustomization():
    """deploy/README.md's steps apply the Job only with -k (a plain -f would run the
    manifest's own image, not the release's)."""
    text = DEPLOY_README.read_text()
    assert "kubectl apply -k deploy/kubernetes -l 'app.kubernetes.io/component!=api'" in text
    assert "migration-job.yaml" not in text
    for obj in manifests():
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if obj["kind"] in ("Job", "ConfigMap", "Namespace"):
            assert component != "api", obj["kind"]
        elif obj["kind"] != "Secret":
            assert component == "api", obj["kind"]  # applied after the migrations


# -- the same user everywhere, the journal the one thing on disk ----------------------------


def test_one_user_id_in_the_dockerfile_the_manifests_and_the_docs():
    text = DOCKERFILE.read_text()
    (uid,) = re.findall(r"useradd [^\n]*--uid (\d+)", text)
    assert re.findall(r"groupadd [^\n]*--gid (\d+)", text) == [uid]
    assert re.findall(r"^USER (\S+)$", text, re.MULTILINE) == [f"{uid}:{uid}"]
    for kind in ("Deployment", "Job"):
        context = the(manifests(), kind)["spec"]["template"]["spec"]["securityContext"]
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (uid, uid), kind
    docs = DEPLOY_README.read_text()
    assert set(re.findall(r"\bUID (\d+)", docs)) == {uid}


def test_the_journal_is_the_one_thing_written_to_disk():
    config = parse_config(yaml.safe_load(prod_config_text()), PROD_ENV)
    assert not config.storage.url.startswith("file://")  # images: a store, not the disk
    deployment = the(manifests(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    journal = mounts[config.usage.journal_dir]
    assert "emptyDir" in volumes[journal]
    writable = {path for path, name in mounts.items() if "emptyDir" in volumes[name]}
    assert writable == {config.usage.journal_dir, "/tmp"}  # noqa: S108 - the pod's own
    text = DEPLOY_README.read_text()
    assert f"`usage.journal_dir: {config.usage.journal_dir}`" in text
    assert "The one thing the gateway writes to disk is its reservation journal" in text


def test_metrics_are_on_their_own_port_off_the_service():
    docs = manifests()
    config = parse_config(yaml.safe_load(prod_config_text()), PROD_ENV)
    (container,) = the(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": config.server.port, "metrics": config.server.metrics_port}
    assert [port["targetPort"] for port in the(docs, "Service")["spec"]["ports"]] == ["http"]


# -- Docker Compose: the config from the host, the variables passed through ------------------


def compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE)
    return doc


def built_services() -> dict[str, dict[str, Any]]:
    return {name: body for name, body in compose()["services"].items() if "build" in body}


def test_compose_mounts_config_yaml_from_the_host():
    assert built_services().keys() == {"migrate", "gateway", "demo"}
    for name, service in built_services().items():
        assert f"./config.yaml:{CONFIG_IN_CONTAINER}:ro" in service["volumes"], name
        assert service["environment"]["GATEWAY_CONFIG"] == CONFIG_IN_CONTAINER, name
    # ...and none is built into the image.
    assert not re.search(r"^COPY .*config\.yaml", DOCKERFILE.read_text(), re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "config.yaml"} <= set(ignored)


def env_refs(text: str) -> set[str]:
    """The variables ``text`` names as ``${NAME}`` (not the docs' placeholder ``VAR``)."""
    return set(_ENV_REF.findall(text)) - {"VAR"}


def documented_credentials() -> set[str]:
    """The credential variables the docs' and the shipped config's examples name."""
    text = (ROOT / "README.md").read_text() + (ROOT / "config.yaml").read_text()
    return set(_CREDENTIAL.findall(text)) - {"VAR"}


def test_compose_passes_the_secrets_and_the_backends_keys_through():
    environment = compose()["services"]["gateway"]["environment"]
    config_refs = env_refs((ROOT / "config.yaml").read_text())
    wanted = documented_credentials() | config_refs
    assert {"OPENAI_API_KEY", "REPLICATE_API_TOKEN", "GEMINI_API_KEY"} <= wanted
    for name in sorted(wanted - {"DATABASE_URL", "REDIS_URL", "GATEWAY_DATA_DIR"}):
        assert name in environment, f"{name} is not passed to the gateway"
        assert str(environment[name]).startswith("${" + name), f"{name}: from .env"


# -- .env.example: every variable the gateway reads -------------------------------------------


def read_by_the_code() -> set[str]:
    """Variable names in the gateway's functions that read the environment (and in the
    module constants those functions use)."""

    def reads_environment(node: ast.AST) -> bool:
        return any(
            (isinstance(n, ast.Name) and n.id in ("environ", "getenv"))
            or (isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv"))
            for n in ast.walk(node)
        )

    def names_in(node: ast.AST) -> set[str]:
        return {
            n.value
            for n in ast.walk(node)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and _ENV_NAME.fullmatch(n.value)
        }

    found: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: names_in(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and reads_environment(node):
                found |= names_in(node)
                for name in ast.walk(node):
                    if isinstance(name, ast.Name) and name.id in constants:
                        found |= constants[name.id]
    return found


def env_example() -> dict[str, str]:
    """``.env.example``'s variables (``NAME=value`` and commented ``# NAME=value``)."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            found[match.group(2)] = match.group(3) if match.group(1) is None else "#"
    return found


def test_env_example_lists_every_variable_the_gateway_reads():
    code = read_by_the_code()
    assert {"DATABASE_URL", "REDIS_URL", "GATEWAY_JWT_SECRET", "GATEWAY_CONFIG"} <= code
    in_configs = set()
    for text in ((ROOT / "config.yaml").read_text(), prod_config_text(), COMPOSE.read_text()):
        in_configs |= env_refs(text)
    wanted = code | in_configs | documented_credentials() | {"TMPDIR"}
    missing = wanted - env_example().keys()
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_holds_no_secret():
    for name, value in env_example().items():
        assert value in ("", "#"), f"{name}: .env.example sets no value, only names it"
