"""The README's first command: `veo-archiver up` on embedded defaults, a simulated provider, and a clean
Ctrl-C. Real processes: the CLI starts its own Redis server, the receiver and a worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import REPO, free_tcp_port, wait_for

pytestmark = pytest.mark.slow


def test_up_then_simulate_every_provider_then_ctrl_c(tmp_path: Path) -> None:
    port = free_tcp_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_URL", "ARCHIVE_URL", "AWS_", "KIE_", "CALLBACK_", "DOWNLOAD_"))
    }
    env["PYTHONPATH"] = str(REPO)
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "veo_archiver", "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: b"veo-archiver is up" in (tmp_path / "up.log").read_bytes(), 60, what="up to start")
        wait_for(lambda: b"Listening on" in (tmp_path / "up.log").read_bytes(), 60, what="the worker")
        for provider in ("kie", "evolink"):
            to = f"http://127.0.0.1:{port}" + ("/callbacks/kie" if provider == "kie" else "")
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "veo_archiver.cli.main",
                    "--log-level",
                    "WARNING",
                    "simulate",
                    provider,
                    "--to",
                    to,
                    "--wait",
                    "60",
                    "--size-kib",
                    "300",
                ],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "up.log").read_text()
            assert "archived:" in done.stdout
        manifests = sorted((tmp_path / "archive").rglob("manifest.json"))
        assert [m.parts[-3] for m in manifests] == ["evolink", "kie"]
        for manifest in manifests:
            body = json.loads(manifest.read_text())
            assert body["status"] == "succeeded" and body["files"][0]["size"] == 300 * 1024
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=120)
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output
    assert "veo-archiver: stopped" in output
    assert (tmp_path / ".veo-archiver" / "redis" / "appendonlydir").is_dir() or list(
        (tmp_path / ".veo-archiver" / "redis").glob("appendonly*")
    )
    assert not any(p.name == "redis.sock" for p in (tmp_path / ".veo-archiver" / "redis").iterdir())
