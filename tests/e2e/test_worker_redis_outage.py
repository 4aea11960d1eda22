"""Drill: a real worker process outlives a Redis outage (redis-server stopped, then started on the same port)
and archives what arrives afterwards. When RQ's own loop gives up during an outage (a connect timeout, an
error in its maintenance) the worker now waits for Redis and starts again: that restart logic is tested with
a stand-in worker in tests/workers/test_runner_restart.py, since the timing that makes RQ give up cannot be
forced here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.procs import start_receiver, start_worker, wait_for
from veo_archiver import archive_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import sample_mp4

pytestmark = pytest.mark.slow
KEY = "outage-worker-kie-key"


def test_a_worker_outlives_a_redis_outage_and_archives_afterwards(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "archive"
    with FileHost() as files:
        url = files.add("/cdn/after.mp4", sample_mp4())
        env = {
            "REDIS_URL": redis_server.url,
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
            "ARCHIVE_URL": str(archive),
            "WORKER_MAINTENANCE_INTERVAL": "1",  # maintenance (which RQ does not guard) runs during the outage
        }
        worker = start_worker(env, tmp_path)
        receiver, base = start_receiver(env, tmp_path)
        try:
            time.sleep(2)
            redis_server.stop()
            time.sleep(8)  # several maintenance rounds against a dead Redis
            redis_server.start()
            assert worker.alive(), worker.log()[-3000:]
            task_id = "veo_after_outage"
            sent = kie_sim.send(
                base + "/callbacks/kie", kie_sim.success_body(task_id, [url]), kie_sim.signed_headers(KEY, task_id)
            )
            assert sent.status_code == 200, sent.text
            manifest = archive / archive_keys.manifest_key("kie", task_id)
            wait_for(manifest.exists, 90, what=f"the manifest\n{worker.log()[-3000:]}")
            assert json.loads(manifest.read_text())["status"] == "succeeded"
            assert worker.alive()
        finally:
            receiver.stop()
            worker.stop()
