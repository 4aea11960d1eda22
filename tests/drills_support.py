"""Helpers for the fault drills (tests/test_drills.py): a full stack of real processes and the checks that
say "every acknowledged callback was archived exactly once".

Everything is on loopback; every wait is bounded; :meth:`DrillStack.close` (the shared Stack's) stops (and,
if need be, kills) every process it started, so a failing drill leaves nothing running.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.procs import wait_for
from tests.servers import SeaweedS3
from tests.stacks import S3Archive, Stack
from veo_archiver import archive_keys, redis_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4
from veo_archiver.text import text

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


class DrillStack(Stack):
    """The shared :class:`~tests.stacks.Stack` (receiver, RQ worker processes, the test's Redis and S3 clients)
    configured for the drills, with the checks that say "every acknowledged callback was archived exactly once"."""

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        seaweed: SeaweedS3,
        bucket: str,
        files: FileHost,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            tmp,
            redis_url,
            S3Archive(seaweed, bucket, PREFIX),
            KIE_WEBHOOK_HMAC_KEYS=KIE_KEY,
            DOWNLOAD_ALLOW_HOSTS=f"127.0.0.1:{files.port}",
            LOG_FORMAT="json",
            WORKER_MAINTENANCE_INTERVAL="5",
            **(extra_env or {}),
        )
        self.files = files

    def job_keys(self) -> set[str]:
        return {text(k) for k in self.rds.keys("rq:job:*")}

    def queued_ids(self) -> list[str]:
        return [text(v) for v in self.rds.lrange(redis_keys.rq_queue_key(QUEUE), 0, -1)]

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
