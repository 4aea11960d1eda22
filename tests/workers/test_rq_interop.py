"""Dead letters survive every tool of the RQ ecosystem: the real ``rq`` CLI (with RQ's default pickle
serializer and with the JSON one) and ``veo-archiver retry`` requeue the same dead letter, and the job, run
by a real RQ worker, archives the video once its URL works.

Jobs are made the way production makes them (a signed kie.ai callback through the app); the worker is
RQ's ``SimpleWorker`` with our JSON serializer, in this process (no fork: obstore's runtime does not survive
one), against a local-directory archive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.servers import RedisServer
from veo_archiver import archive_keys, redis_keys
from veo_archiver.settings import Settings
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4
from veo_archiver.storage_settings import StorageSettings
from workers import context

pytestmark = pytest.mark.rq_facing
KEY = "interop-kie-key"
QUEUE = "veo-archiver"
TASK = "veo_interop"
VIDEO = make_mp4(100_000, seed=3)
BIN = Path(sys.executable).parent


@dataclass
class World:
    settings: Settings
    rds: redis.Redis
    files: FileHost
    archive: Path
    env: dict[str, str]

    @property
    def job_id(self) -> str:
        return redis_keys.job_id("kie", TASK, "succeeded")

    def deliver(self, url: str) -> None:
        body = kie_sim.success_body(TASK, [url])
        with TestClient(create_app(self.settings)) as client:
            response = client.post(
                "/callbacks/kie", content=json.dumps(body).encode(), headers=kie_sim.signed_headers(KEY, TASK)
            )
        assert response.status_code == 200, response.text

    def work(self) -> None:
        queue = Queue(QUEUE, connection=self.rds, serializer=JSONSerializer)
        SimpleWorker([queue], connection=self.rds, serializer=JSONSerializer).work(burst=True)

    def failed(self) -> list[str]:
        queue = Queue(QUEUE, connection=self.rds, serializer=JSONSerializer)
        return FailedJobRegistry(queue=queue).get_job_ids()

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def manifest(self) -> dict[str, object] | None:
        path = self.archive / archive_keys.manifest_key("kie", TASK)
        return json.loads(path.read_bytes()) if path.exists() else None


@pytest.fixture
def world(redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    archive = tmp_path / "archive"
    with FileHost() as files:
        settings = Settings(
            redis_url=redis_server.url,
            kie_hmac_keys=(KEY,),
            storage=StorageSettings(archive_url=str(archive)),
            download_allow_hosts=frozenset({("127.0.0.1", files.port)}),
        )
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "ARCHIVE_URL": str(archive),
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
        }
        for name in ("QUEUE_NAME", "RECONCILE_AFTER", "RETRY_INTERVALS"):
            env.pop(name, None)
            monkeypatch.delenv(name, raising=False)
        context.install(settings)
        rds = redis_server.client()
        try:
            yield World(settings=settings, rds=rds, files=files, archive=archive, env=env)
        finally:
            rds.close()


TOOLS = {
    "rq requeue (pickle)": lambda w: w.run(
        str(BIN / "rq"), "requeue", "-u", w.settings.redis_url, "--queue", QUEUE, w.job_id
    ),
    "rq requeue -S JSON": lambda w: w.run(
        str(BIN / "rq"),
        "requeue",
        "-u",
        w.settings.redis_url,
        "--queue",
        QUEUE,
        "-S",
        "rq.serializers.JSONSerializer",
        w.job_id,
    ),
    "veo-archiver retry": lambda w: w.run(sys.executable, "-m", "veo_archiver", "retry", w.job_id),
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_a_dead_letter_requeued_by_any_tool_is_archived_once_its_url_works(world: World, tool: str) -> None:
    world.deliver(f"{world.files.base_url}/v/late.mp4")  # 404 for now
    world.work()
    assert world.failed() == [world.job_id]
    dead = Job.fetch(world.job_id, connection=world.rds, serializer=JSONSerializer)
    assert dead.meta["dead_letter"]["reason"] == "http_404" and dead.retries_left == 0
    assert world.manifest() is None

    info = world.run(str(BIN / "rq"), "info", "-u", world.settings.redis_url)
    assert info.returncode == 0 and QUEUE in info.stdout, info.stderr

    world.files.add("/v/late.mp4", VIDEO)  # the URL works now
    done = TOOLS[tool](world)
    assert done.returncode == 0, done.stdout + done.stderr
    assert world.failed() == []
    world.work()

    manifest = world.manifest()
    assert manifest is not None and manifest["status"] == "succeeded"
    assert (world.archive / archive_keys.video_key("kie", TASK, 0)).read_bytes() == VIDEO
    job = Job.fetch(world.job_id, connection=world.rds, serializer=JSONSerializer)
    assert job.get_status() == "finished"
    assert "dead_letter" not in job.meta
    # the verdict was moved aside (by the worker, or by ``veo-archiver retry`` itself), whatever the serializer
    assert [(v["reason"], v["run"]) for v in job.meta["previous_dead_letters"]] == [("http_404", 1)]
    assert job.meta["run"] == 2
    assert job.meta["task_id"] == TASK  # readable again, whatever the tool's serializer made of it
    outcomes = [fields[b"outcome"] for _, fields in world.rds.xrange(redis_keys.outcomes_stream())]
    assert outcomes == [b"dead_letter", b"archived"]


@pytest.mark.parametrize("tool", list(TOOLS))
def test_a_requeued_dead_letter_that_fails_again_publishes_its_new_end(world: World, tool: str) -> None:
    """Each end of each run is published once: the second run's dead letter is a second stream entry (its own
    ``outcome_id``, its new reason), and the meta still names the first verdict."""
    world.deliver(f"{world.files.base_url}/v/bad.mp4")  # 404 for now
    world.work()
    assert world.failed() == [world.job_id]

    world.files.add("/v/bad.mp4", b"<html>an error page, not a video</html>" * 50)  # fails otherwise now
    done = TOOLS[tool](world)
    assert done.returncode == 0, done.stdout + done.stderr
    world.work()

    assert world.failed() == [world.job_id]
    entries = [fields for _, fields in world.rds.xrange(redis_keys.outcomes_stream())]
    assert [e[b"outcome"] for e in entries] == [b"dead_letter", b"dead_letter"]
    assert [e[b"run"] for e in entries] == [b"1", b"2"]
    assert entries[0][b"outcome_id"] != entries[1][b"outcome_id"]
    first, second = (e[b"reason"].decode() for e in entries)
    assert first == "http_404" and second != "http_404"
    job = Job.fetch(world.job_id, connection=world.rds, serializer=JSONSerializer)
    assert job.meta["dead_letter"]["reason"] == second and job.meta["dead_letter"]["published"] is True
    assert [(v["reason"], v["run"]) for v in job.meta["previous_dead_letters"]] == [("http_404", 1)]
