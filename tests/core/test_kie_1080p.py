"""``kie_1080p.parse``: get-1080p-video's answers (https://docs.kie.ai/veo3-api/get-veo-3-1080-p-video) into
ready / pending / unavailable, and which archived tasks have a 1080p at all."""

from __future__ import annotations

from typing import Any

import pytest

from veo_archiver.errors import ConfigError
from veo_archiver.providers import kie_1080p
from veo_archiver.providers.kie_1080p import Kind
from veo_archiver.settings import Settings

URL = "https://tempfile.aiquickdraw.com/p/42f4f8facbb040c0ade87c27cb2d5e58_1749711595.mp4"
#: the documented answer, verbatim in shape
READY: dict[str, Any] = {"code": 200, "msg": "success", "data": {"resultUrl": URL}}


def test_the_documented_answer_is_ready() -> None:
    verdict = kie_1080p.parse(200, READY)
    assert (verdict.kind, verdict.url) == (Kind.READY, URL)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (404, None, "http_404"),  # "non-200 until ready", read as the HTTP status
        (500, {"code": 500, "msg": "Internal Error"}, "http_500"),
        (429, None, "http_429"),
        (200, {"code": 422, "msg": "1080P is processing. It should be ready in 1-3 minutes."}, "code_422"),
        (200, {"code": 404, "msg": "not found", "data": None}, "code_404"),
        (200, {"code": 455, "msg": "Service unavailable"}, "code_455"),
        (200, {"code": 200, "msg": "success", "data": {"resultUrl": ""}}, "no_url"),
        (200, {"code": 200, "msg": "success", "data": None}, "no_url"),
        (200, {"code": 200, "msg": "success"}, "no_url"),
        (200, None, "unreadable"),  # not JSON
        (200, ["x"], "unreadable"),
        (200, {"msg": "no code"}, "unreadable"),
        (200, {"code": 200, "data": {"resultUrl": "javascript:alert(1)"}}, "unreadable"),
        (200, {"code": 200, "data": "text"}, "unreadable"),
    ],
)
def test_not_ready_answers_are_polled_again(status: int, body: Any, reason: str) -> None:
    verdict = kie_1080p.parse(status, body)
    assert (verdict.kind, verdict.reason, verdict.url) == (Kind.PENDING, reason, None)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, None, "api_key_refused"),
        (403, {"code": 403}, "api_key_refused"),
        (200, {"code": 401, "msg": "You do not have access permissions", "data": None}, "api_key_refused"),
        (200, {"code": 422, "msg": "record is null", "data": None}, "unknown_task"),
        (200, {"code": 422, "msg": "Temporarily supports records within 14 days"}, "unknown_task"),
    ],
)
def test_answers_that_never_turn_ready(status: int, body: Any, reason: str) -> None:
    verdict = kie_1080p.parse(status, body)
    assert (verdict.kind, verdict.reason) == (Kind.UNAVAILABLE, reason)


def test_request_is_a_bearer_get_with_task_and_index() -> None:
    url, headers = kie_1080p.request("https://api.kie.ai/", "veo_task_a b", 1, "k1")
    assert url == "https://api.kie.ai/api/v1/veo/get-1080p-video?taskId=veo_task_a%20b&index=1"
    assert headers["Authorization"] == "Bearer k1"
    with pytest.raises(ConfigError):
        kie_1080p.request("ftp://x", "t", 0, "k1")


@pytest.mark.parametrize(
    ("manifest", "why_not"),
    [
        ({"kind": None, "extra": {"fallbackFlag": False}}, None),
        ({"kind": "extend", "extra": {}}, None),
        ({"kind": "4k", "extra": {}}, "kind_4k"),
        ({"kind": None, "extra": {"fallbackFlag": True}}, "fallback"),
        ({"kind": None, "extra": {"msg": "Veo3.1 video generated successfully.(using fallback model)."}}, "fallback"),
    ],
)
def test_fallback_and_4k_tasks_have_no_1080p(manifest: dict[str, Any], why_not: str | None) -> None:
    assert kie_1080p.upscalable(manifest) == why_not


def test_the_setting_needs_the_api_key_and_a_sane_pace() -> None:
    assert Settings.from_env({}).kie_fetch_1080p is False
    with pytest.raises(ConfigError, match="KIE_API_KEY"):
        Settings.from_env({"KIE_FETCH_1080P": "true"})
    on = Settings.from_env({"KIE_FETCH_1080P": "true", "KIE_API_KEY": "k", "KIE_1080P_POLL_INTERVAL": "20"})
    assert (on.kie_fetch_1080p, on.kie_1080p_poll_interval_s, on.kie_1080p_max_wait_s) == (True, 20.0, 900)
    with pytest.raises(ConfigError):
        Settings.from_env({"KIE_1080P_POLL_INTERVAL": "0"})
