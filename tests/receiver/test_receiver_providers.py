"""Every provider's endpoint against a real redis-server: callback-URL tokens are the only way in for the
unsigned providers (unless opened), every documented shape is accepted, non-terminal and unknown statuses
are recorded but never enqueued, Standard Webhooks sources verify with the spec's signatures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from receiver import tokens
from receiver.app import create_app
from tests import stacks
from veo_archiver import redis_keys, standard_webhooks
from veo_archiver.intake_format import decode_entry
from veo_archiver.settings import ProviderSettings, Settings
from veo_archiver.sim import apixo as apixo_sim
from veo_archiver.sim import evolink as evolink_sim
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim import useapi as useapi_sim

SIGNING = "callback-signing-key"
QUEUE = "veo-archiver"
URLS = ["https://cdn.example.com/v/0.mp4", "https://cdn.example.com/v/1.mp4"]
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def rds(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    yield client
    client.close()


settings_for = partial(stacks.settings_for, callback_signing_keys=(SIGNING,))


def token(provider: str, *, ttl: int | None = None, key: str = SIGNING, now: float | None = None) -> str:
    return tokens.mint(provider, [key], now=time.time() if now is None else now, ttl_s=ttl)


def queued(rds: redis.Redis) -> list[str]:
    return [v.decode() for v in rds.lrange(redis_keys.rq_queue_key(QUEUE), 0, -1)]


def event_of(rds: redis.Redis, job_id: str) -> dict[str, Any]:
    return Job.fetch(job_id, connection=rds, serializer=JSONSerializer).kwargs["envelope"]["event"]  # type: ignore[no-any-return]


BODIES: dict[str, Any] = {
    "apixo": lambda tid: apixo_sim.success_body(tid, URLS),
    "useapi": lambda tid: useapi_sim.job_record(tid, "completed", urls=URLS, count=2),
    "evolink": lambda tid: evolink_sim.success_body(tid, URLS),
}
TASK_IDS = {
    "apixo": "task_abc123",
    "useapi": "j1731859234567v-u12345-email:jo***@gmail.com-bot:google-flow",
    "evolink": "task-unified-1756817821-4x3rx6ny",
}


@pytest.mark.parametrize("provider", ["apixo", "useapi", "evolink"])
def test_token_in_callback_url_lets_an_unsigned_provider_in(redis_server, rds, provider: str) -> None:  # type: ignore[no-untyped-def]
    task_id = TASK_IDS[provider]
    with TestClient(create_app(settings_for(redis_server))) as client:
        response = client.post(
            f"/callbacks/{provider}?token={token(provider, ttl=3600)}", content=json.dumps(BODIES[provider](task_id))
        )
    assert response.status_code == 200, response.text
    (job_id,) = queued(rds)
    assert job_id == redis_keys.job_id(provider, task_id, "succeeded")
    event = event_of(rds, job_id)
    assert event["task_id"] == task_id and event["result_urls"] == URLS
    assert event["verification"] == "token"
    record = decode_entry(rds.lrange(redis_keys.deliveries_key(provider, task_id), 0, -1)[0])
    assert "token" not in record["callback"]["path"]  # the token is never stored


@pytest.mark.parametrize("provider", ["apixo", "useapi", "evolink"])
@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda p: None, "token_missing"),
        (lambda p: "garbage", "token_malformed"),
        (lambda p: token(p, ttl=60, now=time.time() - 120), "token_expired"),
        (lambda p: token("kie" if p != "kie" else "apixo"), "token_wrong_provider"),
        (lambda p: token(p, key="some-other-key"), "token_mismatch"),
    ],
)
def test_bad_tokens_get_401_and_nothing_is_enqueued(redis_server, rds, provider, make_token, reason) -> None:  # type: ignore[no-untyped-def]
    t = make_token(provider)
    url = f"/callbacks/{provider}" + (f"?token={t}" if t else "")
    with TestClient(create_app(settings_for(redis_server))) as client:
        response = client.post(url, content=json.dumps(BODIES[provider](TASK_IDS[provider])))
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert queued(rds) == [] and stacks.stored_keys(rds, "veo:*") == []


def test_unsigned_provider_refused_when_no_signing_key_is_configured(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(redis_server, callback_signing_keys=()))) as client:
        response = client.post("/callbacks/evolink", content=json.dumps(BODIES["evolink"](TASK_IDS["evolink"])))
    assert response.status_code == 401 and response.json()["reason"] == "unsigned_refused"
    assert queued(rds) == []


def test_opened_provider_accepts_without_token(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    providers = dict(Settings().providers)
    providers["apixo"] = ProviderSettings(name="apixo", api_base="http://x", open=True)
    with TestClient(create_app(settings_for(redis_server, providers=providers))) as client:
        opened = client.post("/callbacks/apixo", content=json.dumps(BODIES["apixo"]("task_open")))
        closed = client.post("/callbacks/evolink", content=json.dumps(BODIES["evolink"](TASK_IDS["evolink"])))
    assert opened.status_code == 200 and closed.status_code == 401
    assert [event_of(rds, j)["verification"] for j in queued(rds)] == ["unsigned"]


def test_useapi_token_may_travel_in_reply_ref(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    tid = TASK_IDS["useapi"]
    for where in ("request", "top"):
        body = useapi_sim.job_record(
            tid, "completed", urls=URLS[:1], reply_ref=f"token={token('useapi')}", reply_ref_at=where
        )
        with TestClient(create_app(settings_for(redis_server))) as client:
            response = client.post("/callbacks/useapi", content=json.dumps(body))
        assert response.status_code == 200, (where, response.text)
    assert len(queued(rds)) == 1  # the second delivery was a duplicate


def test_kie_accepts_a_token_instead_of_its_hmac_headers(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = kie_sim.success_body("veo_task_tok", URLS[:1])
    with TestClient(create_app(settings_for(redis_server, kie_hmac_keys=("kie-key",)))) as client:
        ok = client.post(f"/callbacks/kie?token={token('kie')}", content=json.dumps(body))
        bad = client.post(f"/callbacks/kie?token={token('kie', key='nope')}", content=json.dumps(body))
    assert ok.status_code == 200 and bad.status_code == 401
    assert event_of(rds, queued(rds)[0])["verification"] == "token"


def test_useapi_status_changes_are_recorded_but_only_terminal_ones_enqueued(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    tid = TASK_IDS["useapi"]
    url = f"/callbacks/useapi?token={token('useapi')}"
    with TestClient(create_app(settings_for(redis_server))) as client:
        outcomes = []
        for status in ("created", "started", "completed", "completed"):
            body = useapi_sim.job_record(
                tid, status, urls=URLS if status == "completed" else None, count=2 if status == "completed" else None
            )
            response = client.post(url, content=json.dumps(body))
            assert response.status_code == 200
            outcomes.append(response.headers["x-archiver-outcome"])
    assert outcomes == ["recorded", "recorded", "accepted", "duplicate"]
    assert len(queued(rds)) == 1
    deliveries = [decode_entry(d) for d in rds.lrange(redis_keys.deliveries_key("useapi", tid), 0, -1)]
    assert [d["event"]["status"] for d in deliveries] == ["in_progress", "in_progress", "succeeded", "succeeded"]
    stream = rds.xrange(redis_keys.events_stream())
    assert [e[1][b"outcome"] for e in stream] == [b"recorded", b"recorded", b"accepted", b"duplicate"]


def test_unknown_status_is_recorded_and_flagged_not_dropped(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    body = evolink_sim.task_object(TASK_IDS["evolink"], "completed", urls=URLS[:1])
    body["status"] = "archived_by_provider"
    with TestClient(create_app(settings_for(redis_server))) as client:
        response = client.post(f"/callbacks/evolink?token={token('evolink')}", content=json.dumps(body))
    assert response.status_code == 200 and response.headers["x-archiver-outcome"] == "recorded"
    assert queued(rds) == []
    (entry,) = rds.xrange(redis_keys.events_stream())
    assert entry[1][b"status"] == b"unknown"
    record = decode_entry(rds.lrange(redis_keys.deliveries_key("evolink", TASK_IDS["evolink"]), 0, -1)[0])
    assert record["event"]["provider_status"] == "archived_by_provider"


def test_failures_are_enqueued_once_per_terminal_status(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    tid = "task_fail_then_ok"
    with TestClient(create_app(settings_for(redis_server))) as client:
        url = f"/callbacks/apixo?token={token('apixo')}"
        for body in (
            apixo_sim.failure_body(tid, "NSFW"),
            apixo_sim.failure_body(tid, "NSFW"),
            apixo_sim.success_body(tid, URLS[:1]),
        ):
            assert client.post(url, content=json.dumps(body)).status_code == 200
    ids = queued(rds)
    assert ids == [redis_keys.job_id("apixo", tid, "failed"), redis_keys.job_id("apixo", tid, "succeeded")]
    assert event_of(rds, ids[0])["failure_code"] == "NSFW"


def test_unknown_provider_is_404(redis_server) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(redis_server))) as client:
        assert client.post("/callbacks/runway", content=b"{}").status_code == 404


def test_standard_webhooks_source(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server, standard_webhook_secrets={"acme": ("whsec_" + "A" * 32, WHSEC)})
    body = json.dumps(
        {
            "type": "video.completed",
            "timestamp": "2026-11-21T00:00:00Z",
            "data": {"id": "vid_1", "status": "completed", "video_url": URLS[0]},
        }
    ).encode()
    now = int(time.time())
    good = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": "v1,bm90LWEtc2lnbmF0dXJlLWF0LWFsbC4uLi4uLi4uLi4= "
        + standard_webhooks.sign(WHSEC, "msg_1", now, body),
    }
    with TestClient(create_app(settings)) as client:
        ok = client.post("/callbacks/standard/acme", content=body, headers=good)
        tampered = client.post("/callbacks/standard/acme", content=body.replace(b"vid_1", b"vid_2"), headers=good)
        stale = client.post(
            "/callbacks/standard/acme",
            content=body,
            headers={
                **good,
                "webhook-timestamp": str(now - 1000),
                "webhook-signature": standard_webhooks.sign(WHSEC, "msg_1", now - 1000, body),
            },
        )
        unknown = client.post("/callbacks/standard/other", content=body, headers=good)
    assert ok.status_code == 200, ok.text
    assert (tampered.status_code, tampered.json()["reason"]) == (401, "signature_mismatch")
    assert (stale.status_code, stale.json()["reason"]) == (401, "timestamp_stale")
    assert unknown.status_code == 404
    (job_id,) = queued(rds)
    event = event_of(rds, job_id)
    assert event["provider"] == "standard-acme" and event["task_id"] == "vid_1" and event["result_urls"] == URLS[:1]
    assert event["extra"]["webhook_id"] == "msg_1"
