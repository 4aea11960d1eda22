"""``veo-archiver manifests --since``: the archive's manifests from storage itself, as outcome lines a pipeline
merges with ``veo:outcomes``. Against a local-directory archive (the CLI through ``main``, write times set on
the files), the in-memory archive (a fake clock), and the job run in-process with a real redis-server, whose
stream entries the lines must match."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from obstore.store import LocalStore

from tests.servers import RedisServer, SeaweedS3
from tests.workers.test_job_logic import NOW, TASK, VIDEO, World, succeeded
from veo_archiver import archive_keys, redis_keys
from veo_archiver.cli.main import main
from veo_archiver.cli.manifests import list_manifests, parse_since
from veo_archiver.clock import iso
from veo_archiver.errors import ConfigError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.sim.files import FileHost
from veo_archiver.storage_settings import StorageSettings
from workers.manifest import encode
from workers.storage import ObjectArchive, open_archive
from workers.storage_memory import MemoryArchive

Capture = pytest.CaptureFixture[str]
DAY = 86400.0


def manifest(provider: str, task_id: str, *, failed: bool = False, job_id: str | None = "job-x") -> dict[str, Any]:
    files = [] if failed else [{"index": 0, "key": archive_keys.video_key(provider, task_id, 0), "size": 1000}]
    return {
        "schema": 1,
        "provider": provider,
        "task_id": task_id,
        "status": "failed" if failed else "succeeded",
        "failure": {"code": "501", "message": "generation failed"} if failed else None,
        "files": files,
        "archived_at": iso(NOW),
        "job_id": job_id,
    }


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # main() points the root logger at this test's captured stderr: put pytest's handlers back after
        code = main(["--log-format", "text", "--log-level", "WARNING", *argv])
    finally:
        root.handlers[:], root.level = handlers, level
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A local-directory archive named by ARCHIVE_URL, with manifests written 3 days, 5 hours and 10 minutes
    ago (the files' modification times), a video beside each, and one failure manifest."""
    root = tmp_path / "archive"
    monkeypatch.chdir(tmp_path)  # no `up` state file around
    monkeypatch.setenv("ARCHIVE_URL", str(root))
    archive = open_archive(StorageSettings(archive_url=str(root)))
    now = time.time()
    for provider, task_id, age_s, failed in (
        ("kie", "old", 3 * DAY, False),
        ("kie", "recent", 5 * 3600, False),
        ("apixo", "fresh", 600, False),
        ("kie", "flagged", 300, True),
    ):
        key = archive_keys.manifest_key(provider, task_id)
        archive.put_bytes(key, encode(manifest(provider, task_id, failed=failed)))
        os.utime(root / key, (now - age_s, now - age_s))
        if not failed:
            archive.put_bytes(archive_keys.video_key(provider, task_id, 0), VIDEO)
    yield root


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_since_filters_by_write_time_and_lines_are_outcome_entries(local: Path, capsys: Capture) -> None:
    code, out, err = run(capsys, "manifests", "--since", "6h", "--json")
    assert code == 0, err
    lines = json_lines(out)
    assert [(x["provider"], x["task_id"]) for x in lines] == [
        ("kie", "recent"),
        ("apixo", "fresh"),
        ("kie", "flagged"),
    ]  # oldest write first
    recent, _, flagged = lines
    assert (recent["outcome"], recent["status"], recent["bytes"], recent["reason"]) == (
        "archived",
        "succeeded",
        1000,
        "",
    )
    assert recent["manifest"] == archive_keys.manifest_key("kie", "recent")
    assert recent["location"] == (local / recent["manifest"]).as_uri()
    assert recent["files"][0]["key"] == archive_keys.video_key("kie", "recent", 0)
    assert (recent["at"], recent["archived_at"], recent["job_id"]) == (iso(NOW), iso(NOW), "job-x")
    assert (flagged["outcome"], flagged["reason"], flagged["error"], flagged["files"]) == (
        "provider_failed",
        "501",
        "generation failed",
        [],
    )

    code, out, _ = run(capsys, "manifests", "--since", "4d", "--json")
    assert len(json_lines(out)) == 4
    code, out, _ = run(capsys, "manifests", "--since", "2030-01-01T00:00:00Z", "--json")
    assert (code, out) == (0, "")


def test_provider_filters_and_the_table_is_for_people(local: Path, capsys: Capture) -> None:
    code, out, _ = run(capsys, "manifests", "--since", "1w", "--provider", "kie", "--json")
    assert [x["task_id"] for x in json_lines(out)] == ["old", "recent", "flagged"]
    code, out, _ = run(capsys, "manifests", "--since", "1w", "--provider", "ki", "--json")
    assert out == ""  # a provider is a whole path segment, never a prefix of one
    code, out, _ = run(capsys, "manifests", "--since", "1h")
    assert code == 0
    head, fresh, flagged = out.splitlines()[:3]
    assert head.split() == ["MODIFIED", "OUTCOME", "PROVIDER", "TASK", "FILES", "BYTES", "REASON", "MANIFEST"]
    assert fresh.split()[1:] == ["archived", "apixo", "fresh", "1", "1000", "-", "apixo/fresh/manifest.json"]
    assert flagged.split()[1:] == ["provider_failed", "kie", "flagged", "0", "0", "501", "kie/flagged/manifest.json"]
    assert "2 manifest(s) written since" in out
    code, out, _ = run(capsys, "manifests", "--since", "1s")
    assert code == 0 and out.startswith("no manifest written since")


