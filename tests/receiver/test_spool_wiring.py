"""The spool wired into the receiver: a real redis-server stopped under a running app (TestClient), a real
spool directory. A callback Redis cannot take is answered 200 ``spooled`` once on disk, 503 past the spool's
bound, and reaches Redis when it answers again, at startup too; SPOOL_* settings; /metrics shows the spool.
``/readyz`` says 503 when Redis is down and the spool cannot take a write; a quarantined entry shows in
/metrics and /ops.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from receiver import spool as spool_module
from receiver.app import create_app
from receiver.spool import Spool, encode_entry, survey
from receiver.spool_files import Attempts, SpoolEntry, write_attempts
from tests import stacks
from tests.procs import wait_for
from veo_archiver import redis_keys
from veo_archiver.errors import ConfigError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.intake import Delivery
from veo_archiver.settings import DEFAULT_SPOOL_DIR, MiB, Settings
from veo_archiver.sim import kie as kie_sim

KEY = "spool-hmac-key"
ADMIN = "spool-ops-token"
QUEUE = "veo-archiver"
URL = "https://tempfile.aiquickdraw.com/v/abc.mp4"
#: generous bound on waiting for the drainer (it looks every second); never a measured threshold
DRAIN_WAIT_S = 30


def settings_for(redis_server, spool_dir: Path, **overrides) -> Settings:  # type: ignore[no-untyped-def]
    # metrics_public: TestClient's client is "testclient", not loopback
    return stacks.settings_for(
        redis_server, kie_hmac_keys=(KEY,), spool_dir=spool_dir, metrics_public=True, **overrides
    )


def post(client: TestClient, task_id: str):  # type: ignore[no-untyped-def]
    body = json.dumps(kie_sim.success_body(task_id, [URL])).encode()
    return client.post("/callbacks/kie", content=body, headers=kie_sim.signed_headers(KEY, task_id))


def queued(redis_server) -> list[str]:  # type: ignore[no-untyped-def]
    with redis_server.client() as rds:
        return [v.decode() for v in rds.lrange(redis_keys.rq_queue_key(QUEUE), 0, -1)]


def job(task_id: str) -> str:
    return redis_keys.job_id("kie", task_id, "succeeded")


def spooled_files(directory: Path) -> int:
    return survey(directory, 0.0).entries


def test_callback_spooled_while_redis_is_down_then_drained(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tmp_path / "spool"
    with TestClient(create_app(settings_for(redis_server, spool_dir))) as client:
        assert post(client, "veo_before").headers["x-archiver-outcome"] == "accepted"
        redis_server.stop()
        response = post(client, "veo_outage")
        assert response.status_code == 200
        assert response.json() == {"code": 200, "msg": "success"}
        assert response.headers["x-archiver-outcome"] == "spooled"
        assert spooled_files(spool_dir) == 1  # on disk before the answer
        ready = client.get("/readyz")  # still in service: a callback sent here is kept, in the spool
        assert ready.status_code == 200 and ready.json()["spool"] == "accepting", ready.text
        scrape = client.get("/metrics").text
        assert 'veo_archiver_callbacks_spooled_total{provider="kie"} 1.0' in scrape
        assert "veo_archiver_spool_entries 1.0" in scrape
        assert "veo_archiver_spool_oldest_age_seconds" in scrape

        redis_server.start()
        wait_for(lambda: spooled_files(spool_dir) == 0, DRAIN_WAIT_S, what="the spool drained")
        assert queued(redis_server) == [job("veo_before"), job("veo_outage")]
        # deduplicated as usual: the provider's own retry of the spooled callback is a duplicate
        again = post(client, "veo_outage")
        assert (again.status_code, again.headers["x-archiver-outcome"]) == (200, "duplicate")
        scrape = client.get("/metrics").text
        assert "veo_archiver_spool_entries 0.0" in scrape
        assert 'veo_archiver_spool_drained_total{outcome="accepted"} 1.0' in scrape
    assert len(queued(redis_server)) == 2


def test_past_the_spool_bound_the_answer_is_503(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tmp_path / "spool"
    with TestClient(create_app(settings_for(redis_server, spool_dir, spool_max_files=1))) as client:
        redis_server.stop()
        first = post(client, "veo_fits")
        assert (first.status_code, first.headers["x-archiver-outcome"]) == (200, "spooled")
        full = post(client, "veo_full")
        assert full.status_code == 503
        assert full.headers["retry-after"]
        assert full.json()["reason"] == "spool_full"
        assert "x-archiver-outcome" not in full.headers
        scrape = client.get("/metrics").text
        assert 'veo_archiver_callbacks_unavailable_total{provider="kie",reason="spool_full"} 1.0' in scrape
    assert spooled_files(spool_dir) == 1


def test_an_unwritable_spool_answers_503(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tmp_path / "spool"
    with TestClient(create_app(settings_for(redis_server, spool_dir))) as client:
        redis_server.stop()
        spool_dir.rename(tmp_path / "gone")  # the volume went away under the running receiver
        response = post(client, "veo_nowhere")
        assert response.status_code == 503
        assert response.json()["reason"] == "spool_unwritable"


def test_what_an_earlier_run_spooled_is_drained_at_startup(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tmp_path / "spool"
    earlier = Spool(spool_dir, max_bytes=MiB, max_files=100)
    for task_id in ("veo_left_1", "veo_left_2"):
        event = TaskEvent(
            provider="kie",
            task_id=task_id,
            status=TaskStatus.SUCCEEDED,
            result_urls=(URL,),
            verification=Verification.SIGNATURE,
        )
        delivery = Delivery(body=b"{}", headers={}, received_at=1_700_000_000.0, remote=None, path="/callbacks/kie")
        earlier.append(encode_entry(event, delivery))
    with TestClient(create_app(settings_for(redis_server, spool_dir))):
        wait_for(lambda: spooled_files(spool_dir) == 0, DRAIN_WAIT_S, what="the startup drain")
    assert queued(redis_server) == [job("veo_left_1"), job("veo_left_2")]  # in the order they were spooled


def test_without_a_spool_redis_down_is_503(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(redis_server, None))) as client:  # type: ignore[arg-type]
        redis_server.stop()
        response = post(client, "veo_no_spool")
        assert (response.status_code, response.json()["reason"]) == (503, "queue_unavailable")
        assert "veo_archiver_spool_entries" not in client.get("/metrics").text


def test_a_spool_directory_that_cannot_be_made_refuses_to_start(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with (
        pytest.raises(ConfigError, match="SPOOL_DIR"),
        TestClient(create_app(settings_for(redis_server, blocker / "spool"))),
    ):
        pass


# --------------------------------------------------------------------------------------------- settings


def test_spool_settings_from_the_environment(tmp_path: Path) -> None:
    default = Settings.from_env({})
    assert default.spool_dir == DEFAULT_SPOOL_DIR == Path(".veo-archiver/spool")
    assert (default.spool_max_bytes, default.spool_max_files) == (256 * MiB, 100_000)
    assert Settings.from_env({"SPOOL_DIR": ""}).spool_dir == DEFAULT_SPOOL_DIR
    assert Settings.from_env({"SPOOL_DIR": "off"}).spool_dir is None
    assert Settings.from_env({"SPOOL_DIR": " OFF "}).spool_dir is None
    assert Settings.from_env({"SPOOL_DIR": str(tmp_path)}).spool_dir == tmp_path
    custom = Settings.from_env({"SPOOL_MAX_BYTES": "65536", "SPOOL_MAX_FILES": "1"})
    assert (custom.spool_max_bytes, custom.spool_max_files) == (65536, 1)
    for bad in ({"SPOOL_MAX_BYTES": "65535"}, {"SPOOL_MAX_FILES": "0"}, {"SPOOL_MAX_BYTES": "lots"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
    assert Settings().spool_dir is None  # built in code (tests): off unless asked for


# --------------------------------------------------------------------------------------------- readiness


def test_readyz_says_unavailable_when_redis_is_down_and_the_spool_cannot_take_a_write(  # type: ignore[no-untyped-def]
    redis_server, tmp_path: Path
) -> None:
    """Tests run as root, whom chmod does not stop: the directory is replaced by a file under the running
    receiver (what a vanished volume looks like). The read-only case is the next test (chattr +i)."""
    spool_dir = tmp_path / "spool"
    with TestClient(create_app(settings_for(redis_server, spool_dir))) as client:
        redis_server.stop()
        assert client.get("/readyz").json()["spool"] == "accepting"
        spool_dir.rename(tmp_path / "gone")
        spool_dir.write_text("not a directory")
        refused = post(client, "veo_nowhere")  # the answer a callback gets now; it also refreshes the check
        assert (refused.status_code, refused.json()["reason"]) == (503, "spool_unwritable")
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["reason"] == "spool_unwritable" and "Not a directory" in ready.json()["error"]
        redis_server.start()
        assert client.get("/readyz").json() == {"status": "ready", "redis": "ok"}  # Redis takes the callbacks


def test_readyz_sees_a_spool_directory_nobody_may_write_without_any_callback(  # type: ignore[no-untyped-def]
    redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chattr +i``: root cannot create a file in it either, as on a read-only remount. No callback is sent:
    the probe alone finds it (within WRITE_CHECK_TTL_S of the latest write, shortened here from 5 s)."""
    monkeypatch.setattr(spool_module, "WRITE_CHECK_TTL_S", 0.2)
    spool_dir = tmp_path / "spool"
    with TestClient(create_app(settings_for(redis_server, spool_dir))) as client:
        redis_server.stop()
        assert client.get("/readyz").status_code == 200
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(spool_dir)]).returncode:
            pytest.skip("chattr +i is not available on this filesystem")
        try:
            ready = wait_for(
                lambda: (lambda r: r if r.status_code == 503 else None)(client.get("/readyz")), 15, interval=0.1
            )
            assert ready.json()["reason"] == "spool_unwritable", ready.text
        finally:
            subprocess.run(["chattr", "-i", str(spool_dir)], check=True)
        wait_for(lambda: client.get("/readyz").status_code == 200, 15, interval=0.1, what="ready again")


