"""kie.ai signs the task id and time, not the body. Without KIE_API_KEY, a captured signature replayed with
other result URLs is answered ``X-Archiver-Outcome: conflict``, recorded and counted, never merged; the
archived manifest says ``urls_verified: false``; the attacker's URL is never fetched (real receiver, real
worker, real redis-server, a loopback file host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.procs import start_receiver, start_worker, wait_for
from veo_archiver import archive_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import sample_mp4

pytestmark = pytest.mark.slow
KEY = "conflict-kie-key"


def test_a_replayed_kie_signature_with_other_urls_is_a_conflict(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "archive"
    with FileHost() as files:
        genuine = files.add("/cdn/genuine.mp4", sample_mp4())
        evil = files.add("/evil/other.mp4", sample_mp4())
        env = {
            "REDIS_URL": redis_server.url,
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
            "ARCHIVE_URL": str(archive),
            "ADMIN_TOKEN": "conflict-admin",
        }
        receiver, base = start_receiver(env, tmp_path)
        worker = start_worker(env, tmp_path)
        try:
            task_id = "veo_task_conflict"
            headers = kie_sim.signed_headers(KEY, task_id)  # captured once, sent twice
            first = kie_sim.send(base + "/callbacks/kie", kie_sim.success_body(task_id, [genuine]), headers)
            assert first.status_code == 200 and first.headers["x-archiver-outcome"] == "accepted"
            replay = kie_sim.send(base + "/callbacks/kie", kie_sim.success_body(task_id, [evil]), headers)
            assert replay.status_code == 200, replay.text
            assert replay.headers["x-archiver-outcome"] == "conflict"
            again = kie_sim.send(base + "/callbacks/kie", kie_sim.success_body(task_id, [genuine]), headers)
            assert again.headers["x-archiver-outcome"] == "duplicate"  # the same URLs: a plain retry

            manifest_path = archive / archive_keys.manifest_key("kie", task_id)
            wait_for(manifest_path.exists, 60, what=f"the manifest\n{worker.log()[-3000:]}")
            manifest = json.loads(manifest_path.read_text())
            assert manifest["urls_verified"] is False and manifest["verification"] == "signature"
            assert [f["source_url"] for f in manifest["files"]] == [genuine]
            assert files.hits.get("/evil/other.mp4", 0) == 0

            metrics = httpx.get(base + "/metrics", headers={"Authorization": "Bearer conflict-admin"}, timeout=10)
            assert 'veo_archiver_callbacks_conflict_total{provider="kie"} 1.0' in metrics.text
        finally:
            worker.stop()
            receiver.stop()

    status = subprocess.run(
        [sys.executable, "-m", "veo_archiver", "status", "--json"],
        env={**os.environ, "REDIS_URL": redis_server.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(status.stdout)
    assert report["events_last_hour"]["conflict"] == 1
    assert any("other result URLs" in problem for problem in report["problems"])
    show = subprocess.run(
        [sys.executable, "-m", "veo_archiver", "show", "kie", task_id, "--json"],
        env={**os.environ, "REDIS_URL": redis_server.url, "ARCHIVE_URL": str(archive)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    story = json.loads(show.stdout)
    assert [d["outcome"] for d in story["deliveries"]] == ["accepted", "conflict", "duplicate"]
