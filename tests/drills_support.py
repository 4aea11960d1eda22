"""Helpers for the fault drills (tests/test_drills.py): a full stack of real processes and the checks that
say "every acknowledged callback was archived exactly once".

Everything is on loopback; every wait is bounded; :meth:`DrillStack.close` stops (and, if need be, kills)
every process it started, so a failing drill leaves nothing running.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.procs import Service, start_receiver, start_worker, wait_for
from veo_archiver import archive_keys, redis_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4

KIE_KEY = "drill-kie-key"
QUEUE = "veo-archiver"
PREFIX = "drill"


@dataclass
class Video:
    task_id: str
    path: str
    url: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def host_videos(files: FileHost, prefix: str, count: int, *, size: int = 48 * 1024) -> list[Video]:
    """``count`` distinct small MP4s on the file host, one per task id ``<prefix>-<n>``."""
    out = []
    for n in range(count):
        path = f"/cdn/{prefix}/{n}.mp4"
        data = make_mp4(size + n, seed=sum(map(ord, prefix)) * 1000 + n)
        out.append(Video(task_id=f"{prefix}-{n:04d}", path=path, url=files.add(path, data), data=data))
    return out


def callback(video: Video, *, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The signed kie.ai success callback for ``video``, as bytes + headers."""
    body = json.dumps(kie_sim.success_body(video.task_id, [video.url])).encode()
    return body, kie_sim.signed_headers(KIE_KEY, video.task_id, timestamp)


@dataclass
class Answer:
    status: int
    outcome: str | None = None
    retry_after: str | None = None
    error: str | None = None
    seconds: float = 0.0


def post(client: httpx.Client, base: str, video: Video) -> Answer:
    body, headers = callback(video)
    started = time.monotonic()
    try:
        response = client.post(base + "/callbacks/kie", content=body, headers=headers)
    except httpx.HTTPError as exc:  # a sender would see "no answer" and retry later
        return Answer(status=0, error=repr(exc), seconds=time.monotonic() - started)
    return Answer(
        status=response.status_code,
        outcome=response.headers.get("x-archiver-outcome"),
        retry_after=response.headers.get("retry-after"),
        seconds=time.monotonic() - started,
    )


@dataclass
class DrillStack:
    """Receiver (uvicorn) + RQ worker processes + the test's own Redis/S3 clients."""

    tmp: Path
    redis_url: str
    seaweed: Any
    bucket: str
    files: FileHost
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = {
            "REDIS_URL": self.redis_url,
            **self.seaweed.env(self.bucket, PREFIX),
            "KIE_WEBHOOK_HMAC_KEYS": KIE_KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{self.files.port}",
            "LOG_FORMAT": "json",
            "WORKER_MAINTENANCE_INTERVAL": "5",
            **self.extra_env,
        }
        self.rds = redis.Redis.from_url(self.redis_url, socket_timeout=10)
        self.s3 = self.seaweed.boto3_client()
        self.receiver: Service | None = None
        self.base = ""

    def start_receiver(self) -> None:
        self.receiver, self.base = start_receiver(self.env, self.tmp)

    def start_worker(self, count: int = 1, **env: str) -> Service:
        service = start_worker({**self.env, **env}, self.tmp, count=count)
        self.workers.append(service)
        return service

    def logs(self, chars: int = 3000) -> str:
        parts = [f"--- receiver\n{self.receiver.log()[-chars:]}"] if self.receiver else []
        parts += [f"--- worker {w.pid}\n{w.log()[-chars:]}" for w in self.workers]
        return "\n".join(parts)

    def close(self) -> None:
        """Warm-stop every process; kill the whole process group of anything that lingers."""
        for service in [*self.workers, *([self.receiver] if self.receiver else [])]:
            try:
                service.stop(timeout=30)
            except Exception:
                with contextlib.suppress(Exception):
                    service.kill_group()
        with contextlib.suppress(Exception):
            self.rds.close()

    # ----------------------------------------------------------------------------------------- Redis side

    def job_keys(self) -> set[str]:
        return {k.decode() for k in self.rds.keys("rq:job:*")}

    def queued_ids(self) -> list[str]:
        return [v.decode() for v in self.rds.lrange(redis_keys.rq_queue_key(QUEUE), 0, -1)]

    def outcomes(self) -> list[dict[str, str]]:
        return [
            {k.decode(): v.decode() for k, v in e.items()} for _, e in self.rds.xrange(redis_keys.outcomes_stream())
        ]

    def events(self) -> list[dict[str, str]]:
        return [{k.decode(): v.decode() for k, v in e.items()} for _, e in self.rds.xrange(redis_keys.events_stream())]

    # ----------------------------------------------------------------------------------------- S3 side

    def read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}")["Body"].read()  # type: ignore[no-any-return]
        except self.s3.exceptions.NoSuchKey:
            return None

    def object_keys(self) -> list[str]:
        out: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            out += [o["Key"].removeprefix(PREFIX + "/") for o in page.get("Contents", [])]
        return out

    def wait_archived(self, videos: Iterable[Video], timeout: float) -> float:
        """Wait until every video's task has its "archived" outcome; the seconds it took."""
        wanted = {v.task_id for v in videos}
        started = time.monotonic()

        def done() -> bool:
            got = {e["task_id"] for e in self.outcomes() if e.get("outcome") == "archived"}
            return wanted <= got

        wait_for(done, timeout, interval=0.5, what=f"{len(wanted)} archived outcomes\n{self.logs()}")
        return time.monotonic() - started

    def assert_archived_exactly_once(self, videos: list[Video]) -> dict[str, Any]:
        """Manifest + video (right sha256) in S3 for each task, one "archived" outcome each, no strays."""
        per_task = Counter(e["task_id"] for e in self.outcomes() if e.get("outcome") == "archived")
        dead = [e for e in self.outcomes() if e.get("outcome") == "dead_letter"]
        assert not dead, dead
        expected_keys: set[str] = set()
        for video in videos:
            assert per_task[video.task_id] == 1, (video.task_id, per_task[video.task_id])
            manifest_key = archive_keys.manifest_key("kie", video.task_id)
            raw = self.read(manifest_key)
            assert raw is not None, f"no manifest for {video.task_id}"
            manifest = json.loads(raw)
            (entry,) = manifest["files"]
            assert entry["sha256"] == video.sha256 and entry["size"] == len(video.data), (
                video.task_id,
                entry,
            )
            stored = self.read(entry["key"])
            assert stored is not None and hashlib.sha256(stored).hexdigest() == video.sha256, video.task_id
            assert manifest["job_id"] == redis_keys.job_id("kie", video.task_id, "succeeded")
            expected_keys |= {
                entry["key"],
                manifest_key,
                archive_keys.callback_key("kie", video.task_id, "succeeded"),
            }
        assert sorted(self.object_keys()) == sorted(expected_keys)
        assert sum(per_task.values()) == len(videos), per_task
        return {"archived": len(videos), "downloads": sum(self.files.completed[v.path] for v in videos)}