def test_readyz_says_unavailable_when_the_spool_is_full(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tmp_path / "spool"
    with TestClient(create_app(settings_for(redis_server, spool_dir, spool_max_files=1))) as client:
        redis_server.stop()
        assert post(client, "veo_fills").headers["x-archiver-outcome"] == "spooled"
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()["reason"]) == (503, "spool_full")


# --------------------------------------------------------------------------------------------- quarantine


def test_a_quarantined_entry_shows_in_metrics_and_ops(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tmp_path / "spool"
    earlier = Spool(spool_dir, max_bytes=MiB, max_files=100)
    event = TaskEvent(provider="kie", task_id="veo_\ud800", status=TaskStatus.SUCCEEDED, result_urls=(URL,))
    delivery = Delivery(body=b"{}", headers={}, received_at=1_700_000_000.0, remote=None, path="/callbacks/kie")
    bad = earlier.append(encode_entry(event, delivery))
    # what an earlier run left: four failed attempts (the bound is five), its backoff over
    write_attempts(SpoolEntry(bad.name, bad.path, bad.size), Attempts(4, time.time() - 1))
    settings = settings_for(redis_server, spool_dir, admin_token=ADMIN)
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: survey(spool_dir, time.time()).quarantined == 1, DRAIN_WAIT_S, what="the quarantine")
        scrape = client.get("/metrics").text
        assert "veo_archiver_spool_quarantined_entries 1.0" in scrape
        assert 'veo_archiver_spool_quarantined_total{reason="UnicodeEncodeError"} 1.0' in scrape
        page = client.get("/ops", headers={"Authorization": f"Bearer {ADMIN}"}).text
        assert 'id="card-spool-quarantined"><b>1</b>' in page
        assert bad.name in page and "UnicodeEncodeError" in page
    assert spooled_files(spool_dir) == 0