def test_an_unreadable_manifest_is_reported_and_the_others_still_listed(local: Path, capsys: Capture) -> None:
    (local / "kie" / "broken").mkdir()
    (local / "kie" / "broken" / "manifest.json").write_bytes(b"{not json")
    code, out, err = run(capsys, "manifests", "--since", "1h", "--json")
    assert code == 1 and "cannot read kie/broken/manifest.json" in err
    assert [x["task_id"] for x in json_lines(out)] == ["fresh", "flagged"]


def test_since_reads_iso_times_and_durations_and_refuses_the_rest(local: Path, capsys: Capture) -> None:
    assert parse_since("2026-11-27T10:00:00Z", 0) == parse_since("2026-11-27T10:00:00", 0) == 1_795_773_600.0
    assert parse_since("2026-11-27T11:00:00+01:00", 0) == 1_795_773_600.0
    assert [parse_since(t, 1e6) for t in ("90s", "15m", "2h", "3d", "1w", "1.5h")] == [
        1e6 - 90,
        1e6 - 900,
        1e6 - 7200,
        1e6 - 3 * DAY,
        1e6 - 7 * DAY,
        1e6 - 5400,
    ]
    with pytest.raises(ConfigError):
        parse_since("yesterday", 0)
    # a veo:outcomes stream id, or its milliseconds: what the README's catch-up recipe passes
    assert parse_since("1764800000000-0", 0) == parse_since("1764800000000", 0) == 1_764_800_000.0
    assert parse_since("1764800000123-7", 0) == 1_764_800_000.123
    with pytest.raises(ConfigError, match="milliseconds"):
        parse_since("1764800000", 0)  # seconds: refused, not read as 1970
    code, _, err = run(capsys, "manifests", "--since", "last week")
    assert code == 2 and "--since 'last week'" in err


def test_a_prefixed_archive_lists_keys_relative_to_its_prefix(tmp_path: Path) -> None:
    archive = ObjectArchive(LocalStore(str(tmp_path), mkdir=True), prefix="team/videos", base_url="x", attributes=False)
    archive.put_bytes(archive_keys.manifest_key("kie", "t1"), encode(manifest("kie", "t1")))
    ObjectArchive(LocalStore(str(tmp_path)), prefix="", base_url="x", attributes=False).put_bytes("other/kie", b"x")
    (line,) = list_manifests(archive, 0).lines
    assert line["manifest"] == "team/videos/kie/t1/manifest.json"  # the full key, as the stream has it
    assert line["files"][0]["key"] == "team/videos/kie/t1/0.mp4"
    assert [o.key for o in archive.iter_objects("kie")] == ["kie/t1/manifest.json"]


def test_the_in_memory_archive_lists_by_its_clock() -> None:
    clock = [NOW - DAY]
    archive = MemoryArchive(clock=lambda: clock[0])
    archive.put_bytes(archive_keys.manifest_key("kie", "a"), encode(manifest("kie", "a")))
    clock[0] = NOW
    archive.put_bytes(archive_keys.manifest_key("kie", "b"), encode(manifest("kie", "b")))
    archive.put_bytes(archive_keys.video_key("kie", "b", 0), VIDEO)
    assert [x["task_id"] for x in list_manifests(archive, NOW - 3600).lines] == ["b"]
    assert [x["task_id"] for x in list_manifests(archive, NOW - 2 * DAY, "kie").lines] == ["a", "b"]
    assert list_manifests(archive, 0, "apixo").lines == []


# ------------------------------------------------------------------------------------------- one vocabulary


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def test_lines_match_the_outcome_stream_entries_of_the_same_manifests(rds: redis.Redis) -> None:
    """The job, run in-process, publishes its entries; listing the archive afterwards gives the same outcome
    ids and fields: a consumer that merges both sources dedupes on ``outcome_id``."""
    with FileHost() as host:
        for task_id, event in (
            (TASK, succeeded(host.add("/v/0.mp4", VIDEO))),
            (
                "veo_flagged",
                TaskEvent(
                    provider="kie",
                    task_id="veo_flagged",
                    status=TaskStatus.FAILED,
                    failure_code="400",
                    failure_message="policy",
                    verification=Verification.SIGNATURE,
                ),
            ),
        ):
            w = World(host, confirm=False)
            w.archive = w.ctx.archive = archive = MemoryArchive(clock=lambda: NOW)
            w.job.id = redis_keys.job_id("kie", task_id, event.status.value)
            w.job.connection = rds  # type: ignore[assignment]
            w.run(event)
            (line,) = list_manifests(archive, NOW).lines
            ((_, raw),) = rds.xrevrange(redis_keys.outcomes_stream(), count=1)
            entry = {k.decode(): v.decode() for k, v in raw.items()}
            same = ("outcome", "outcome_id", "provider", "task_id", "status", "job_id", "reason", "error")
            assert {k: line[k] for k in same} == {k: entry[k] for k in same}
            assert (line["manifest"], line["location"], line["bytes"]) == (
                entry["manifest"],
                entry["location"],
                int(entry["bytes"]),
            )
            assert line["files"] == json.loads(entry["files"])
    assert rds.xlen(redis_keys.outcomes_stream()) == 2


