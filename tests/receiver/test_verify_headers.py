"""receiver/verify.py over HTTP (real redis-server): a proof header sent twice is refused with 400
``duplicate_header`` before anything is verified or stored; the per-event limits (``too_many_urls``,
``task_id_too_long``) are refused with 400 after verification."""

from __future__ import annotations

import json
import time
from functools import partial

import redis
from starlette.testclient import TestClient

from receiver.app import create_app
from tests import stacks
from veo_archiver import redis_keys, standard_webhooks
from veo_archiver.sim import kie as kie_sim

KEY = "test-hmac-key"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
URL = "https://tempfile.aiquickdraw.com/v/abc.mp4"


settings_for = partial(stacks.settings_for, kie_hmac_keys=(KEY,), standard_webhook_secrets={"acme": (WHSEC,)})


def nothing_stored(redis_server) -> bool:  # type: ignore[no-untyped-def]
    client: redis.Redis = redis_server.client()
    with client:
        return not stacks.stored_keys(client)


def kie_body(task_id: str = "veo_task_1", urls: list[str] | None = None) -> bytes:
    return json.dumps(kie_sim.success_body(task_id, urls or [URL])).encode()


def test_kie_signature_header_twice_is_refused(redis_server) -> None:  # type: ignore[no-untyped-def]
    good = kie_sim.signed_headers(KEY, "veo_task_1")
    ts = good["X-Webhook-Timestamp"]
    with TestClient(create_app(settings_for(redis_server))) as client:
        answers = [
            client.post("/callbacks/kie", content=kie_body(), headers=headers)
            for headers in (
                [*good.items(), ("X-Webhook-Signature", "forged")],
                [*good.items(), ("x-webhook-signature", good["X-Webhook-Signature"])],  # even the same value
                [*good.items(), ("X-Webhook-Timestamp", str(int(ts) + 1))],
            )
        ]
    for answer in answers:
        assert (answer.status_code, answer.json()["reason"]) == (400, "duplicate_header"), answer.text
    assert nothing_stored(redis_server)


def test_kie_single_headers_still_accepted(redis_server) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(redis_server))) as client:
        answer = client.post(
            "/callbacks/kie", content=kie_body(), headers=list(kie_sim.signed_headers(KEY, "veo_task_1").items())
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-archiver-outcome"] == "accepted"


def standard_request(now: int) -> tuple[bytes, list[tuple[str, str]]]:
    body = json.dumps({"type": "video.completed", "data": {"id": "vid_1", "status": "completed", "video_url": URL}})
    raw = body.encode()
    headers = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", str(now)),
        ("webhook-signature", standard_webhooks.sign(WHSEC, "msg_1", now, raw)),
    ]
    return raw, headers


def test_standard_webhooks_headers_twice_with_different_values_are_refused(redis_server) -> None:  # type: ignore[no-untyped-def]
    now = int(time.time())
    body, good = standard_request(now)
    variants = [
        [*good, ("webhook-id", "msg_2")],
        [*good, ("Webhook-Timestamp", str(now + 1))],
        [*good, ("webhook-signature", "v1,Zm9yZ2Vk")],
        [*good, ("svix-id", "a"), ("svix-id", "b")],
    ]
    with TestClient(create_app(settings_for(redis_server))) as client:
        answers = [client.post("/callbacks/standard/acme", content=body, headers=h) for h in variants]
    for answer in answers:
        assert (answer.status_code, answer.json()["reason"]) == (400, "duplicate_header"), answer.text
    assert nothing_stored(redis_server)


def test_standard_webhooks_repeated_identical_value_is_harmless(redis_server) -> None:  # type: ignore[no-untyped-def]
    body, good = standard_request(int(time.time()))
    with TestClient(create_app(settings_for(redis_server))) as client:
        answer = client.post("/callbacks/standard/acme", content=body, headers=[*good, good[0]])
    assert answer.status_code == 200, answer.text


def test_too_many_result_urls_refused(redis_server) -> None:  # type: ignore[no-untyped-def]
    urls = [f"https://cdn.example.com/v/{i}.mp4" for i in range(5)]
    with TestClient(create_app(settings_for(redis_server, max_result_urls=4))) as client:
        refused = client.post(
            "/callbacks/kie", content=kie_body(urls=urls), headers=kie_sim.signed_headers(KEY, "veo_task_1")
        )
        ok = client.post(
            "/callbacks/kie",
            content=kie_body("veo_task_2", urls[:4]),
            headers=kie_sim.signed_headers(KEY, "veo_task_2"),
        )
    assert (refused.status_code, refused.json()["reason"]) == (400, "too_many_urls")
    assert ok.status_code == 200, ok.text


def test_invalid_result_url_refused(redis_server) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(redis_server))) as client:
        answer = client.post(
            "/callbacks/kie",
            content=kie_body(urls=["http://0177.0.0.1/v.mp4"]),
            headers=kie_sim.signed_headers(KEY, "veo_task_1"),
        )
    assert (answer.status_code, answer.json()["reason"]) == (400, "invalid_url")
    assert nothing_stored(redis_server)


def test_task_id_too_long_refused(redis_server) -> None:  # type: ignore[no-untyped-def]
    long_id, fits = "t" * 1025, "t" * 1024
    with TestClient(create_app(settings_for(redis_server))) as client:
        refused = client.post("/callbacks/kie", content=kie_body(long_id), headers=kie_sim.signed_headers(KEY, long_id))
        ok = client.post("/callbacks/kie", content=kie_body(fits), headers=kie_sim.signed_headers(KEY, fits))
    assert (refused.status_code, refused.json()["reason"]) == (400, "task_id_too_long")
    assert ok.status_code == 200, ok.text
    with redis_server.client() as rds:
        assert rds.llen(redis_keys.rq_queue_key("veo-archiver")) == 1
