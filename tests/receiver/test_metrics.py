"""``GET /metrics`` against a real redis-server, real signed callbacks and a real RQ worker run in burst mode:
the exposition is parsed with prometheus_client's own parser and every count is checked exactly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from receiver import tokens
from receiver.app import create_app
from tests import stacks
from tests.stacks import DirArchive, Stack
from veo_archiver import redis_keys
from veo_archiver.queue_view import DEAD_LETTER_SCAN
from veo_archiver.settings import Settings
from veo_archiver.sim import apixo as apixo_sim
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4
from workers.progress import ProgressWriter
from workers.runner import make_worker

KEY = "metrics-kie-key"
SIGNING = "metrics-signing-key"
ADMIN = "metrics-admin-token-0123456789"
LOOPBACK = ("127.0.0.1", 40000)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def post_kie(client: TestClient, task_id: str, urls: list[str], *, key: str = KEY) -> int:
    body = json.dumps(kie_sim.success_body(task_id, urls)).encode()
    headers = kie_sim.signed_headers(key, task_id)
    return client.post("/callbacks/kie", content=body, headers=headers).status_code


@pytest.fixture
def rds(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    yield client
    client.close()


def env_for(redis_server: Any, tmp_path: Path, files: FileHost | None = None) -> dict[str, str]:
    """One environment for the in-process app and the worker process, as an operator would set it."""
    env = {
        "REDIS_URL": redis_server.url,
        "KIE_WEBHOOK_HMAC_KEYS": KEY,
        "CALLBACK_SIGNING_KEYS": SIGNING,
        "ADMIN_TOKEN": ADMIN,
        "ARCHIVE_URL": str(tmp_path / "archive"),
        "SPOOL_DIR": str(tmp_path / "spool"),  # never the working directory's default
    }
    if files is not None:
        env["DOWNLOAD_ALLOW_HOSTS"] = f"127.0.0.1:{files.port}"
    return env


def settings_for(redis_server: Any, tmp_path: Path, **overrides: Any) -> Settings:
    return stacks.settings_for(redis_server, env=env_for(redis_server, tmp_path), **overrides)


def test_metrics_count_callbacks_and_worker_outcomes_exactly(redis_server, rds, tmp_path) -> None:  # type: ignore[no-untyped-def]
    video = make_mp4(300_000, seed=7)
    with FileHost() as files:
        good = files.add("/cdn/good.mp4", video)
        gone = files.base_url + "/cdn/gone.mp4"  # 404: a dead letter
        env = env_for(redis_server, tmp_path, files)
        settings = Settings.from_env(env)
        with TestClient(create_app(settings)) as client:
            assert post_kie(client, "veo_good", [good]) == 200
            assert post_kie(client, "veo_gone", [gone]) == 200
            assert post_kie(client, "veo_good", [good]) == 200  # kie redelivers: a duplicate
            assert post_kie(client, "veo_forged", [good], key="not-the-key") == 401
            malformed = client.post(
                "/callbacks/kie", content=b"{not json", headers=kie_sim.signed_headers(KEY, "veo_x")
            )
            assert malformed.status_code == 400
            pending = json.dumps(apixo_sim.pending_body("apx_1")).encode()
            token = tokens.mint("apixo", [SIGNING], now=time.time(), ttl_s=3600)
            assert client.post(f"/callbacks/apixo?token={token}", content=pending).status_code == 200
            assert client.post("/callbacks/apixo", content=pending).status_code == 401
            rds.zadd(redis_keys.tracked_zset(), {redis_keys.tracked_member("kie", "veo_tracked"): time.time()})

            before = scrape(client)
            assert value(before, "veo_archiver_redis_up") == 1
            assert value(before, "veo_archiver_queue_depth", queue="veo-archiver") == 2
            age = value(before, "veo_archiver_oldest_queued_job_age_seconds", queue="veo-archiver")
            assert age is not None and 0 <= age < 60

            with Stack(tmp_path, redis_server.url, DirArchive(tmp_path / "archive"), **env) as stack:
                stack.run_burst()  # a real worker process: see Stack.run_burst
            probe = make_worker(settings, rds, name="metrics-probe")  # registered, never forks
            probe.register_birth()
            probe.set_state("idle")
            try:
                after = scrape(client)
            finally:
                probe.register_death()

    q = {"queue": "veo-archiver"}
    # receiver-side, this process
    assert value(after, "veo_archiver_callbacks_received_total", provider="kie") == 5
    assert value(after, "veo_archiver_callbacks_received_total", provider="apixo") == 2
    assert value(after, "veo_archiver_callbacks_accepted_total", provider="kie") == 2
    assert value(after, "veo_archiver_callbacks_duplicate_total", provider="kie") == 1
    assert value(after, "veo_archiver_callbacks_recorded_total", provider="apixo") == 1
    assert value(after, "veo_archiver_callbacks_accepted_total", provider="apixo") is None
    assert value(after, "veo_archiver_callbacks_rejected_total", provider="kie", reason="signature_mismatch") == 1
    assert value(after, "veo_archiver_callbacks_rejected_total", provider="kie", reason="invalid_payload") == 1
    assert value(after, "veo_archiver_callbacks_rejected_total", provider="apixo", reason="token_missing") == 1
    assert not [k for k in after if k[0] == "veo_archiver_callbacks_unavailable_total"]
    assert value(after, "veo_archiver_enqueue_seconds_count") == 4
    assert value(after, "veo_archiver_enqueue_seconds_bucket", le="+Inf") == 4
    # worker-side, from Redis
    assert value(after, "veo_archiver_redis_up") == 1
    assert value(after, "veo_archiver_queue_depth", **q) == 0
    assert value(after, "veo_archiver_oldest_queued_job_age_seconds", **q) == 0
    for registry, count in {"started": 0, "scheduled": 0, "failed": 1, "deferred": 0, "finished": 1}.items():
        assert value(after, "veo_archiver_registry_jobs", registry=registry, **q) == count, registry
    assert value(after, "veo_archiver_workers_alive", **q) == 1
    assert value(after, "veo_archiver_workers_busy", **q) == 0
    assert value(after, "veo_archiver_dead_letters", reason="http_404", **q) == 1
    assert [k for k in after if k[0] == "veo_archiver_dead_letters"] == [
        ("veo_archiver_dead_letters", (("queue", "veo-archiver"), ("reason", "http_404")))
    ]
    outcomes = {k: v for k, v in after.items() if k[0] == "veo_archiver_job_outcomes_total"}
    assert outcomes == {
        (
            "veo_archiver_job_outcomes_total",
            (("outcome", "archived"), ("provider", "kie"), ("reason", "")),
        ): 1,
        (
            "veo_archiver_job_outcomes_total",
            (("outcome", "dead_letter"), ("provider", "kie"), ("reason", "http_404")),
        ): 1,
    }
    assert value(after, "veo_archiver_archived_bytes_total", provider="kie") == len(video)
    assert value(after, "veo_archiver_job_duration_seconds_count") == 2
    assert value(after, "veo_archiver_job_duration_seconds_bucket", le="+Inf") == 2
    assert value(after, "veo_archiver_job_duration_seconds_bucket", le="60.0") == 2
    duration_sum = value(after, "veo_archiver_job_duration_seconds_sum")
    assert duration_sum is not None and 0 < duration_sum < 60
    # kie keeps files 14 days: the one download ended with more than the largest bucket (7 days) left
    assert value(after, "veo_archiver_url_time_left_seconds_count") is None  # workers keep no sum for it
    assert value(after, "veo_archiver_url_time_left_seconds_bucket", le="604800.0") == 0
    assert value(after, "veo_archiver_url_time_left_seconds_bucket", le="+Inf") == 1
    assert value(after, "veo_archiver_url_time_left_seconds_bucket", le="+Inf") == 1
    assert value(after, "veo_archiver_tracked_tasks_pending") == 1
    assert files.completed["/cdn/good.mp4"] == 1


def test_redis_down_gives_redis_up_0_and_counts_503s(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server, tmp_path, spool_dir=None)  # SPOOL_DIR=off: the 503 path
    with TestClient(create_app(settings)) as client:
        assert post_kie(client, "veo_ok", ["https://cdn.example.com/v.mp4"]) == 200
        redis_server.stop()
        assert post_kie(client, "veo_down", ["https://cdn.example.com/v.mp4"]) == 503
        samples = scrape(client)
    assert value(samples, "veo_archiver_redis_up") == 0
    assert value(samples, "veo_archiver_callbacks_received_total", provider="kie") == 2
    assert value(samples, "veo_archiver_callbacks_accepted_total", provider="kie") == 1
    assert value(samples, "veo_archiver_callbacks_unavailable_total", provider="kie", reason="queue_unavailable") == 1
    assert not [k for k in samples if k[0].startswith("veo_archiver_queue_depth")]


def test_dead_letters_past_the_scan_limit_are_counted_as_not_scanned(redis_server, rds, tmp_path) -> None:  # type: ignore[no-untyped-def]
    failed = "rq:failed:veo-archiver"
    rds.zadd(failed, {f"job-{n}": time.time() + n for n in range(DEAD_LETTER_SCAN + 3)})
    with TestClient(create_app(settings_for(redis_server, tmp_path))) as client:
        samples = scrape(client)
    assert value(samples, "veo_archiver_registry_jobs", queue="veo-archiver", registry="failed") == DEAD_LETTER_SCAN + 3
    assert value(samples, "veo_archiver_dead_letters", queue="veo-archiver", reason="missing") == DEAD_LETTER_SCAN
    assert value(samples, "veo_archiver_dead_letters", queue="veo-archiver", reason="not_scanned") == 3


def test_downloads_under_way_are_counted_with_their_bytes(redis_server, rds, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two started jobs with progress entries, one started job without (still confirming), one entry whose job
    is no longer started (ignored: only running jobs count)."""
    started = "rq:wip:veo-archiver"
    rds.zadd(started, {"job-a:exec-1": time.time() + 600, "job-b:exec-1": time.time() + 600})
    rds.zadd(started, {"job-c:exec-1": time.time() + 600})
    for job_id, done in (("job-a", 1_000_000), ("job-b", 250_000), ("job-gone", 7)):
        writer = ProgressWriter(rds, job_id, provider="kie", task_id=job_id, file=0, files=1)
        writer.update(done, 4_000_000)
    with TestClient(create_app(settings_for(redis_server, tmp_path))) as client:
        samples = scrape(client)
    assert value(samples, "veo_archiver_downloads_running", queue="veo-archiver") == 2
    assert value(samples, "veo_archiver_download_bytes_in_flight", queue="veo-archiver") == 1_250_000
    rds.delete(started)
    with TestClient(create_app(settings_for(redis_server, tmp_path))) as client:
        samples = scrape(client)
    assert value(samples, "veo_archiver_downloads_running", queue="veo-archiver") == 0
    assert value(samples, "veo_archiver_download_bytes_in_flight", queue="veo-archiver") == 0