def test_a_manifest_names_the_full_keys_and_the_archive_its_outcome_entry_gives(
    rds: redis.Redis, tmp_path: Path
) -> None:
    """A manifest read alone is enough: each file's full object key and the archive's location are in it,
    equal to the outcome entry's and to ``manifests --json``'s (a prefixed archive, where they differ from
    the relative ``key``)."""
    root = tmp_path / "store"
    archive = ObjectArchive(
        LocalStore(str(root), mkdir=True), prefix="archive", base_url=root.as_uri(), attributes=False, local_root=root
    )
    with FileHost() as host:
        w = World(host, confirm=False)
        w.archive = w.ctx.archive = archive  # type: ignore[assignment]
        w.job.id = redis_keys.job_id("kie", TASK, "succeeded")
        w.job.connection = rds  # type: ignore[assignment]
        w.run(succeeded(host.add("/v/0.mp4", VIDEO), host.add("/v/1.mp4", VIDEO)))
    body = json.loads((root / "archive" / archive_keys.manifest_key("kie", TASK)).read_bytes())
    ((_, raw),) = rds.xrevrange(redis_keys.outcomes_stream(), count=1)
    entry = {k.decode(): v.decode() for k, v in raw.items()}
    (line,) = list_manifests(archive, 0).lines

    keys = [f["object_key"] for f in body["files"]]
    assert keys == ["archive/kie/veo_task_1/0.mp4", "archive/kie/veo_task_1/1.mp4"]
    assert keys == [f["key"] for f in json.loads(entry["files"])] == [f["key"] for f in line["files"]]
    assert [f["key"] for f in body["files"]] == ["kie/veo_task_1/0.mp4", "kie/veo_task_1/1.mp4"]  # schema 1 kept
    assert body["schema"] == 1 and body["run"] == 1 and entry["run"] == "1" and line["run"] == 1
    where = body["archive"]
    assert where == {"backend": "local", "directory": str(root), "prefix": "archive", "url": f"{root.as_uri()}/archive"}
    # the manifest alone leads to the entry's manifest key and location
    manifest_key = archive_keys.manifest_key("kie", TASK)
    assert f"{where['prefix']}/{manifest_key}" == entry["manifest"] == line["manifest"]
    assert f"{where['url']}/{manifest_key}" == entry["location"] == line["location"]
    assert body["callback"]["object_key"] == f"archive/{body['callback']['key']}"
    for f in body["files"]:
        assert (root / f["object_key"]).read_bytes() == VIDEO


def test_where_an_archive_is_names_no_secret() -> None:
    settings = StorageSettings(
        archive_url="s3://videos/team/archive",
        endpoint_url="http://user:pw@127.0.0.1:9000/?X-Amz-Signature=abc",
        access_key_id="AKIA",
        secret_access_key="s3cr3t",  # noqa: S106 (a test value: where() must not show it)
    )
    where = open_archive(settings).where()
    assert where == {
        "backend": "s3",
        "bucket": "videos",
        "prefix": "team/archive",
        "url": "s3://videos/team/archive",
        "endpoint": "http://127.0.0.1:9000/",
    }


@pytest.mark.slow
def test_an_s3_archive_is_listed_the_same_way(
    seaweed: SeaweedS3, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    env = seaweed.env(s3_bucket, "videos")
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    archive = open_archive(
        StorageSettings(
            archive_url=env["ARCHIVE_URL"],
            endpoint_url=env["AWS_ENDPOINT_URL"],
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region=env["AWS_REGION"],
            allow_http=True,
        )
    )
    for provider, task_id in (("kie", "s3task"), ("apixo", "other")):
        archive.put_bytes(archive_keys.manifest_key(provider, task_id), encode(manifest(provider, task_id)))
        archive.put_bytes(archive_keys.video_key(provider, task_id, 0), VIDEO)
    code, out, err = run(capsys, "manifests", "--since", "1h", "--provider", "kie", "--json")
    assert code == 0, err
    (line,) = json_lines(out)
    assert line["manifest"] == "videos/kie/s3task/manifest.json"
    assert line["location"] == f"s3://{s3_bucket}/videos/kie/s3task/manifest.json"
