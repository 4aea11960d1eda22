"""The pure request builders of ``/submit``: each provider's endpoint, callback field set, user fields kept."""

from __future__ import annotations

import pytest

from veo_archiver.errors import ConfigError, InvalidPayload, NotFound
from veo_archiver.providers import submission

CB = "https://archiver.example.com/callbacks/x?token=t"


def build(provider: str, operation: str, body: dict[str, object]) -> submission.SubmitRequest:
    return submission.build(provider, operation, body, callback_url=CB, base_url="http://127.0.0.1:9/", api_key="key-1")


def test_kie_generate_sets_callback_and_keeps_fields() -> None:
    body = {"prompt": "a cat", "model": "veo3_fast", "aspectRatio": "16:9", "callBackUrl": "https://elsewhere"}
    request = build("kie", "generate", body)
    assert request.url == "http://127.0.0.1:9/api/v1/veo/generate"
    assert request.body == {**body, "callBackUrl": CB}
    assert request.headers["Authorization"] == "Bearer key-1"
    assert request.parent is None
    assert body["callBackUrl"] == "https://elsewhere"  # the caller's dict is not changed


def test_kie_extend_and_4k() -> None:
    extend = build("kie", "extend", {"taskId": "veo_task_1", "prompt": "more"})
    assert extend.url.endswith("/api/v1/veo/extend")
    assert extend.parent == "veo_task_1"
    assert extend.body == {"taskId": "veo_task_1", "prompt": "more", "callBackUrl": CB}
    four_k = build("kie", "4k", {"taskId": "veo_task_1", "index": 0})
    assert four_k.url.endswith("/api/v1/veo/get-4k-video")
    assert four_k.parent is None and four_k.body["callBackUrl"] == CB


def test_apixo_sets_callback_mode() -> None:
    body = {"request_type": "async", "input": {"taskId": "task_1", "prompt": "p", "mode": "fast"}}
    request = build("apixo", "extend", body)
    assert request.url.endswith("/api/v1/generateTask/veo-3-1-extend")
    assert request.body == {**body, "request_type": "callback", "callback_url": CB}
    assert request.parent == "task_1"
    assert build("apixo", "generate", {"input": {"prompt": "p"}}).url.endswith("/api/v1/generateTask/veo-3-1")


def test_useapi_reply_url_and_async() -> None:
    body = {"mediaGenerationId": "user:1-email:ab-video:9", "prompt": "p", "replyRef": "mine"}
    request = build("useapi", "extend", body)
    assert request.url.endswith("/v1/google-flow/videos/extend")
    assert request.body == {**body, "replyUrl": CB, "async": True}
    assert request.parent == "user:1-email:ab-video:9"
    assert build("useapi", "generate", {"prompt": "p", "async": False}).body["async"] is True


def test_evolink_callback_and_base_task() -> None:
    body = {"model": "veo3.1-fast-extend", "base_video_task_id": "task-unified-1-a", "prompt": "p"}
    request = build("evolink", "extend", body)
    assert request.url.endswith("/v1/videos/generations")
    assert request.body == {**body, "callback_url": CB}
    assert request.parent == "task-unified-1-a"
    with pytest.raises(InvalidPayload):
        build("evolink", "generate", body)


@pytest.mark.parametrize("provider", ["kie", "apixo", "useapi", "evolink"])
def test_extend_without_parent_is_refused(provider: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        build(provider, "extend", {"prompt": "p"})
    assert caught.value.reason == "missing_parent"


def test_unknown_operation_and_provider() -> None:
    with pytest.raises(NotFound):
        build("apixo", "4k", {})
    with pytest.raises(NotFound):
        build("nope", "generate", {})
    with pytest.raises(ConfigError):
        submission.build("kie", "generate", {}, callback_url=CB, base_url="ftp://x", api_key="k")
    with pytest.raises(ConfigError):
        submission.build("kie", "generate", {}, callback_url=CB, base_url="http://x", api_key="a b")


@pytest.mark.parametrize(
    ("provider", "status", "answer", "task_id"),
    [
        ("kie", 200, {"code": 200, "msg": "success", "data": {"taskId": "veo_task_1"}}, "veo_task_1"),
        ("kie", 200, {"code": 402, "msg": "Insufficient credits", "data": None}, None),
        ("apixo", 200, {"code": 200, "message": "success", "data": {"taskId": "task_1"}}, "task_1"),
        ("apixo", 400, {"code": 400, "message": "bad"}, None),
        ("useapi", 201, {"jobid": "j1-u1", "status": "created"}, "j1-u1"),
        ("useapi", 200, {"jobId": "j2"}, "j2"),
        ("evolink", 200, {"id": "task-unified-1-a", "status": "pending"}, "task-unified-1-a"),
        ("evolink", 401, {"error": {"code": "unauthorized"}}, None),
        ("kie", 200, "not json", None),
    ],
)
def test_task_id_of(provider: str, status: int, answer: object, task_id: str | None) -> None:
    assert submission.task_id_of(provider, status, answer) == task_id