# ------------------------------------------------------------------------------------------- who may scrape


def test_with_an_admin_token_metrics_need_the_bearer_token(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(redis_server, tmp_path)), client=LOOPBACK) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        basic = client.get("/metrics", headers={"Authorization": f"Basic {ADMIN}"})
        query = client.get(f"/metrics?token={ADMIN}")
        right = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    for refused in (missing, wrong, basic, query):  # loopback does not help once a token is configured
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "veo_archiver" not in refused.text
    assert right.status_code == 200 and "veo_archiver_redis_up 1.0" in right.text


def test_without_an_admin_token_metrics_are_for_loopback_clients_only(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings_for(redis_server, tmp_path, admin_token=None))
    with TestClient(app, client=("203.0.113.9", 40000)) as remote:
        refused = remote.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert refused.status_code == 403 and "ADMIN_TOKEN" in refused.text
    for host in ("127.0.0.1", "::1"):
        with TestClient(app, client=(host, 40000)) as local:
            assert local.get("/metrics").status_code == 200


def test_metrics_public_opens_the_endpoint(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for token in (ADMIN, None):
        app = create_app(settings_for(redis_server, tmp_path, admin_token=token, metrics_public=True))
        with TestClient(app, client=("203.0.113.9", 40000)) as client:
            response = client.get("/metrics")
        assert response.status_code == 200 and "veo_archiver_redis_up 1.0" in response.text


def test_each_app_has_its_own_registry(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server, tmp_path)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert post_kie(first, "veo_one", ["https://cdn.example.com/v.mp4"]) == 200
        assert value(scrape(first), "veo_archiver_callbacks_received_total", provider="kie") == 1
        assert value(scrape(second), "veo_archiver_callbacks_received_total", provider="kie") is None
