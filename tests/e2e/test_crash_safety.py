"""Workers die mid-download: the video is still archived exactly once, and no partial object is visible.

Real processes throughout: redis-server, SeaweedFS, RQ worker processes (killed with SIGKILL or stopped with
SIGTERM), and a file host that trickles the video so there is a "middle" to kill in.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import psutil
import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from tests.procs import Service, start_receiver, start_worker, wait_for
from veo_archiver import archive_keys, redis_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost, HostedFile
from veo_archiver.sim.media import make_mp4

pytestmark = pytest.mark.slow
KEY = "crash-kie-key"
VIDEO = make_mp4(3 * 1024 * 1024, seed=42)
SHA = hashlib.sha256(VIDEO).hexdigest()


def trickle(chunk: int = 64 * 1024, pause: float = 0.05):  # type: ignore[no-untyped-def]
    """Serve the file slowly (about 1.3 MB/s), full body only, so a download takes a few seconds."""

    def behaviour(handler: BaseHTTPRequestHandler, hosted: HostedFile | None) -> bool:
        assert hosted is not None
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(hosted.data)))
        handler.end_headers()
        try:
            for start in range(0, len(hosted.data), chunk):
                handler.wfile.write(hosted.data[start : start + chunk])
                handler.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return True

    return behaviour


class Stack:
    def __init__(self, redis_server: Any, seaweed: Any, bucket: str, files: FileHost, tmp: Path, **env: str) -> None:
        self.rds = redis_server.client()
        self.s3 = seaweed.boto3_client()
        self.bucket = bucket
        self.tmp = tmp
        self.env = {
            "REDIS_URL": redis_server.url,
            **seaweed.env(bucket, "a"),
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
            **env,
        }
        self.receiver, self.base = start_receiver(self.env, tmp)
        self.workers: list[Service] = []

    def worker(self, **env: str) -> Service:
        service = start_worker({**self.env, **env}, self.tmp)
        self.workers.append(service)
        return service

    def close(self) -> None:
        for w in self.workers:
            w.stop(timeout=30)
        self.receiver.stop()

    def objects(self) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])]

    def read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=f"a/{key}")["Body"].read()  # type: ignore[no-any-return]
        except self.s3.exceptions.NoSuchKey:
            return None

    def deliver(self, task_id: str, url: str) -> None:
        body = kie_sim.success_body(task_id, [url])
        assert kie_sim.send(self.base + "/callbacks/kie", body, kie_sim.signed_headers(KEY, task_id)).status_code == 200

    def assert_archived_once(self, task_id: str, files: FileHost, path: str, timeout: float) -> dict[str, Any]:
        manifest_key = archive_keys.manifest_key("kie", task_id)
        raw = wait_for(
            lambda: self.read(manifest_key),
            timeout,
            what="manifest\n" + "\n".join(w.log()[-2500:] for w in self.workers),
        )
        manifest = json.loads(raw)
        (entry,) = manifest["files"]
        assert entry["sha256"] == SHA and hashlib.sha256(self.read(entry["key"]) or b"").hexdigest() == SHA
        assert sorted(self.objects()) == sorted(
            f"a/{k}" for k in (entry["key"], manifest_key, archive_keys.callback_key("kie", task_id, "succeeded"))
        )
        archived = [
            e
            for _, e in self.rds.xrange(redis_keys.outcomes_stream())
            if e[b"task_id"].decode() == task_id and e[b"outcome"] == b"archived"
        ]
        assert len(archived) == 1, archived
        queue = Queue("veo-archiver", connection=self.rds, serializer=JSONSerializer)
        assert redis_keys.job_id("kie", task_id, "succeeded") in FinishedJobRegistry(queue=queue).get_job_ids()
        return manifest  # type: ignore[no-any-return]


def children(worker: Service) -> set[int]:
    return {c.pid for c in psutil.Process(worker.pid).children()}


def horse_of(worker: Service, before: set[int], timeout: float = 30) -> psutil.Process:
    """The work horse RQ forked for the current job: the worker's child that was not there before the job
    (the scheduler is a child too, started with the worker). The horse calls setpgrp, so it is not in the
    worker's process group."""

    def find() -> psutil.Process | None:
        fresh = [c for c in psutil.Process(worker.pid).children() if c.pid not in before]
        return fresh[0] if len(fresh) == 1 else None

    return wait_for(find, timeout, interval=0.02, what="a work horse")  # type: ignore[no-any-return]


