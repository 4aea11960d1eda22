"""KIE_FETCH_1080P end to end in one process: a signed kie.ai callback through the app, a real redis-server, RQ's
``SimpleWorker`` with its scheduler (burst runs until nothing is scheduled), the provider simulator's
get-1080p-video and CDN, and a local-directory archive. The poll interval is 0.2 s (RQ schedules to the second)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.servers import RedisServer
from tests.stacks import settings_for
from veo_archiver import archive_keys, redis_keys
from veo_archiver.settings import ProviderSettings, Settings
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.cloud import DEFAULT_API_KEYS, ProviderCloud
from veo_archiver.sim.media import make_mp4, sample_mp4
from veo_archiver.storage_settings import StorageSettings
from workers import context

pytestmark = pytest.mark.rq_facing
KEY = "rendition-kie-hmac"
TASK = "veo_task_1080p"
VIDEO = make_mp4(80_000, seed=5)


@dataclass
class World:
    rds: redis.Redis
    cloud: ProviderCloud
    archive: Path
    tmp: Path
    redis_url: str

    def start(self, **overrides: Any) -> Settings:
        settings = settings_for(
            _Url(self.redis_url),
            kie_hmac_keys=(KEY,),
            storage=StorageSettings(archive_url=str(self.archive)),
            download_allow_hosts=frozenset({("127.0.0.1", self.cloud.port)}),
            providers={
                "kie": ProviderSettings(name="kie", api_key=DEFAULT_API_KEYS["kie"], api_base=self.cloud.base_url)
            },
            kie_1080p_poll_interval_s=0.2,
            **overrides,
        )
        context.install(settings)
        return settings

    def deliver(self, settings: Settings) -> None:
        url = self.cloud.add_video("/videos/kie/original.mp4", VIDEO)
        self.cloud.set_task("kie", TASK, "succeeded", urls=[url])
        body = kie_sim.success_body(TASK, [url])
        with TestClient(create_app(settings)) as client:
            response = client.post(
                "/callbacks/kie", content=json.dumps(body).encode(), headers=kie_sim.signed_headers(KEY, TASK)
            )
        assert response.status_code == 200, response.text

    def work(self, settings: Settings, limit_s: float = 20.0) -> None:
        """Burst runs (each moves the due scheduled jobs to the queue first) until nothing waits."""
        queue = Queue(settings.queue_name, connection=self.rds, serializer=JSONSerializer)
        scheduled = ScheduledJobRegistry(queue=queue)
        ends = time.monotonic() + limit_s
        while True:
            SimpleWorker([queue], connection=self.rds, serializer=JSONSerializer).work(burst=True, with_scheduler=True)
            if not scheduled.get_job_ids() and not queue.count:
                return
            assert time.monotonic() < ends, "jobs still scheduled after the time limit"
            time.sleep(0.1)

    def manifest(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads((self.archive / archive_keys.manifest_key("kie", TASK)).read_bytes())
        return value

    def outcomes(self) -> list[dict[str, str]]:
        return [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in self.rds.xrange(redis_keys.outcomes_stream())
        ]

    def failed(self, settings: Settings) -> list[str]:
        queue = Queue(settings.queue_name, connection=self.rds, serializer=JSONSerializer)
        return FailedJobRegistry(queue=queue).get_job_ids()


@dataclass
class _Url:
    url: str


@pytest.fixture
def world(redis_server: RedisServer, tmp_path: Path) -> Iterator[World]:
    with ProviderCloud() as cloud:
        rds = redis_server.client()
        try:
            yield World(rds, cloud, tmp_path / "archive", tmp_path, redis_server.url)
        finally:
            rds.close()


@pytest.mark.slow  # waits on RQ's scheduler, which moves jobs to the second
def test_the_1080p_is_archived_beside_the_original_in_the_same_manifest(world: World) -> None:
    settings = world.start(kie_fetch_1080p=True)
    world.cloud.set_1080p(TASK, 0, ready_after=2)  # "processing" twice, then the real sample MP4
    world.deliver(settings)
    world.work(settings)

    manifest = world.manifest()
    original, rendition = manifest["files"]
    assert original["sha256"] == hashlib.sha256(VIDEO).hexdigest() and "rendition" not in original
    expected = sample_mp4()
    assert rendition["rendition"] == "1080p" and rendition["index"] == 0
    assert rendition["key"] == archive_keys.rendition_key("kie", TASK, 0, "1080p")
    assert rendition["sha256"] == hashlib.sha256(expected).hexdigest() and rendition["size"] == len(expected)
    assert (world.archive / rendition["key"]).read_bytes() == expected
    assert manifest["renditions"]["1080p"]["status"] == "archived"
    assert manifest["renditions"]["1080p"]["polls"] == 3
    assert world.cloud.rendition_calls[(TASK, 0)] == 3

    ends = [o for o in world.outcomes() if o["outcome"] == "rendition_archived"]
    assert len(ends) == 1
    assert [f["sha256"] for f in json.loads(ends[0]["files"])] == [rendition["sha256"]]
    assert [o["outcome"] for o in world.outcomes()] == ["archived", "rendition_archived"]
    assert world.failed(settings) == []


@pytest.mark.slow  # waits on RQ's scheduler, which moves jobs to the second
def test_a_1080p_that_never_comes_is_recorded_and_the_original_stays(world: World) -> None:
    settings = world.start(kie_fetch_1080p=True, kie_1080p_max_wait_s=2)
    world.cloud.set_1080p(TASK, 0, ready_after=None, not_ready_status=404)
    world.deliver(settings)
    world.work(settings)

    manifest = world.manifest()
    assert [f["sha256"] for f in manifest["files"]] == [hashlib.sha256(VIDEO).hexdigest()]
    record = manifest["renditions"]["1080p"]
    assert record["status"] == "unavailable" and record["reason"] == "not_ready_in_time"
    assert record["missing"] == [0] and record["polls"] >= 2
    assert "http_404" in record["message"]
    assert [o["outcome"] for o in world.outcomes()] == ["archived", "rendition_unavailable"]
    assert world.failed(settings) == []  # no dead letter, of either job


def test_a_fallback_task_is_recorded_without_a_poll(world: World) -> None:
    settings = world.start(kie_fetch_1080p=True)
    url = world.cloud.add_video("/videos/kie/fallback.mp4", VIDEO)
    world.cloud.set_task("kie", TASK, "succeeded", urls=[url], fallback_flag=True)
    body = kie_sim.success_body(TASK, [url])
    body["data"]["fallbackFlag"] = True
    with TestClient(create_app(settings)) as client:
        client.post("/callbacks/kie", content=json.dumps(body).encode(), headers=kie_sim.signed_headers(KEY, TASK))
    world.work(settings)
    record = world.manifest()["renditions"]["1080p"]
    assert (record["status"], record["reason"]) == ("unavailable", "fallback")
    assert world.cloud.rendition_calls[(TASK, 0)] == 0


def test_off_by_default_nothing_is_polled(world: World) -> None:
    settings = world.start()
    world.deliver(settings)
    world.work(settings)
    manifest = world.manifest()
    assert len(manifest["files"]) == 1 and "renditions" not in manifest
    assert world.cloud.rendition_calls == {}
    assert [o["outcome"] for o in world.outcomes()] == ["archived"]
