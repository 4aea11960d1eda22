"""The receiver over HTTP against a real redis-server: answers, dedupe, raw-callback record, nothing
enqueued for anything refused, 503 when Redis cannot take the job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.stacks import settings_for, stored_keys
from veo_archiver import redis_keys
from veo_archiver.intake_format import decode_entry
from veo_archiver.records import delivery as delivery_records
from veo_archiver.sim import kie as kie_sim

KEY = "test-hmac-key"
QUEUE = "veo-archiver"
URL = "https://tempfile.aiquickdraw.com/v/abc.mp4"


@pytest.fixture
def rds(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    yield client
    client.close()


def make_client(redis_server, **overrides) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(create_app(settings_for(redis_server, **{"kie_hmac_keys": (KEY,), **overrides})))


def queued(rds: redis.Redis) -> list[str]:
    return [v.decode() for v in rds.lrange(redis_keys.rq_queue_key(QUEUE), 0, -1)]


def post(client: TestClient, body: dict, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post("/callbacks/kie", content=json.dumps(body).encode(), headers=headers)


def test_signed_callback_is_acknowledged_after_the_job_is_in_redis(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_task_1", [URL], form="bracket")
    with make_client(redis_server) as client:
        response = post(client, body, kie_sim.signed_headers(KEY, "veo_task_1"))
    assert response.status_code == 200
    assert response.json() == {"code": 200, "msg": "success"}
    assert response.headers["x-archiver-outcome"] == "accepted"
    ids = queued(rds)
    assert ids == [redis_keys.job_id("kie", "veo_task_1", "succeeded")]
    job = Job.fetch(ids[0], connection=rds, serializer=JSONSerializer)
    assert job.func_name == redis_keys.ARCHIVE_JOB
    envelope = job.kwargs["envelope"]
    assert envelope["event"]["task_id"] == "veo_task_1"
    assert envelope["event"]["result_urls"] == [URL]
    assert envelope["event"]["verification"] == "signature"
    # the raw callback is stored once: in the delivery record the job names, where the worker reads it
    record = delivery_records.find(rds, "kie", "veo_task_1", envelope["delivery_id"])
    assert record is not None and record["job_id"] == ids[0] and json.loads(record["callback"]["body"]) == body
    assert "callback" not in envelope
    assert job.timeout == 3600 and job.result_ttl == 7 * 24 * 3600 and job.retries_left == 3
    assert job.get_status() == "queued"


def test_duplicate_delivery_is_acknowledged_without_a_second_job(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_task_dup", [URL])
    with make_client(redis_server) as client:
        first = post(client, body, kie_sim.signed_headers(KEY, "veo_task_dup"))
        second = post(client, body, kie_sim.signed_headers(KEY, "veo_task_dup", int(time.time()) + 1))
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"code": 200, "msg": "success"}
    assert second.headers["x-archiver-outcome"] == "duplicate"
    assert len(queued(rds)) == 1
    deliveries = [decode_entry(d) for d in rds.lrange(redis_keys.deliveries_key("kie", "veo_task_dup"), 0, -1)]
    assert [d["outcome"] for d in deliveries] == ["accepted", "duplicate"]


def test_raw_callback_kept_without_secret_headers(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_task_raw", [URL])
    headers = {**kie_sim.signed_headers(KEY, "veo_task_raw"), "Authorization": "Bearer hunter2", "X-Trace": "t1"}
    with make_client(redis_server) as client:
        assert post(client, body, headers).status_code == 200
    (record,) = [decode_entry(d) for d in rds.lrange(redis_keys.deliveries_key("kie", "veo_task_raw"), 0, -1)]
    stored = record["callback"]["headers"]
    assert "authorization" not in stored and stored["x-trace"] == "t1"
    assert "x-webhook-signature" in stored  # needed to re-verify on replay
    assert json.loads(record["callback"]["body"]) == body
    assert rds.ttl(redis_keys.deliveries_key("kie", "veo_task_raw")) > 29 * 24 * 3600


def test_failure_callback_is_queued_as_a_failed_task(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.failure_body("veo_task_f", 400)
    with make_client(redis_server) as client:
        assert post(client, body, kie_sim.signed_headers(KEY, "veo_task_f")).status_code == 200
    (job_id,) = queued(rds)
    event = Job.fetch(job_id, connection=rds, serializer=JSONSerializer).kwargs["envelope"]["event"]
    assert event["status"] == "failed" and event["failure_code"] == "400"
    assert event["failure_message"].startswith("Your prompt was flagged")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.pop("X-Webhook-Signature"), "signature_missing"),
        (lambda h: h.pop("X-Webhook-Timestamp"), "signature_missing"),
        (lambda h: h.update({"X-Webhook-Signature": "%%%not-base64"}), "signature_malformed"),
        (
            lambda h: h.update({"X-Webhook-Signature": kie_sim.sign_for_test("other-key", "veo_t")}),
            "signature_mismatch",
        ),
        (lambda h: h.update({"X-Webhook-Timestamp": str(int(time.time()) - 400)}), "timestamp_stale"),
        (lambda h: h.update({"X-Webhook-Timestamp": str(int(time.time()) + 400)}), "timestamp_future"),
    ],
)
def test_refused_callbacks_get_401_with_reason_and_enqueue_nothing(redis_server, rds, mutate, reason) -> None:  # type: ignore[no-untyped-def]
    headers = kie_sim.signed_headers(KEY, "veo_t")
    mutate(headers)
    with make_client(redis_server) as client:
        response = post(client, kie_sim.success_body("veo_t", [URL]), headers)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert queued(rds) == []
    assert rds.keys("rq:job:*") == [] and stored_keys(rds, "veo:*") == []


def test_tampered_task_id_is_refused(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    headers = kie_sim.signed_headers(KEY, "veo_task_real")
    with make_client(redis_server) as client:
        response = post(client, kie_sim.success_body("veo_task_forged", [URL]), headers)
    assert response.status_code == 401 and response.json()["reason"] == "signature_mismatch"
    assert queued(rds) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"code":200}',
        b'{"code":200,"data":{"taskId":"veo_t","info":{"resultUrls":5}}}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_malformed_bodies_get_400_and_enqueue_nothing(redis_server, rds, raw) -> None:  # type: ignore[no-untyped-def]
    with make_client(redis_server) as client:
        response = client.post("/callbacks/kie", content=raw, headers=kie_sim.signed_headers(KEY, "veo_t"))
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "invalid_payload"
    if b"resultUrls" in raw:
        assert "resultUrls" in response.json()["msg"]
    assert queued(rds) == []


def test_body_over_one_mib_gets_413(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_big", [URL])
    body["padding"] = "x" * (1024 * 1024)
    with make_client(redis_server) as client:
        declared = post(client, body, kie_sim.signed_headers(KEY, "veo_big"))

        def chunks() -> Iterator[bytes]:
            raw = json.dumps(body).encode()
            for i in range(0, len(raw), 65536):
                yield raw[i : i + 65536]

        streamed = client.post("/callbacks/kie", content=chunks(), headers=kie_sim.signed_headers(KEY, "veo_big"))
    assert declared.status_code == 413 and streamed.status_code == 413
    assert queued(rds) == []


def test_unsigned_callbacks_refused_unless_the_operator_allows_them(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_unsigned", [URL])
    plain = {"Content-Type": "application/json"}
    with make_client(redis_server, kie_hmac_keys=()) as client:
        refused = post(client, body, plain)
    assert refused.status_code == 401 and refused.json()["reason"] == "unsigned_refused"
    assert queued(rds) == []
    with make_client(redis_server, kie_hmac_keys=(), kie_allow_unsigned=True) as client:
        accepted = post(client, body, plain)
    assert accepted.status_code == 200
    (job_id,) = queued(rds)
    event = Job.fetch(job_id, connection=rds, serializer=JSONSerializer).kwargs["envelope"]["event"]
    assert event["verification"] == "unsigned"


def test_redis_down_gives_503_and_readyz_says_so(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Without a spool (SPOOL_DIR=off); with one, tests/receiver/test_spool_wiring.py."""
    body = kie_sim.success_body("veo_down", [URL])
    with make_client(redis_server, spool_dir=None) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        redis_server.stop()
        response = post(client, body, kie_sim.signed_headers(KEY, "veo_down"))
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["reason"] == "queue_unavailable"
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
