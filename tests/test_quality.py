"""The one check command is the test command: lint and strict typing run with the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_lint_is_clean() -> None:
    done = run("ruff", "check", "veo_archiver", "receiver", "workers", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # tens of seconds without its cache (a fresh clone)
def test_mypy_strict_is_clean() -> None:
    done = run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_contracts_hold() -> None:
    """receiver and workers never import each other; the core imports neither; providers do no I/O."""
    lint_imports = Path(sys.executable).with_name("lint-imports")  # installed by the test extra beside python
    done = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
