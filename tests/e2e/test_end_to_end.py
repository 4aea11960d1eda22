"""End to end with real processes: redis-server, SeaweedFS S3, the receiver under uvicorn, an RQ worker
process, and a simulated kie.ai serving real bytes. A signed callback becomes an archived, verified video."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from tests.procs import start_receiver, start_worker, wait_for
from veo_archiver import archive_keys, redis_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4

pytestmark = pytest.mark.slow
KEY = "e2e-kie-key"


def base_env(redis_url: str, files: FileHost) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "KIE_WEBHOOK_HMAC_KEYS": f"old-key,{KEY}",
        "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
        "LOG_FORMAT": "json",
    }


def deliver(base: str, task_id: str, urls: list[str], form: str = "list") -> httpx.Response:
    body = kie_sim.success_body(task_id, urls, form=form)
    return kie_sim.send(base + "/callbacks/kie", body, kie_sim.signed_headers(KEY, task_id))


def run_archive_scenario(env: dict[str, str], tmp_path: Path, read_object, list_keys) -> None:  # type: ignore[no-untyped-def]
    videos = [make_mp4(700_000, seed=1), make_mp4(1_300_000, seed=2)]
    with FileHost() as files:
        env = {**env, **base_env(env["REDIS_URL"], files)}
        urls = [files.add(f"/cdn/{n}.mp4", data) for n, data in enumerate(videos)]
        receiver, base = start_receiver(env, tmp_path)
        worker = start_worker(env, tmp_path)
        try:
            task_id = "veo_task_e2e"
            first = deliver(base, task_id, urls, form="bracket")
            assert first.status_code == 200 and first.json() == {"code": 200, "msg": "success"}
            manifest_key = archive_keys.manifest_key("kie", task_id)
            raw = wait_for(lambda: read_object(manifest_key), 60, what=f"manifest\n{worker.log()[-3000:]}")
            manifest = json.loads(raw)
            # a second delivery of the same callback (kie retries): 200, no second job, no second archive
            again = deliver(base, task_id, urls, form="json")
            assert again.status_code == 200 and again.headers["x-archiver-outcome"] == "duplicate"
        finally:
            worker.stop()
            receiver.stop()
        assert manifest["provider"] == "kie" and manifest["task_id"] == task_id
        assert manifest["status"] == "succeeded" and manifest["verification"] == "signature"
        assert manifest["received_at"] and manifest["archived_at"] >= manifest["received_at"]
        assert manifest["callback"]["key"] == archive_keys.callback_key("kie", task_id, "succeeded")
        assert json.loads(read_object(manifest["callback"]["key"]))["body"]
        assert [f["source_url"] for f in manifest["files"]] == urls
        for n, (entry, data) in enumerate(zip(manifest["files"], videos, strict=True)):
            assert entry["key"] == archive_keys.video_key("kie", task_id, n)
            stored = read_object(entry["key"])
            assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert entry["size"] == len(data) and entry["content_type"] == "video/mp4"
        assert files.completed["/cdn/0.mp4"] == 1 and files.completed["/cdn/1.mp4"] == 1
        assert sorted(list_keys()) == sorted(
            [
                archive_keys.video_key("kie", task_id, 0),
                archive_keys.video_key("kie", task_id, 1),
                manifest_key,
                archive_keys.callback_key("kie", task_id, "succeeded"),
            ]
        )


def test_signed_callback_archived_to_s3(redis_server, seaweed, s3_bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s3 = seaweed.boto3_client()
    prefix = "videos"
    env = {"REDIS_URL": redis_server.url, **seaweed.env(s3_bucket, prefix)}

    def read_object(key: str) -> bytes | None:
        try:
            return s3.get_object(Bucket=s3_bucket, Key=f"{prefix}/{key}")["Body"].read()  # type: ignore[no-any-return]
        except s3.exceptions.NoSuchKey:
            return None

    def list_keys() -> list[str]:
        listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        return [o["Key"].removeprefix(prefix + "/") for o in listed]

    run_archive_scenario(env, tmp_path, read_object, list_keys)
    rds = redis_server.client()
    queue = Queue("veo-archiver", connection=rds, serializer=JSONSerializer)
    assert len(queue) == 0
    assert FinishedJobRegistry(queue=queue).get_job_ids() == [redis_keys.job_id("kie", "veo_task_e2e", "succeeded")]


@pytest.mark.rq_facing  # the one end-to-end archive CI runs again under RQ 3 (.ci/run)
def test_signed_callback_archived_to_local_directory(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "archive"
    env = {"REDIS_URL": redis_server.url, "ARCHIVE_URL": root.as_uri()}

    def read_object(key: str) -> bytes | None:
        path = root / key
        return path.read_bytes() if path.exists() else None

    def list_keys() -> list[str]:
        return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]

    run_archive_scenario(env, tmp_path, read_object, list_keys)


def test_failure_callback_recorded_without_download(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "archive"
    with FileHost() as files:
        env = {**base_env(redis_server.url, files), "ARCHIVE_URL": str(root)}
        receiver, base = start_receiver(env, tmp_path)
        worker = start_worker(env, tmp_path)
        try:
            body = kie_sim.failure_body("veo_task_flagged", 400)
            response = kie_sim.send(base + "/callbacks/kie", body, kie_sim.signed_headers(KEY, "veo_task_flagged"))
            assert response.status_code == 200
            path = root / archive_keys.manifest_key("kie", "veo_task_flagged")
            wait_for(path.exists, 60, what="failure manifest")
        finally:
            worker.stop()
            receiver.stop()
    manifest = json.loads(path.read_text())
    assert manifest["status"] == "failed" and manifest["files"] == []
    assert manifest["failure"] == {"code": "400", "message": body["msg"]}
    assert sum(files.hits.values()) == 0
