"""``veo-archiver status`` shows the receiver's local spool (SPOOL_DIR in the working directory), with Redis
up or down, in text and ``--json``; a spool that does not drain, or quarantined entries, are "stuck"."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from receiver.spool import REJECTED_DIR, Spool, encode_entry
from receiver.spool_files import QUARANTINE_DIR
from veo_archiver.cli.main import main
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.intake import Delivery
from veo_archiver.settings import DEFAULT_SPOOL_DIR, MiB

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def here(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # type: ignore[no-untyped-def]
    """A working directory like the receiver's host: REDIS_URL set, SPOOL_DIR left to its default."""
    for name in ("SPOOL_DIR", "QUEUE_NAME", "RECONCILE_AFTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spool_two(directory: Path) -> Spool:
    spool = Spool(directory, max_bytes=MiB, max_files=10)
    for task_id in ("veo_a", "veo_b"):
        event = TaskEvent(
            provider="kie",
            task_id=task_id,
            status=TaskStatus.SUCCEEDED,
            result_urls=("https://cdn.example.com/v.mp4",),
            verification=Verification.SIGNATURE,
        )
        spool.append(encode_entry(event, Delivery(b"{}", {}, 1_700_000_000.0, None, "/callbacks/kie")))
    return spool


def run(capsys: Capture, *argv: str) -> tuple[int, str]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # main() points the root logger at this test's captured stderr: put pytest's handlers back after
        code = main(["--log-format", "text", "--log-level", "WARNING", *argv])
    finally:
        root.handlers[:], root.level = handlers, level
    return code, capsys.readouterr().out


def run_json(capsys: Capture, *argv: str) -> tuple[int, Any]:
    code, out = run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_status_shows_the_spool_waiting_in_this_directory(here: Path, capsys: Capture) -> None:
    spool_two(here / DEFAULT_SPOOL_DIR)
    code, s = run_json(capsys, "status")
    assert code == 0
    assert s["spool"]["entries"] == 2 and s["spool"]["bytes"] > 0 and s["spool"]["rejected"] == 0
    assert s["spool"]["directory"] == str((here / DEFAULT_SPOOL_DIR).resolve())
    assert 0 <= s["spool"]["oldest_age_s"] < 60 and s["stuck"] is False  # young: the receiver is draining
    code, out = run(capsys, "status")
    assert code == 0
    assert f"local spool {(here / DEFAULT_SPOOL_DIR).resolve()}: 2 callback(s) waiting (" in out
    assert out.rstrip().endswith("nothing stuck")


def test_status_without_a_spool_here_says_nothing_of_it(here: Path, capsys: Capture) -> None:
    code, s = run_json(capsys, "status")
    assert code == 0 and s["spool"] is None
    assert "local spool" not in run(capsys, "status")[1]


def test_a_spool_that_does_not_drain_and_quarantined_entries_are_stuck(here: Path, capsys: Capture) -> None:
    spool = spool_two(here / DEFAULT_SPOOL_DIR)
    (oldest, *_) = spool.pending()
    old_name = f"{time.time_ns() - 3600 * 10**9:020d}-old.json"  # spooled an hour ago
    oldest.path.rename(spool.directory / old_name)
    (spool.directory / REJECTED_DIR).mkdir()
    (spool.directory / REJECTED_DIR / f"{time.time_ns():020d}-bad.json").write_bytes(b"not json")
    held = spool.directory / QUARANTINE_DIR / f"{time.time_ns():020d}-held.json"
    held.parent.mkdir()
    held.write_bytes(b"{}")
    reason = {"reason": "queue_unavailable", "error": "bulk too long", "attempts": 5, "quarantined_at": time.time()}
    held.with_name(held.name + ".reason").write_text(json.dumps(reason))
    code, s = run_json(capsys, "status")
    assert code == 0 and s["stuck"] is True
    assert s["spool"]["entries"] == 2 and s["spool"]["rejected"] == 1 and s["spool"]["oldest_age_s"] >= 3600
    assert s["spool"]["quarantined"] == 1
    assert s["spool"]["latest_quarantined"][0]["reason"] == "queue_unavailable"
    problems = "\n".join(s["problems"])
    assert "2 callback(s) in the local spool" in problems and "is the receiver on this host running?" in problems
    assert "1 spool entry unreadable, set aside in" in problems
    assert f"1 spool entry quarantined in {s['spool']['directory']}/quarantine (latest: {held.name}" in problems
    assert "bulk too long" in problems and "spool requeue" in problems
    out = run(capsys, "status")[1]
    assert "1 rejected (unreadable) in rejected/, 1 quarantined in quarantine/" in out and "stuck:" in out


def test_status_shows_the_spool_while_redis_is_down(here: Path, redis_server, capsys: Capture) -> None:  # type: ignore[no-untyped-def]
    spool_two(here / DEFAULT_SPOOL_DIR)
    redis_server.stop()
    code, s = run_json(capsys, "status")
    assert code == 2  # could not run: the one exit code for an unreachable Redis
    assert s["redis"] == "unreachable" and "REDIS_URL" in s["error"]
    assert s["spool"]["entries"] == 2
    code, out = run(capsys, "status")
    assert code == 2
    assert out.startswith(f"cannot reach Redis at {redis_server.url} (REDIS_URL, set in the environment)")
    assert "2 callback(s) waiting" in out
