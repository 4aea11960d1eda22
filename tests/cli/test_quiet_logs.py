"""Quiet, honest logs in a real terminal: ``worker`` and ``serve`` run under a pseudo-terminal (so RQ colours its
messages and the logs are text lines), then stopped with Ctrl-C (SIGINT to the foreground process group). No
colour code reaches the log, RQ's routine maintenance stays at DEBUG, and a normal stop logs no warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.procs import REPO, wait_for
from tests.servers import free_port


class Terminal:
    """One ``veo-archiver`` command whose stdin, stdout and stderr are a pseudo-terminal, as in a shell."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = os.openpty()
        self.master = master
        self.chunks: list[bytes] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "veo_archiver", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group, the terminal's foreground one
        )
        os.close(slave)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every process holding the terminal is gone
                return
            if not data:
                return
            self.chunks.append(data)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def ctrl_c(self, timeout: float = 60) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout)
        self.reader.join(5)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {
        **keep,
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "REDIS_URL": redis_url,
        "ARCHIVE_URL": str(tmp_path / "archive"),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.mark.slow  # a whole worker process in a pseudo-terminal
def test_a_worker_in_a_terminal_logs_no_colour_codes_no_maintenance_and_stops_on_ctrl_c_without_a_warning(
    redis_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env = _env(redis_server.url, tmp_path, WORKER_MAINTENANCE_INTERVAL="1")
    worker = Terminal(["worker"], env, tmp_path)
    try:
        wait_for(lambda: "Listening on" in worker.text(), 60, what=f"the worker\n{worker.text()}")
        time.sleep(3)  # maintenance runs every second: three rounds of "cleaning registries" at DEBUG
        stopping_at = len(worker.text())
        code = worker.ctrl_c()
    finally:
        worker.kill()
    output = worker.text()
    assert code == 0, output
    assert "Listening on veo-archiver" in output  # the queue name RQ colours on a terminal, without its codes
    assert "\x1b" not in output and "\\x1b" not in output, output
    assert "cleaning registries" not in output, output
    assert "INFO rq.worker" in output  # text lines on a terminal, RQ's own lines included
    assert "WARNING" not in output[stopping_at:] and "ERROR" not in output[stopping_at:], output[stopping_at:]


def test_serve_in_a_terminal_stops_on_ctrl_c_without_a_warning(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    serve = Terminal(["serve", "--port", str(port)], _env(redis_server.url, tmp_path), tmp_path)
    try:
        wait_for(lambda: "Uvicorn running on" in serve.text(), 60, what=f"the receiver\n{serve.text()}")
        stopping_at = len(serve.text())
        code = serve.ctrl_c()
    finally:
        serve.kill()
    output = serve.text()
    assert code == 0, output
    assert "\x1b" not in output and "\\x1b" not in output, output
    assert "WARNING" not in output[stopping_at:] and "ERROR" not in output[stopping_at:], output[stopping_at:]
