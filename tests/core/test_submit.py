"""Submitting through the archiver (:mod:`veo_archiver.submit`, ``POST /submit``): a real Redis, the provider
behind httpx's MockTransport (the fake transport: what a provider's cloud does cannot run here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from receiver.submission import SubmitEndpoint, callback_url_for
from tests.servers import RedisServer
from veo_archiver.errors import ConfigError, InvalidPayload
from veo_archiver.records import submission, tracked
from veo_archiver.settings import ProviderSettings, Settings
from veo_archiver.submit import Submitter

CB = "http://127.0.0.1:8000/callbacks/kie"
Handler = Callable[[httpx.Request], httpx.Response]


def settings_with_keys(redis_url: str, **overrides: object) -> Settings:
    providers = {
        name: ProviderSettings(name=name, api_key=f"{name}-key", api_base=f"http://{name}.test")
        for name in ("kie", "apixo", "useapi", "evolink")
    }
    return Settings(redis_url=redis_url, providers=providers, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


class Provider:
    """Answers with ``handler`` and records every request it got."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.handler(request)

    def submitter(self, settings: Settings, rds: redis.Redis) -> Submitter:
        return Submitter(settings, rds, client=httpx.Client(transport=httpx.MockTransport(self)), clock=lambda: 1000.0)


def kie_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "msg": "success", "data": {"taskId": "veo_task_new"}})


def test_accepted_task_is_tracked_and_answer_kept(rds: redis.Redis) -> None:
    provider = Provider(kie_ok)
    settings = settings_with_keys("redis://unused")
    answer = provider.submitter(settings, rds).submit(
        "kie", "generate", b'{"prompt": "a cat", "model": "veo3_fast"}', callback_url=CB
    )
    assert answer.status == 200
    assert answer.body["task_id"] == "veo_task_new" and answer.body["tracked"] is True
    assert answer.body["provider_response"] == {"code": 200, "msg": "success", "data": {"taskId": "veo_task_new"}}
    sent = provider.seen[0]
    assert str(sent.url) == "http://kie.test/api/v1/veo/generate"
    assert sent.headers["authorization"] == "Bearer kie-key"
    assert json.loads(sent.content) == {"prompt": "a cat", "model": "veo3_fast", "callBackUrl": CB}
    assert tracked.since(rds, "kie", "veo_task_new") == 1000.0
    assert submission.find(rds, "kie", "veo_task_new")["operation"] == "generate"  # type: ignore[index]


def test_extend_records_its_parent(rds: redis.Redis) -> None:
    answer = (
        Provider(kie_ok)
        .submitter(settings_with_keys("redis://unused"), rds)
        .submit("kie", "extend", b'{"taskId": "veo_task_parent", "prompt": "on"}', callback_url=CB)
    )
    assert answer.body["extends"] == {"provider": "kie", "task_id": "veo_task_parent"}
    assert submission.extends_of(rds, "kie", "veo_task_new") == {"provider": "kie", "task_id": "veo_task_parent"}


@pytest.mark.parametrize(
    ("response", "status"),
    [
        (httpx.Response(401, json={"code": 401, "msg": "You do not have access permissions"}), 401),
        (httpx.Response(200, json={"code": 402, "msg": "Insufficient credits"}), 502),
        (httpx.Response(500, text="<html>oops</html>"), 500),
    ],
)
def test_provider_error_is_passed_back_nothing_tracked(rds: redis.Redis, response: httpx.Response, status: int) -> None:
    answer = (
        Provider(lambda r: response)
        .submitter(settings_with_keys("redis://unused"), rds)
        .submit("kie", "generate", b"{}", callback_url=CB, idempotency_key="k1")
    )
    assert answer.status == status
    assert answer.body["reason"] == "provider_error" and answer.body["tracked"] is False
    assert answer.body["provider_status"] == response.status_code
    expected = response.json() if response.headers["content-type"] == "application/json" else response.text
    assert answer.body["provider_response"] == expected
    assert tracked.count(rds) == 0
    assert rds.keys("veo:submit-idem:*") == []  # a refusal is forgotten: a retry goes to the provider


def test_timeout_is_504_and_replayed_for_the_same_key(rds: redis.Redis) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    provider = Provider(slow)
    submitter = provider.submitter(settings_with_keys("redis://unused"), rds)
    first = submitter.submit("kie", "generate", b'{"prompt": "p"}', callback_url=CB, idempotency_key="k")
    assert first.status == 504 and first.body["reason"] == "provider_timeout"
    assert first.body["retry_safe"] is False
    again = submitter.submit("kie", "generate", b'{"prompt": "p"}', callback_url=CB, idempotency_key="k")
    assert again.replayed and again.status == 504
    assert len(provider.seen) == 1  # never sent twice under one key


