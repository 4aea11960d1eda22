"""The ``veo:outcomes`` record on a real redis-server, from the job run in-process (in-memory archive,
loopback file host, as in test_job_logic.py): one entry per end, in one vocabulary, at least once and
exactly once in the stream even when the publish is lost; content types from the bytes; nothing
half-written by a dead letter."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
import redis
from rq.job import Retry

from tests.servers import _NO_RETRY, RedisServer, free_port
from tests.workers.test_job_logic import NOW, TASK, VIDEO, World, succeeded
from veo_archiver import archive_keys, redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import BadContent, DownloadFailed
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.records import outcome as outcomes
from veo_archiver.sim.files import FileHost
from workers.mp4 import media_type

pytestmark = pytest.mark.rq_facing


@pytest.fixture
def host() -> Iterator[FileHost]:
    with FileHost() as h:
        yield h


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def entries(rds: redis.Redis) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in rds.xrange(redis_keys.outcomes_stream())
    ]


def world(host: FileHost, connection: redis.Redis, job_id: str) -> World:
    w = World(host, confirm=False)
    w.job.id = job_id
    w.job.connection = connection  # type: ignore[assignment]
    return w


def kie_failure(task_id: str) -> TaskEvent:
    return TaskEvent(
        provider="kie",
        task_id=task_id,
        status=TaskStatus.FAILED,
        failure_code="501",
        failure_message="generation failed",
        verification=Verification.SIGNATURE,
    )


def test_success_provider_failure_and_dead_letter_each_leave_one_entry(host: FileHost, rds: redis.Redis) -> None:
    ok = world(host, rds, "job-ok")
    ok.run(succeeded(host.add("/v/0.mp4", VIDEO)))
    failed = world(host, rds, "job-failed")
    failed.run(kie_failure("veo_task_failed"))
    dead = world(host, rds, "job-dead")
    with pytest.raises(DownloadFailed):
        dead.run(succeeded(f"{host.base_url}/gone.mp4"))

    archived, provider_failed, dead_letter = entries(rds)
    assert [e["outcome"] for e in (archived, provider_failed, dead_letter)] == [
        "archived",
        "provider_failed",
        "dead_letter",
    ]
    assert [e["job_id"] for e in (archived, provider_failed, dead_letter)] == ["job-ok", "job-failed", "job-dead"]
    assert {e["at"] for e in (archived, provider_failed, dead_letter)} == {iso(NOW)}
    assert (archived["status"], archived["reason"], archived["error"]) == ("succeeded", "", "")
    manifest_key = archive_keys.manifest_key("kie", TASK)
    assert archived["manifest"] == ok.archive.object_key(manifest_key)
    assert archived["location"] == ok.archive.location(manifest_key)
    (file,) = json.loads(archived["files"])
    assert (file["key"], file["content_type"], archived["bytes"]) == (
        archive_keys.video_key("kie", TASK, 0),
        "video/mp4",
        str(len(VIDEO)),
    )
    assert (provider_failed["status"], provider_failed["reason"], provider_failed["error"]) == (
        "failed",
        "501",
        "generation failed",
    )
    assert (dead_letter["status"], dead_letter["reason"]) == ("succeeded", "http_404")
    assert "404" in dead_letter["error"]
    expected_id = hashlib.sha256("\x1f".join(("kie", TASK, "succeeded", "archived", "job-ok")).encode()).hexdigest()
    assert archived["outcome_id"] == expected_id
    assert len({e["outcome_id"] for e in (archived, provider_failed, dead_letter)}) == 3


def closed_port_client() -> redis.Redis:
    # a port below the ephemeral range: no outgoing connection can take it (or connect to itself on it)
    return redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=_NO_RETRY)


def test_a_lost_publish_retries_the_job_and_the_entry_appears_once(host: FileHost, rds: redis.Redis) -> None:
    w = world(host, closed_port_client(), "job-fault")
    url = host.add("/v/0.mp4", VIDEO)
    first = w.run(succeeded(url))  # manifest written, then the publish's connection fails
    assert isinstance(first, Retry)
    assert w.archive.head(archive_keys.manifest_key("kie", TASK)) is not None
    assert w.job.meta["attempts"][-1]["reason"] == "outcome_unpublished"
    assert entries(rds) == []

    w.job.connection = rds  # type: ignore[assignment]
    for _ in range(2):  # the retry publishes; a further re-run finds the marker and adds nothing
        again = w.run(succeeded(url))
        assert isinstance(again, dict) and again["outcome"] == "already_archived"
    (entry,) = entries(rds)
    assert (entry["outcome"], entry["job_id"], entry["status"]) == ("archived", "job-fault", "succeeded")
    assert json.loads(entry["files"])[0]["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert host.hits["/v/0.mp4"] == 1  # the video was not downloaded again
    assert rds.ttl(outcomes.published_marker(entry["outcome_id"])) > 0


def test_a_dead_letter_whose_publish_failed_is_published_by_maintenance_once(host: FileHost, rds: redis.Redis) -> None:
    """A dead letter's outcome is at least once too: its mark says ``published: false`` until the entry is in the
    stream, and worker maintenance (the failed-registry pass) publishes it, once, whoever tries again."""
    from workers.job_meta import republish_dead_letter

    w = world(host, closed_port_client(), "job-dead-fault")
    with pytest.raises(DownloadFailed):
        w.run(succeeded(f"{host.base_url}/gone.mp4"))
    assert w.job.meta["dead_letter"]["published"] is False
    assert entries(rds) == []

    w.job.connection = rds  # type: ignore[assignment]
    assert republish_dead_letter(w.job) is True
    assert republish_dead_letter(w.job) is False  # settled: nothing more to do
    w.job.meta["dead_letter"]["published"] = False  # even a second publish of the same end adds nothing
    republish_dead_letter(w.job)
    (entry,) = entries(rds)
    assert (entry["outcome"], entry["job_id"], entry["reason"]) == ("dead_letter", "job-dead-fault", "http_404")
    assert entry["status"] == "succeeded" and "404" in entry["error"]


def quicktime(data: bytes) -> bytes:
    assert data[4:12] == b"ftypisom"
    return data[:8] + b"qt  " + data[12:16] + b"qt  " * ((int.from_bytes(data[:4], "big") - 16) // 4) + data[32:]


def test_media_type_reads_the_brands() -> None:
    assert media_type(VIDEO[:64]) == ("video/mp4", ".mp4")
    assert media_type(quicktime(VIDEO)[:64]) == ("video/quicktime", ".mov")
    assert media_type(b"\0\0\0\x08wide\0\0\0\x10mdat") == ("video/quicktime", ".mov")


def test_a_quicktime_file_is_stored_as_mov_with_its_content_type(host: FileHost, rds: redis.Redis) -> None:
    w = world(host, rds, "job-mov")
    mov = quicktime(VIDEO)
    result = w.run(succeeded(host.add("/v/0.mp4", mov)))  # the URL says .mp4; the bytes say QuickTime
    assert isinstance(result, dict) and result["outcome"] == "archived"
    key = archive_keys.video_key("kie", TASK, 0, ".mov")
    assert (w.archive.get_bytes(key), w.archive.content_type(key)) == (mov, "video/quicktime")
    assert w.archive.head(archive_keys.video_key("kie", TASK, 0)) is None
    (record,) = w.manifest()["files"]
    assert (record["key"], record["content_type"]) == (key, "video/quicktime")
    del w.archive.objects[archive_keys.manifest_key("kie", TASK)]  # a worker died before the manifest
    w.job.id = "job-mov-2"
    again = w.run(succeeded(f"{host.base_url}/gone.mp4"))  # the .mov is found and reused: no download
    assert isinstance(again, dict) and again["outcome"] == "archived"
    assert w.manifest()["files"][0]["content_type"] == "video/quicktime"


def test_a_dead_letter_leaves_nothing_in_the_archive(host: FileHost, rds: redis.Redis) -> None:
    w = world(host, rds, "job-webm")
    webm = b"\x1a\x45\xdf\xa3" + bytes(64 * 1024)
    with pytest.raises(BadContent):
        w.run(succeeded(host.add("/v/0.webm", webm, content_type="video/webm")))
    assert w.archive.keys() == []  # no raw callback without its manifest
    (entry,) = entries(rds)
    assert (entry["outcome"], entry["reason"]) == ("dead_letter", "not_a_video")
