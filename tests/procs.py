"""Start the real ``veo-archiver`` processes for end-to-end tests: uvicorn receiver and RQ workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent


class Service:
    """One ``python -m veo_archiver.cli.main ...`` child, its output captured to a log file."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "veo_archiver", *self.argv],
            env=self.env,
            cwd=str(REPO),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def kill_group(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_receiver(env: Mapping[str, str], log_dir: Path, *, port: int | None = None) -> tuple[Service, str]:
    port = port or free_port()
    env = {"SPOOL_DIR": str(log_dir / f"spool-{port}"), **env}  # never the repository's own .veo-archiver/
    service = Service(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log_dir / f"receiver-{port}.log")
    service.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"receiver exited:\n{service.log()[-3000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return service, base
        except httpx.HTTPError:
            time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"receiver did not answer /healthz:\n{service.log()[-3000:]}")


def start_worker(env: Mapping[str, str], log_dir: Path, *, count: int = 1, name: str = "worker") -> Service:
    service = Service(["worker", "--count", str(count)], env, log_dir / f"{name}-{time.monotonic_ns()}.log")
    return service.start()


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
