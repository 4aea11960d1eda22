"""Drill: a worker and a receiver started while Redis is down (a rollout during a failover) wait for it, saying
where and at what pace, and archive the first callback sent once Redis is back: no restart by hand. A bounded
wait (``REDIS_START_TIMEOUT``) is a setting: past it the worker exits with the reason."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.procs import start_receiver, start_worker, wait_for
from tests.servers import RedisServer
from veo_archiver import archive_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import sample_mp4

pytestmark = pytest.mark.slow
KEY = "down-at-start-kie-key"


def test_a_worker_and_a_receiver_started_while_redis_is_down_archive_once_it_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    redis_server.stop()
    with FileHost() as files:
        url = files.add("/cdn/first.mp4", sample_mp4())
        env = {
            "REDIS_URL": redis_server.url,
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
            "ARCHIVE_URL": str(archive),
            "LOG_FORMAT": "text",
        }
        worker = start_worker(env, tmp_path)
        receiver, base = start_receiver(env, tmp_path)  # serves although Redis is down
        try:
            where = f"waiting for Redis at {redis_server.url}"
            wait_for(lambda: where in worker.log(), 30, what=f"the worker's wait\n{worker.log()[-3000:]}")
            wait_for(lambda: where in receiver.log(), 30, what=f"the receiver's wait\n{receiver.log()[-3000:]}")
            assert "retrying every 0.5 s, backing off to 10 s" in worker.log()
            time.sleep(3)  # a few PINGs into the void
            assert worker.alive(), worker.log()[-3000:]
            redis_server.start()

            task_id = "veo_first_after_redis"
            wait_for(lambda: "Redis answers at" in receiver.log(), 30, what=f"the receiver\n{receiver.log()[-3000:]}")
            sent = kie_sim.send(
                base + "/callbacks/kie", kie_sim.success_body(task_id, [url]), kie_sim.signed_headers(KEY, task_id)
            )
            assert sent.status_code == 200, sent.text
            manifest = archive / archive_keys.manifest_key("kie", task_id)
            wait_for(manifest.exists, 90, what=f"the manifest\n{worker.log()[-3000:]}\n{receiver.log()[-3000:]}")
            assert json.loads(manifest.read_text())["status"] == "succeeded"
            assert worker.alive() and receiver.alive()
            assert "Redis answers at" in worker.log()
        finally:
            receiver.stop()
            worker.stop()


def test_a_bounded_wait_at_start_is_a_setting(redis_server: RedisServer, tmp_path: Path) -> None:
    redis_server.stop()
    env = {"REDIS_URL": redis_server.url, "REDIS_START_TIMEOUT": "2", "LOG_FORMAT": "text"}
    worker = start_worker(env, tmp_path)
    try:
        wait_for(lambda: not worker.alive(), 30, what=f"the worker to give up\n{worker.log()[-3000:]}")
        assert worker.process is not None and worker.process.returncode != 0
        assert "did not answer within REDIS_START_TIMEOUT=2 s" in worker.log(), worker.log()[-3000:]
    finally:
        worker.stop()
