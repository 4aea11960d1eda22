"""The archive job's decisions, run in-process: an in-memory archive, an in-memory provider status API, a
fixed clock, and real downloads from a loopback file host through the production (egress-guarded) client.

The same job against real processes, Redis and SeaweedFS is in test_end_to_end.py and
test_providers_end_to_end.py; the in-memory archive is held to the real one's contract at the bottom.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rq.job import Retry

from veo_archiver import archive_keys
from veo_archiver.clock import iso
from veo_archiver.errors import BadContent, DownloadFailed, PermanentError, StorageUnavailable
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.settings import ProviderSettings, Settings
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4
from veo_archiver.storage_settings import StorageSettings
from workers.context import WorkerContext, fetch_policy
from workers.egress import EgressPolicy
from workers.fetch import build_client
from workers.jobs import run_archive
from workers.storage import Archive, ObjectArchive, open_archive
from workers.storage_memory import MemoryArchive

pytestmark = pytest.mark.rq_facing
NOW = 1_800_000_000.0
VIDEO = make_mp4(96 * 1024, seed=1)
OTHER = make_mp4(64 * 1024, seed=2)
TASK = "veo_task_1"


class StatusAPI:
    """The provider's status API in memory: ``tasks[(provider, task_id)]`` is what it answers."""

    def __init__(self, providers: set[str]) -> None:
        self.providers = providers
        self.tasks: dict[tuple[str, str], TaskEvent] = {}
        self.calls: list[tuple[str, str]] = []

    def can_confirm(self, provider: str) -> bool:
        return provider in self.providers

    def fetch(self, provider: str, task_id: str) -> TaskEvent:
        self.calls.append((provider, task_id))
        known = self.tasks.get((provider, task_id))
        if known is None:
            raise PermanentError(f"{provider} does not know task {task_id!r}", reason="unknown_task")
        return known


class JobRecord:
    """The slice of an RQ job the archive job touches, kept in memory."""

    def __init__(self) -> None:
        self.id = "job-1"
        self.meta: dict[str, Any] = {}
        self.number_of_retries: int | None = 0
        self.retries_left: int | None = None
        self.connection = None
        self.saves = 0

    def save_meta(self) -> None:
        self.saves += 1


class World:
    def __init__(self, host: FileHost, *, confirm: bool) -> None:
        self.host = host
        self.archive = MemoryArchive()
        self.status = StatusAPI({"kie"} if confirm else set())
        self.job = JobRecord()
        self.settings = Settings(
            providers={"kie": ProviderSettings(name="kie", api_key="k" if confirm else None)},
            download_allow_hosts=frozenset({("127.0.0.1", host.port)}),
        )
        policy = fetch_policy(self.settings)
        self.ctx = WorkerContext(
            settings=self.settings,
            archive=self.archive,
            client=build_client(policy, EgressPolicy(self.settings.download_allow_hosts)),
            fetch_policy=policy,
            status=self.status,
            clock=lambda: NOW,
        )

    def run(self, event: TaskEvent) -> dict[str, Any] | Retry:
        envelope = {
            "v": 1,
            "delivery_id": "d-1",
            "received_ts": NOW - 5,
            "event": event.to_json(),
            "callback": {"received_at": iso(NOW - 5), "remote": None, "path": "", "headers": {}, "body": "{}"},
        }
        return run_archive(envelope, self.ctx, self.job)

    def manifest(self) -> dict[str, Any]:
        raw = self.archive.get_bytes(archive_keys.manifest_key("kie", TASK))
        assert raw is not None
        value: dict[str, Any] = json.loads(raw)
        return value


@pytest.fixture
def host() -> Iterator[FileHost]:
    with FileHost() as h:
        yield h


def succeeded(*urls: str, verification: Verification = Verification.SIGNATURE) -> TaskEvent:
    return TaskEvent(
        provider="kie", task_id=TASK, status=TaskStatus.SUCCEEDED, result_urls=urls, verification=verification
    )


VIDEO_KEY = archive_keys.video_key("kie", TASK, 0)
MANIFEST_KEY = archive_keys.manifest_key("kie", TASK)


