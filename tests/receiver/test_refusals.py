"""Refused callbacks in plain sight: recorded in Redis by the receiver (best effort, off the request), shown by
``veo-archiver status`` (text and ``--json``), ``/ops`` and ``/metrics``; a Redis outage never turns a refusal
into a 500."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.procs import Service, start_receiver, wait_for
from tests.receiver.test_ops_page import Dom
from veo_archiver import redis_keys
from veo_archiver.cli.main import main
from veo_archiver.queue_view import snapshot
from veo_archiver.records import refusals
from veo_archiver.records.refusals import Refusal
from veo_archiver.settings import Settings
from veo_archiver.sim import kie as kie_sim
from veo_archiver.storage_settings import StorageSettings

KEY = "refusals-kie-key"
ADMIN = "refusals-admin-token-77c1"
Capture = pytest.CaptureFixture[str]


def recorded(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(redis_keys.REFUSALS_RECENT_LIST))
    finally:
        client.close()


@pytest.fixture
def receiver(redis_server, tmp_path: Path) -> Iterator[tuple[Service, str]]:  # type: ignore[no-untyped-def]
    env = {
        "REDIS_URL": redis_server.url,
        "KIE_WEBHOOK_HMAC_KEYS": KEY,
        "ADMIN_TOKEN": ADMIN,
        "ARCHIVE_URL": str(tmp_path / "archive"),
    }
    service, base = start_receiver(env, tmp_path)
    try:
        yield service, base
    finally:
        service.stop()


def status(capsys: Capture, *argv: str) -> tuple[int, str]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # main() points the root logger at this test's captured stderr: put pytest's handlers back after
        code = main(["--log-format", "text", "--log-level", "WARNING", "status", *argv])
    finally:
        root.handlers[:], root.level = handlers, level
    return code, capsys.readouterr().out


@pytest.mark.slow
def test_three_bad_signatures_show_in_status_ops_and_metrics(
    redis_server: Any, receiver: tuple[Service, str], tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base = receiver
    for n in range(3):
        task_id = f"veo_forged_{n}"
        body = kie_sim.success_body(task_id, ["https://cdn.example.com/v.mp4"])
        answer = kie_sim.send(base + "/callbacks/kie", body, kie_sim.signed_headers("not-the-key", task_id))
        assert answer.status_code == 401 and answer.json()["reason"] == "signature_mismatch"
    wait_for(lambda: recorded(redis_server.url) == 3, timeout=10, what="three refusals recorded")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    code, out = status(capsys, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["refusals"]["last_hour"] == {"kie": {"signature_mismatch": 3}}
    assert report["refusals"]["last_day"] == {"kie": {"signature_mismatch": 3}}
    assert report["refusals"]["last_hour_total"] == 3
    latest = report["refusals"]["recent"]
    assert [(r["provider"], r["reason"], r["status"], r["path"]) for r in latest] == [
        ("kie", "signature_mismatch", 401, "/callbacks/kie")
    ] * 3
    assert all(r["remote"] == "127.0.0.1" for r in latest)
    # the task each one named (read before its signature failed): a wrong key refuses real tasks
    assert [r["task_id"] for r in latest] == ["veo_forged_2", "veo_forged_1", "veo_forged_0"]
    assert KEY not in out and "not-the-key" not in out  # no secret, no signature, no body
    code, text = status(capsys)
    assert "refused in the last hour: 3 (signature_mismatch 3)" in text

    page = httpx.get(base + "/ops", headers={"Authorization": f"Bearer {ADMIN}"})
    assert page.status_code == 200
    dom = Dom(page.text)
    assert dom.cards["refused-last-hour"] == "3"
    assert dom.rows("refusal-counts") == [["kie", "signature_mismatch", "3", "3"]]
    rows = dom.rows("refusals")
    assert len(rows) == 3 and all(
        row[1:6] == ["kie", "signature_mismatch", "401", "127.0.0.1", "/callbacks/kie"] for row in rows
    )

    task_page = httpx.get(base + "/ops/tasks/kie/veo_forged_1", headers={"Authorization": f"Bearer {ADMIN}"})
    assert task_page.status_code == 200
    (refused,) = Dom(task_page.text).rows("task-refusals")
    assert refused[1:] == ["signature_mismatch", "401", "127.0.0.1", "/callbacks/kie"], refused
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = main(["--log-format", "text", "--log-level", "WARNING", "show", "kie", "veo_forged_1"])
    finally:
        root.handlers[:], root.level = handlers, level
    shown = capsys.readouterr().out
    assert code == 0, shown  # known: it was refused
    assert "refused deliveries: 1" in shown and "signature_mismatch" in shown, shown
    assert "check KIE_WEBHOOK_HMAC_KEYS" in shown and "veo-archiver track kie veo_forged_1" in shown, shown
    code = main(["--log-format", "text", "--log-level", "WARNING", "show", "kie", "veo_forged_1", "--json"])
    root.handlers[:], root.level = handlers, level
    told = json.loads(capsys.readouterr().out)
    assert [(r["reason"], r["task_id"]) for r in told["refusals"]] == [("signature_mismatch", "veo_forged_1")]

    metrics = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert 'veo_archiver_callbacks_refused_last_hour{provider="kie",reason="signature_mismatch"} 3.0' in metrics
    assert 'veo_archiver_callbacks_rejected_total{provider="kie",reason="signature_mismatch"} 3.0' in metrics


def app_settings(redis_server: Any, **overrides: Any) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        storage=StorageSettings(archive_url="./unused"),
        kie_hmac_keys=(KEY,),
        **overrides,
    )


def test_a_refusal_stays_a_quick_401_while_redis_is_down(redis_server) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_x", ["https://cdn.example.com/v.mp4"])
    with TestClient(create_app(app_settings(redis_server))) as client:
        redis_server.stop()
        started = time.monotonic()
        for _ in range(5):
            answer = client.post("/callbacks/kie", json=body, headers=kie_sim.signed_headers("wrong", "veo_x"))
            assert answer.status_code == 401 and answer.json()["reason"] == "signature_mismatch"
        unknown = client.post("/callbacks/nobody", json=body)
        assert unknown.status_code == 404
        assert time.monotonic() - started < 10  # no Redis retry loop on the way (each would take seconds)


def test_unknown_providers_and_floods_are_counted_exactly_within_bounds(redis_server) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_y", ["https://cdn.example.com/v.mp4"])
    with TestClient(create_app(app_settings(redis_server))) as client:
        for _ in range(120):
            assert client.post("/callbacks/kie", json=body).status_code == 401  # no signature at all
        assert client.post("/callbacks/<b>nobody<b>", json=body).status_code == 404
    # the app's shutdown waits for the writer: everything is in Redis now
    rds = redis_server.client()
    try:
        snap = snapshot(rds, "veo-archiver", now=time.time())
        assert snap.refusals.last_hour == {"kie": {"signature_missing": 120}, "unknown": {"unknown_provider": 1}}
        assert len(snap.refusals.recent) == refusals.RECENT_MAX
        newest = snap.refusals.recent[0]
        assert (newest.provider, newest.reason, newest.status, newest.path) == (
            "unknown",
            "unknown_provider",
            404,
            "/callbacks/<b>nobody<b>",
        )
        for key in rds.scan_iter("veo:refusals:*"):
            ttl = rds.ttl(key)
            assert key == redis_keys.REFUSALS_RECENT_LIST.encode() or 0 < ttl <= refusals.HOUR_TTL_S
    finally:
        rds.close()


def test_the_record_format_reads_back_and_skips_what_it_did_not_write() -> None:
    refusal = Refusal(at=1_800_000_000.5, provider="kie", reason="signature_mismatch", status=401, remote="10.0.0.9")
    assert refusals.decode(refusals.encode(refusal)) == refusal
    for junk in (b"", b"[]", b"{}", b'{"v": 2, "at": 1}', b"\xff\xfe", b'{"v": 1, "at": "x"}'):
        assert refusals.decode(junk) is None
    hashes = [{b"kie|signature_mismatch": b"2", b"garbage": b"1", b"apixo|token_invalid": b"x"}, None]
    assert refusals.tally(hashes) == {"kie": {"signature_mismatch": 2}}
