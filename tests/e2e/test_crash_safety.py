"""Workers die mid-download: the video is still archived exactly once, and no partial object is visible.

Real processes throughout: redis-server, SeaweedFS, RQ worker processes (killed with SIGKILL or stopped with
SIGTERM), and a file host that trickles the video so there is a "middle" to kill in.
"""

from __future__ import annotations

import hashlib
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
from rq.worker import Worker

from tests.procs import Service, wait_for
from tests.stacks import S3Archive, Stack
from veo_archiver import archive_keys, redis_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost, HostedFile
from veo_archiver.sim.media import make_mp4

pytestmark = pytest.mark.slow
KEY = "crash-kie-key"
VIDEO = make_mp4(3 * 1024 * 1024, seed=42)
SHA = hashlib.sha256(VIDEO).hexdigest()


class Trickle:
    """Serve the file slowly (64 KiB every ``pause`` seconds: about 1.3 MB/s by default), full body only, so a
    download takes seconds; ``sent`` counts the bytes written, so a test acts once the download is under way."""

    def __init__(self, chunk: int = 64 * 1024, pause: float = 0.05) -> None:
        self.chunk, self.pause = chunk, pause
        self.sent = 0

    def __call__(self, handler: BaseHTTPRequestHandler, hosted: HostedFile | None) -> bool:
        assert hosted is not None
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(hosted.data)))
        handler.end_headers()
        try:
            for start in range(0, len(hosted.data), self.chunk):
                piece = hosted.data[start : start + self.chunk]
                handler.wfile.write(piece)
                handler.wfile.flush()
                self.sent += len(piece)
                time.sleep(self.pause)  # the slow network itself, not a wait of the test
        except (BrokenPipeError, ConnectionResetError):
            pass
        return True


def crash_stack(redis_server: Any, seaweed: Any, bucket: str, files: FileHost, tmp: Path, **env: str) -> Stack:
    """Receiver and workers over this Redis and a fresh bucket; every test starts its workers itself."""
    stack = Stack(
        tmp,
        redis_server.url,
        S3Archive(seaweed, bucket, "a"),
        KIE_WEBHOOK_HMAC_KEYS=KEY,
        DOWNLOAD_ALLOW_HOSTS=f"127.0.0.1:{files.port}",
        **env,
    )
    stack.start_receiver()
    return stack


def deliver(stack: Stack, task_id: str, url: str) -> None:
    body = kie_sim.success_body(task_id, [url])
    assert kie_sim.send(stack.base + "/callbacks/kie", body, kie_sim.signed_headers(KEY, task_id)).status_code == 200


def assert_archived_once(stack: Stack, task_id: str, timeout: float) -> dict[str, Any]:
    manifest = stack.manifest("kie", task_id, timeout=timeout)
    (entry,) = manifest["files"]
    assert entry["sha256"] == SHA and hashlib.sha256(stack.read(entry["key"]) or b"").hexdigest() == SHA
    manifest_key = archive_keys.manifest_key("kie", task_id)
    assert stack.object_keys() == sorted(
        (entry["key"], manifest_key, archive_keys.callback_key("kie", task_id, "succeeded"))
    )
    archived = [e for e in stack.outcomes() if e["task_id"] == task_id and e["outcome"] == "archived"]
    assert len(archived) == 1, archived
    queue = Queue("veo-archiver", connection=stack.rds, serializer=JSONSerializer)
    assert redis_keys.job_id("kie", task_id, "succeeded") in FinishedJobRegistry(queue=queue).get_job_ids()
    return manifest


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


def wait_midway(trickle: Trickle, at: int = 1024 * 1024) -> None:
    """Until ``at`` bytes of the 3 MiB are on their way: well inside the transfer."""
    wait_for(lambda: trickle.sent >= at, 30, interval=0.02, what=f"{at} bytes of the download sent")


def wait_idle(stack: Stack, worker: Service) -> None:
    """Until the worker's RQ loop waits for jobs (state idle), so the children it has now are all it keeps."""

    def idle() -> bool:
        return len(children(worker)) >= 1 and any(w.get_state() == "idle" for w in Worker.all(connection=stack.rds))

    wait_for(idle, 30, interval=0.05, what=f"the worker idle with its scheduler\n{stack.logs()}")


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
    files.behaviours[path] = trickle = Trickle()
    with crash_stack(redis_server, seaweed, s3_bucket, files, tmp_path) as stack:
        first = stack.start_worker()
        deliver(stack, "veo_task_kill9", url)
        wait_midway(trickle)
        # node loss: the worker and its horse die at once, nothing gets to clean up
        victims = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
        for proc in victims:
            os.kill(proc.pid, signal.SIGKILL)
        first.process.wait()  # type: ignore[union-attr]
        psutil.wait_procs(victims, timeout=5)
        assert stack.read(archive_keys.video_key("kie", "veo_task_kill9", 0)) is None  # no visible partial object
        assert stack.object_keys() == []  # nothing half-written: the raw callback is written with the manifest
        files.behaviours.pop(path)  # the file host serves at full speed from now on
        stack.start_worker()  # a fresh worker finds the abandoned job once its heartbeat lapses, and re-runs it
        manifest = assert_archived_once(stack, "veo_task_kill9", timeout=240)
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
    files.behaviours[path] = trickle = Trickle()
    with crash_stack(redis_server, seaweed, s3_bucket, files, tmp_path, RETRY_INTERVALS="1,1,1") as stack:
        worker = stack.start_worker()
        wait_idle(stack, worker)
        before = children(worker)
        deliver(stack, "veo_task_oom", url)
        wait_midway(trickle)
        horse = horse_of(worker, before)
        horse.send_signal(signal.SIGKILL)  # what the OOM killer does
        assert stack.read(archive_keys.video_key("kie", "veo_task_oom", 0)) is None
        files.behaviours.pop(path)
        assert_archived_once(stack, "veo_task_oom", timeout=90)
        assert worker.alive()


def test_sigterm_interrupts_a_long_download_and_another_worker_finishes_it(
    redis_server,
    seaweed,
    s3_bucket,
    files,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    path = "/slow/2.mp4"
    url = files.add(path, VIDEO)
    files.behaviours[path] = trickle = Trickle(pause=0.2)  # ~10 s: longer than the grace below
    with crash_stack(redis_server, seaweed, s3_bucket, files, tmp_path, RETRY_INTERVALS="1,1,1") as stack:
        leaving = stack.start_worker(WORKER_SHUTDOWN_GRACE="1")
        deliver(stack, "veo_task_deploy", url)
        wait_midway(trickle, at=256 * 1024)
        leaving.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        leaving.process.wait(timeout=30)  # type: ignore[union-attr]
        assert stack.read(archive_keys.video_key("kie", "veo_task_deploy", 0)) is None
        files.behaviours.pop(path)
        stack.start_worker()
        assert_archived_once(stack, "veo_task_deploy", timeout=90)


def test_sigterm_lets_a_download_inside_the_grace_period_finish(
    redis_server,
    seaweed,
    s3_bucket,
    files,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    path = "/slow/3.mp4"
    url = files.add(path, VIDEO)
    files.behaviours[path] = trickle = Trickle()
    with crash_stack(redis_server, seaweed, s3_bucket, files, tmp_path) as stack:
        worker = stack.start_worker(WORKER_SHUTDOWN_GRACE="60")
        deliver(stack, "veo_task_graceful", url)
        wait_midway(trickle)
        worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert worker.process.wait(timeout=60) == 0  # type: ignore[union-attr]
        assert_archived_once(stack, "veo_task_graceful", timeout=5)
        assert files.hits[path] == 1  # finished by the same worker, no second download