def wait_midway(files: FileHost, path: str) -> None:
    wait_for(lambda: files.hits[path] >= 1, 30, interval=0.02, what="the download to start")
    time.sleep(0.8)  # well inside a ~2.5 s transfer


@pytest.fixture
def files():  # type: ignore[no-untyped-def]
    with FileHost() as host:
        yield host


def test_sigkill_of_the_whole_worker_mid_download_still_archives_exactly_once(
    redis_server,
    seaweed,
    s3_bucket,
    files,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    path = "/slow/0.mp4"
    url = files.add(path, VIDEO)
    files.behaviours[path] = trickle()
    stack = Stack(redis_server, seaweed, s3_bucket, files, tmp_path)
    try:
        first = stack.worker()
        stack.deliver("veo_task_kill9", url)
        wait_midway(files, path)
        # node loss: the worker and its horse die at once, nothing gets to clean up
        victims = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
        for proc in victims:
            os.kill(proc.pid, signal.SIGKILL)
        first.process.wait()  # type: ignore[union-attr]
        psutil.wait_procs(victims, timeout=5)
        assert stack.read(archive_keys.video_key("kie", "veo_task_kill9", 0)) is None  # no visible partial object
        assert stack.objects() == []  # nothing half-written: the raw callback is written with the manifest
        files.behaviours.pop(path)  # the file host serves at full speed from now on
        stack.worker()  # a fresh worker finds the abandoned job once its heartbeat lapses, and re-runs it
        manifest = stack.assert_archived_once("veo_task_kill9", files, path, timeout=240)
    finally:
        stack.close()
    job = Job.fetch(
        redis_keys.job_id("kie", "veo_task_kill9", "succeeded"), connection=stack.rds, serializer=JSONSerializer
    )
    assert manifest["job_id"] == job.id


def test_sigkill_of_the_work_horse_mid_download_is_retried_at_once(
    redis_server,
    seaweed,
    s3_bucket,
    files,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    path = "/slow/1.mp4"
    url = files.add(path, VIDEO)
    files.behaviours[path] = trickle()
    stack = Stack(redis_server, seaweed, s3_bucket, files, tmp_path, RETRY_INTERVALS="1,1,1")
    try:
        worker = stack.worker()
        wait_for(lambda: len(children(worker)) >= 1, 30, what="the worker's scheduler")
        time.sleep(1)
        before = children(worker)
        stack.deliver("veo_task_oom", url)
        wait_midway(files, path)
        horse = horse_of(worker, before)
        horse.send_signal(signal.SIGKILL)  # what the OOM killer does
        assert stack.read(archive_keys.video_key("kie", "veo_task_oom", 0)) is None
        files.behaviours.pop(path)
        stack.assert_archived_once("veo_task_oom", files, path, timeout=90)
        assert worker.alive()
    finally:
        stack.close()


def test_sigterm_interrupts_a_long_download_and_another_worker_finishes_it(
    redis_server,
    seaweed,
    s3_bucket,
    files,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    path = "/slow/2.mp4"
    url = files.add(path, VIDEO)
    files.behaviours[path] = trickle(pause=0.2)  # ~10 s: longer than the grace below
    stack = Stack(redis_server, seaweed, s3_bucket, files, tmp_path, RETRY_INTERVALS="1,1,1")
    try:
        leaving = stack.worker(WORKER_SHUTDOWN_GRACE="1")
        stack.deliver("veo_task_deploy", url)
        wait_midway(files, path)
        leaving.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        leaving.process.wait(timeout=30)  # type: ignore[union-attr]
        assert stack.read(archive_keys.video_key("kie", "veo_task_deploy", 0)) is None
        files.behaviours.pop(path)
        stack.worker()
        stack.assert_archived_once("veo_task_deploy", files, path, timeout=90)
    finally:
        stack.close()


def test_sigterm_lets_a_download_inside_the_grace_period_finish(
    redis_server,
    seaweed,
    s3_bucket,
    files,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    path = "/slow/3.mp4"
    url = files.add(path, VIDEO)
    files.behaviours[path] = trickle()
    stack = Stack(redis_server, seaweed, s3_bucket, files, tmp_path)
    try:
        worker = stack.worker(WORKER_SHUTDOWN_GRACE="60")
        stack.deliver("veo_task_graceful", url)
        wait_midway(files, path)
        worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert worker.process.wait(timeout=60) == 0  # type: ignore[union-attr]
        stack.assert_archived_once("veo_task_graceful", files, path, timeout=5)
        assert files.hits[path] == 1  # finished by the same worker, no second download
    finally:
        stack.close()