def test_unreachable_provider_is_safe_to_retry(rds: redis.Redis) -> None:
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectTimeout("connect", request=request)
        return kie_ok(request)

    submitter = Provider(flaky).submitter(settings_with_keys("redis://unused"), rds)
    first = submitter.submit("kie", "generate", b"{}", callback_url=CB, idempotency_key="k")
    assert first.status == 504 and first.body == {**first.body, "reason": "provider_unreachable", "retry_safe": True}
    second = submitter.submit("kie", "generate", b"{}", callback_url=CB, idempotency_key="k")
    assert second.status == 200 and not second.replayed and second.body["task_id"] == "veo_task_new"


def test_idempotency_key_returns_the_first_answer(rds: redis.Redis) -> None:
    counter = iter(range(100))

    def fresh(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 200, "msg": "success", "data": {"taskId": f"t{next(counter)}"}})

    provider = Provider(fresh)
    submitter = provider.submitter(settings_with_keys("redis://unused"), rds)
    first = submitter.submit("kie", "generate", b'{"prompt": "p"}', callback_url=CB, idempotency_key="abc")
    second = submitter.submit("kie", "generate", b'{"prompt":"p"}', callback_url=CB, idempotency_key="abc")
    assert second.replayed and second.body == first.body and first.body["task_id"] == "t0"
    assert 0 < rds.ttl(next(iter(rds.keys("veo:submit-idem:*")))) <= 24 * 3600
    with pytest.raises(InvalidPayload) as caught:
        submitter.submit("kie", "generate", b'{"prompt": "other"}', callback_url=CB, idempotency_key="abc")
    assert caught.value.reason == "idempotency_key_reused"
    other = submitter.submit("kie", "generate", b'{"prompt": "p"}', callback_url=CB, idempotency_key="def")
    assert other.body["task_id"] == "t1" and len(provider.seen) == 2


def test_in_flight_key_answers_409(rds: redis.Redis) -> None:
    inner: dict[str, object] = {}

    def reentrant(request: httpx.Request) -> httpx.Response:
        inner["answer"] = submitter.submit("kie", "generate", b"{}", callback_url=CB, idempotency_key="k")
        return kie_ok(request)

    submitter = Provider(reentrant).submitter(settings_with_keys("redis://unused"), rds)
    assert submitter.submit("kie", "generate", b"{}", callback_url=CB, idempotency_key="k").status == 200
    assert inner["answer"].status == 409  # type: ignore[attr-defined]


def test_refused_before_sending(rds: redis.Redis) -> None:
    provider = Provider(kie_ok)
    no_key = Settings(redis_url="redis://unused")
    with pytest.raises(InvalidPayload) as caught:
        provider.submitter(no_key, rds).submit("kie", "generate", b"{}", callback_url=CB)
    assert caught.value.reason == "no_api_key"
    with pytest.raises(InvalidPayload):
        provider.submitter(settings_with_keys("redis://unused"), rds).submit("kie", "generate", b"[]", callback_url=CB)
    assert provider.seen == []


def test_callback_urls() -> None:
    kie_signed = Settings(kie_hmac_keys=("h",), callback_signing_keys=("s",))
    assert callback_url_for(kie_signed, "https://a.example/", "kie", now=0) == "https://a.example/callbacks/kie"
    minted = callback_url_for(kie_signed, "https://a.example", "apixo", now=0)
    assert minted.startswith("https://a.example/callbacks/apixo?token=v1.apixo.")
    assert "?token=v1.kie." in callback_url_for(Settings(callback_signing_keys=("s",)), "http://h", "kie", now=0)
    with pytest.raises(ConfigError):
        callback_url_for(Settings(), "http://h", "evolink", now=0)


def test_route_needs_admin_and_passes_through(rds: redis.Redis) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    from receiver.responses import EXCEPTION_HANDLERS

    settings = settings_with_keys("redis://unused", admin_token="adm", kie_hmac_keys=("h",))  # noqa: S106
    provider = Provider(kie_ok)
    endpoint = SubmitEndpoint(settings, rds, provider.submitter(settings, rds))
    app = Starlette(
        routes=[Route("/submit/{provider}/{operation}", endpoint.post, methods=["POST"])],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    with TestClient(app, base_url="http://archiver.test") as client:
        assert client.post("/submit/kie/generate", json={}).status_code == 401
        assert client.post("/submit/kie/upscale", json={}, headers={"Authorization": "Bearer adm"}).status_code == 404
        auth = {"Authorization": "Bearer adm", "Idempotency-Key": "one"}
        first = client.post("/submit/kie/generate", json={"prompt": "p"}, headers=auth)
        assert first.status_code == 200 and first.json()["task_id"] == "veo_task_new"
        assert json.loads(provider.seen[0].content)["callBackUrl"] == "http://archiver.test/callbacks/kie"
        again = client.post("/submit/kie/generate", json={"prompt": "p"}, headers=auth)
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