def test_a_plain_success_streams_the_video_and_writes_the_manifest_last(host: FileHost) -> None:
    w = World(host, confirm=False)
    url = host.add("/v/0.mp4", VIDEO)
    result = w.run(succeeded(url))
    assert isinstance(result, dict) and result["outcome"] == "archived"
    assert w.archive.get_bytes(VIDEO_KEY) == VIDEO
    assert w.archive.content_type(VIDEO_KEY) == "video/mp4"
    assert w.archive.content_type(MANIFEST_KEY) == "application/json"
    assert list(w.archive.objects)[-1] == MANIFEST_KEY  # the commit marker comes last
    manifest = w.manifest()
    assert manifest["files"][0]["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert (manifest["archived_at"], manifest["confirmed"], "claimed" in manifest) == (iso(NOW), None, False)
    assert w.job.meta["files"]["0"]["key"] == VIDEO_KEY  # progress kept for a retry


def test_confirmation_disagreement_archives_the_providers_urls_and_records_the_claim(host: FileHost) -> None:
    w = World(host, confirm=True)
    claimed = host.add("/claimed.mp4", OTHER)
    confirmed = host.add("/confirmed.mp4", VIDEO)
    w.status.tasks[("kie", TASK)] = succeeded(confirmed, verification=Verification.PROVIDER_API)
    result = w.run(succeeded(claimed))
    assert isinstance(result, dict) and result["outcome"] == "archived"
    assert w.status.calls == [("kie", TASK)]
    assert host.hits["/claimed.mp4"] == 0
    assert w.archive.get_bytes(VIDEO_KEY) == VIDEO
    manifest = w.manifest()
    assert manifest["claimed"] == {"status": "succeeded", "result_urls": [claimed]}
    assert manifest["confirmed"] == {"via": "provider_api", "at": iso(NOW)}
    assert [f["source_url"] for f in manifest["files"]] == [confirmed]
    assert manifest["verification"] == "signature"  # how the callback was verified, not how it was confirmed


def test_an_existing_video_object_is_checked_and_reused_not_rewritten(host: FileHost) -> None:
    w = World(host, confirm=False)
    w.archive.put_bytes(VIDEO_KEY, VIDEO)  # e.g. a worker that died between the video and the manifest
    url = host.add("/v/0.mp4", OTHER)
    result = w.run(succeeded(url))
    assert isinstance(result, dict) and result["outcome"] == "archived"
    assert host.hits["/v/0.mp4"] == 0
    assert (w.archive.writes[VIDEO_KEY], w.archive.get_bytes(VIDEO_KEY)) == (1, VIDEO)
    (record,) = w.manifest()["files"]
    assert (record["size"], record["sha256"], record["source_url"]) == (
        len(VIDEO),
        hashlib.sha256(VIDEO).hexdigest(),
        url,
    )


def test_an_existing_object_that_is_not_a_video_is_a_conflict_not_overwritten(host: FileHost) -> None:
    w = World(host, confirm=False)
    w.archive.put_bytes(VIDEO_KEY, b"<html>not a video</html>")
    with pytest.raises(BadContent):
        w.run(succeeded(host.add("/v/0.mp4", VIDEO)))
    assert w.job.meta["dead_letter"]["reason"] == "archive_conflict"
    assert w.archive.get_bytes(VIDEO_KEY) == b"<html>not a video</html>"
    assert w.archive.head(MANIFEST_KEY) is None


def test_a_provider_failure_writes_a_failure_manifest_and_downloads_nothing(host: FileHost) -> None:
    w = World(host, confirm=False)
    failed = TaskEvent(
        provider="kie",
        task_id=TASK,
        status=TaskStatus.FAILED,
        failure_code="501",
        failure_message="generation failed",
        verification=Verification.SIGNATURE,
    )
    result = w.run(failed)
    assert isinstance(result, dict) and (result["outcome"], result["files"]) == ("provider_failed", [])
    manifest = w.manifest()
    assert (manifest["status"], manifest["failure"], manifest["files"]) == (
        "failed",
        {"code": "501", "message": "generation failed"},
        [],
    )
    assert w.archive.keys() == sorted([archive_keys.callback_key("kie", TASK, "failed"), MANIFEST_KEY])
    assert sum(host.hits.values()) == 0
    again = w.run(failed)  # a redelivered failure finds the manifest: nothing is rewritten
    assert isinstance(again, dict) and again["outcome"] == "already_archived"
    assert w.archive.writes[MANIFEST_KEY] == 1


def test_an_expired_url_without_an_api_key_is_dead_lettered_and_nothing_is_half_written(host: FileHost) -> None:
    w = World(host, confirm=False)
    with pytest.raises(DownloadFailed):
        w.run(succeeded(f"{host.base_url}/gone.mp4"))
    assert host.hits["/gone.mp4"] == 1
    dead = w.job.meta["dead_letter"]
    assert (dead["reason"], dead["at"], w.job.retries_left) == ("http_404", iso(NOW), 0)
    assert w.archive.keys() == []  # the raw callback is written only with the manifest: nothing half-written


def test_a_task_the_provider_does_not_know_is_dead_lettered_before_anything_is_written(host: FileHost) -> None:
    w = World(host, confirm=True)
    with pytest.raises(PermanentError):
        w.run(succeeded(host.add("/forged.mp4", VIDEO)))
    assert w.job.meta["dead_letter"]["reason"] == "unknown_task"
    assert (w.archive.keys(), host.hits["/forged.mp4"]) == ([], 0)


def test_a_task_the_provider_has_not_finished_is_retried_later(host: FileHost) -> None:
    w = World(host, confirm=True)
    w.status.tasks[("kie", TASK)] = TaskEvent(provider="kie", task_id=TASK, status=TaskStatus.IN_PROGRESS)
    result = w.run(succeeded(host.add("/v/0.mp4", VIDEO)))
    assert isinstance(result, Retry)
    assert [(a["reason"], a["at"]) for a in w.job.meta["attempts"]] == [("not_ready", iso(NOW))]
    assert "dead_letter" not in w.job.meta and w.archive.keys() == []


# ---------------------------------------------------------------------------------------------------------
# the in-memory archive keeps the real one's contract (the local-directory ObjectArchive stands in for S3
# here; test_fetch.py runs the streaming cases against SeaweedFS too)


@pytest.fixture(params=["memory", "local"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Archive:
    if request.param == "memory":
        return MemoryArchive()
    real = open_archive(StorageSettings(archive_url=str(tmp_path / "archive")))
    assert isinstance(real, ObjectArchive)
    return real


def test_archive_contract_reads_and_writes(archive: Archive) -> None:
    assert (archive.get_bytes("k/a.json"), archive.head("k/a.json")) == (None, None)
    assert archive.put_if_absent("k/a.json", b"{}") is True
    assert archive.put_if_absent("k/a.json", b"[]") is False
    assert archive.get_bytes("k/a.json") == b"{}"
    archive.put_bytes("k/a.json", b"{ }")
    assert archive.get_bytes("k/a.json") == b"{ }"
    archive.put_stream("k/0.mp4", iter([VIDEO[:1000], VIDEO[1000:]]))
    stored = archive.head("k/0.mp4")
    assert stored is not None and stored.size == len(VIDEO)
    assert b"".join(archive.iter_bytes("k/0.mp4")) == VIDEO
    assert archive.location("k/0.mp4").endswith("/k/0.mp4")


def test_archive_contract_a_failing_stream_leaves_nothing(archive: Archive) -> None:
    class Broken(Exception):
        pass

    def chunks() -> Iterator[bytes]:
        yield VIDEO[:1000]
        raise Broken("connection dropped")

    with pytest.raises((Broken, StorageUnavailable)):
        archive.put_stream("k/0.mp4", chunks())
    assert archive.head("k/0.mp4") is None


def test_archive_contract_lists_objects_by_whole_segments_with_their_write_time(archive: Archive) -> None:
    before = time.time() - 5  # the local store stamps with the filesystem's clock
    for key in ("kie/t1/manifest.json", "kie/t1/0.mp4", "kie2/t9/manifest.json", "apixo/t2/manifest.json"):
        archive.put_bytes(key, b"{}" if key.endswith(".json") else VIDEO)
    listed = {o.key: o for o in archive.iter_objects()}
    assert sorted(listed) == ["apixo/t2/manifest.json", "kie/t1/0.mp4", "kie/t1/manifest.json", "kie2/t9/manifest.json"]
    assert listed["kie/t1/0.mp4"].size == len(VIDEO)
    assert all(before <= o.modified <= time.time() + 5 for o in listed.values())
    assert sorted(o.key for o in archive.iter_objects("kie")) == ["kie/t1/0.mp4", "kie/t1/manifest.json"]
    assert sorted(o.key for o in archive.iter_objects("kie/t1/")) == ["kie/t1/0.mp4", "kie/t1/manifest.json"]
    assert list(archive.iter_objects("nobody")) == []
