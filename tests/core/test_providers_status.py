"""The status APIs of the four providers: ``status_request`` URLs and ``parse_status`` on their answers.

A worker re-reads every callback through the provider's status API before downloading anything; a task the
API does not know must end as ``PermanentError(reason="unknown_task")`` (a forged callback is dead-lettered),
an answer about another task or one we cannot read as ``InvalidPayload``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from veo_archiver.errors import ConfigError, InvalidPayload, PermanentError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.providers import apixo, evolink, kie, useapi

API = Verification.PROVIDER_API
HEADERS = {"Authorization": "Bearer sk-test-123", "Accept": "application/json"}
USEAPI_JOB = "j1731859234567v-u12345-email:jo***@gmail.com-bot:google-flow"
USEAPI_JOB_ENCODED = "j1731859234567v-u12345-email%3Ajo%2A%2A%2A%40gmail.com-bot%3Agoogle-flow"
EVOLINK_TASK = "task-unified-1756817821-4x3rx6ny"


# ========================================================================================================
# status_request


@pytest.mark.parametrize(
    ("module", "base", "task_id", "url"),
    [
        (
            kie,
            "https://api.kie.ai",
            "veo_task_abc",
            "https://api.kie.ai/api/v1/veo/record-info?taskId=veo_task_abc",
        ),
        (
            apixo,
            "https://api.apixo.ai",
            "task_abc",
            "https://api.apixo.ai/api/v1/statusTask/veo-3-1?taskId=task_abc",
        ),
        (
            useapi,
            "https://api.useapi.net",
            USEAPI_JOB,
            f"https://api.useapi.net/v1/google-flow/jobs/{USEAPI_JOB_ENCODED}",
        ),
        (
            evolink,
            "https://api.evolink.ai",
            EVOLINK_TASK,
            f"https://api.evolink.ai/v1/tasks/{EVOLINK_TASK}",
        ),
    ],
    ids=["kie", "apixo", "useapi", "evolink"],
)
def test_status_request_exact(module: ModuleType, base: str, task_id: str, url: str) -> None:
    assert module.status_request(base, task_id, "sk-test-123") == (url, HEADERS)
    # a trailing slash on the base changes nothing
    assert module.status_request(base + "/", task_id, "sk-test-123") == (url, HEADERS)


def test_useapi_job_id_encoding_round_trips() -> None:
    from urllib.parse import unquote, urlsplit

    url, _ = useapi.status_request("https://api.useapi.net", USEAPI_JOB, "k")
    last = urlsplit(url).path.rsplit("/", 1)[1]
    assert ":" not in last and "@" not in last and "*" not in last
    assert unquote(last) == USEAPI_JOB


def test_apixo_extend_model() -> None:
    url, _ = apixo.status_request("https://api.apixo.ai", "extend_task_12345678", "k", model="veo-3-1-extend")
    assert url == "https://api.apixo.ai/api/v1/statusTask/veo-3-1-extend?taskId=extend_task_12345678"


def test_apixo_unknown_model_refused() -> None:
    with pytest.raises(ConfigError):
        apixo.status_request("https://api.apixo.ai", "t", "k", model="../veo")


@pytest.mark.parametrize(
    ("module", "url"),
    [
        (kie, "https://gw.example/kie/api/v1/veo/record-info?taskId=a%20b%26c%3Dd%2F%C3%A9%3F%23"),
        (apixo, "https://gw.example/kie/api/v1/statusTask/veo-3-1?taskId=a%20b%26c%3Dd%2F%C3%A9%3F%23"),
        (useapi, "https://gw.example/kie/v1/google-flow/jobs/a%20b%26c%3Dd%2F%C3%A9%3F%23"),
        (evolink, "https://gw.example/kie/v1/tasks/a%20b%26c%3Dd%2F%C3%A9%3F%23"),
    ],
    ids=["kie", "apixo", "useapi", "evolink"],
)
def test_task_ids_fully_percent_encoded_and_base_path_kept(module: ModuleType, url: str) -> None:
    assert module.status_request("https://gw.example/kie/", "a b&c=d/é?#", "k")[0] == url


MODULES = [kie, apixo, useapi, evolink]
MODULE_IDS = ["kie", "apixo", "useapi", "evolink"]


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
@pytest.mark.parametrize("task_id", ["", "   ", "a\ud800"])
def test_status_request_bad_task_id_invalid(module: ModuleType, task_id: str) -> None:
    with pytest.raises(InvalidPayload):
        module.status_request("https://api.example", task_id, "k")


@pytest.mark.parametrize("module", [useapi, evolink], ids=["useapi", "evolink"])
@pytest.mark.parametrize("task_id", [".", ".."])
def test_status_request_dot_segments_refused(module: ModuleType, task_id: str) -> None:
    with pytest.raises(InvalidPayload):
        module.status_request("https://api.example", task_id, "k")


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
@pytest.mark.parametrize("key", ["", "a b", "k\r\nX-Injected: 1", "kéy", "k\x00"])
def test_status_request_bad_key_is_config_error(module: ModuleType, key: str) -> None:
    with pytest.raises(ConfigError):
        module.status_request("https://api.example", "t1", key)


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
@pytest.mark.parametrize("base", ["", "api.example", "ftp://api.example", "https://", "https://api.example?x=1"])
def test_status_request_bad_base_is_config_error(module: ModuleType, base: str) -> None:
    with pytest.raises(ConfigError):
        module.status_request(base, "t1", "k")


# ========================================================================================================
# kie.ai record-info (https://docs.kie.ai/veo3-api/get-veo-3-video-details)

KIE_URL = "https://tempfile.aiquickdraw.com/v/video1.mp4"
KIE_ORIGIN = "https://tempfile.aiquickdraw.com/v/original1.mp4"
KIE_FULL = "https://tempfile.aiquickdraw.com/v/full.mp4"
KIE_TIMES = {"createTime": "2025-06-06 10:25:00", "completeTime": "2025-06-06 10:30:00"}

KIE_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "success",
    "data": {
        "taskId": "veo_task_abc",
        "paramJson": '{"prompt":"a cat","model":"veo3_fast"}',
        "completeTime": "2025-06-06 10:30:00",
        "createTime": "2025-06-06 10:25:00",
        "response": {
            "taskId": "veo_task_abc",
            "resultUrls": [KIE_URL],
            "originUrls": [KIE_ORIGIN],
            "fullResultUrls": [KIE_FULL],
            "resolution": "1080p",
        },
        "successFlag": 1,
        "errorCode": None,
        "errorMessage": "",
        "fallbackFlag": False,
    },
}
KIE_PROMPT = {"prompt": "a cat", "model": "veo3_fast"}


def kie_record(flag: int, **data: Any) -> dict[str, Any]:
    body = copy.deepcopy(KIE_SUCCESS)
    body["data"]["successFlag"] = flag
    if flag != 1:
        body["data"]["response"] = None
        del body["data"]["completeTime"]
    for key, value in data.items():
        if value is ...:
            del body["data"][key]
        else:
            body["data"][key] = value
    return body


def kie_event(**fields: Any) -> TaskEvent:
    values: dict[str, Any] = {"provider": "kie", "task_id": "veo_task_abc", "verification": API}
    values.update(fields)
    return TaskEvent(**values)


KIE_PENDING_EXTRA = {
    "successFlag": 0,
    "fallbackFlag": False,
    "createTime": "2025-06-06 10:25:00",
    "prompt": KIE_PROMPT,
}

KIE_CASES: list[tuple[str, dict[str, Any], TaskEvent]] = [
    (
        "0 generating",
        kie_record(0),
        kie_event(status=TaskStatus.IN_PROGRESS, extra=KIE_PENDING_EXTRA, provider_status="0"),
    ),
    (
        "1 success",
        KIE_SUCCESS,
        kie_event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(KIE_URL,),
            extra={
                "successFlag": 1,
                "origin_urls": [KIE_ORIGIN],
                "full_result_urls": [KIE_FULL],
                "resolution": "1080p",
                "fallbackFlag": False,
                **KIE_TIMES,
                "prompt": KIE_PROMPT,
            },
            provider_status="1",
        ),
    ),
    (
        "2 failed",
        kie_record(2, errorCode=400, errorMessage="Your prompt was flagged by Website as violating content policies."),
        kie_event(
            status=TaskStatus.FAILED,
            failure_code="400",
            failure_message="Your prompt was flagged by Website as violating content policies.",
            extra={**KIE_PENDING_EXTRA, "successFlag": 2},
            provider_status="2",
        ),
    ),
    (
        "3 generation failed",
        kie_record(3, errorCode=501, errorMessage="Failed - Video generation task failed"),
        kie_event(
            status=TaskStatus.FAILED,
            failure_code="501",
            failure_message="Failed - Video generation task failed",
            extra={**KIE_PENDING_EXTRA, "successFlag": 3},
            provider_status="3",
        ),
    ),
    (
        "failed without errorCode",
        kie_record(2),
        kie_event(status=TaskStatus.FAILED, extra={**KIE_PENDING_EXTRA, "successFlag": 2}, provider_status="2"),
    ),
    (
        "undocumented flag",
        kie_record(7),
        kie_event(status=TaskStatus.UNKNOWN, extra={**KIE_PENDING_EXTRA, "successFlag": 7}, provider_status="7"),
    ),
    (
        "4K record",
        {
            "code": 200,
            "msg": "success",
            "data": {
                "taskId": "veo_task_abc",
                "successFlag": 1,
                "mediaIds": ["m1"],
                "response": {
                    "resultUrls": ["https://file.aiquickdraw.com/4k/x.mp4"],
                    "imageUrls": ["https://file.aiquickdraw.com/4k/x.jpg"],
                },
            },
        },
        kie_event(
            status=TaskStatus.SUCCEEDED,
            result_urls=("https://file.aiquickdraw.com/4k/x.mp4",),
            kind="4k",
            extra={
                "successFlag": 1,
                "image_urls": ["https://file.aiquickdraw.com/4k/x.jpg"],
                "mediaIds": ["m1"],
            },
            provider_status="1",
        ),
    ),
    (
        "quickstart: resultUrls at data level",
        {
            "code": 200,
            "msg": "success",
            "data": {"taskId": "veo_task_abc", "successFlag": 1, "resultUrls": [KIE_URL]},
        },
        kie_event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(KIE_URL,),
            extra={"successFlag": 1},
            provider_status="1",
        ),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), KIE_CASES, ids=[c[0] for c in KIE_CASES])
def test_kie_status(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    assert kie.parse_status(body, "veo_task_abc") == expected


@pytest.mark.parametrize(
    "urls",
    [[KIE_URL], json.dumps([KIE_URL]), f"[{KIE_URL}]", KIE_URL],
    ids=["list", "json string", "bracketed", "bare"],
)
def test_kie_status_four_url_forms(urls: Any) -> None:
    body = copy.deepcopy(KIE_SUCCESS)
    body["data"]["response"]["resultUrls"] = urls
    assert kie.parse_status(body, "veo_task_abc").result_urls == (KIE_URL,)


def test_kie_status_response_urls_preferred_over_data_urls() -> None:
    body = copy.deepcopy(KIE_SUCCESS)
    body["data"]["resultUrls"] = ["https://elsewhere.example/x.mp4"]
    assert kie.parse_status(body, "veo_task_abc").result_urls == (KIE_URL,)


def test_kie_status_numeric_times_kept() -> None:
    body = kie_record(1, createTime=1749205500000, completeTime=1749205800000)
    extra = kie.parse_status(body, "veo_task_abc").extra
    assert (extra["createTime"], extra["completeTime"]) == (1749205500000, 1749205800000)


@pytest.mark.parametrize(
    "msg",
    ["record is null", "Temporarily supports records within 14 days", "RECORD IS NULL."],
)
def test_kie_status_unknown_task(msg: str) -> None:
    with pytest.raises(PermanentError) as caught:
        kie.parse_status({"code": 422, "msg": msg, "data": None}, "veo_task_abc")
    assert caught.value.reason == "unknown_task"


@pytest.mark.parametrize(
    ("code", "msg"),
    [
        (422, "record result data is blank"),
        (401, "You do not have access permissions"),
        (500, "Internal Error"),
        (429, "rate limited"),
        (404, "record is null"),
    ],
)
def test_kie_status_other_codes_invalid(code: int, msg: str) -> None:
    with pytest.raises(InvalidPayload, match="code"):
        kie.parse_status({"code": code, "msg": msg, "data": None}, "veo_task_abc")


def test_kie_status_other_task_invalid() -> None:
    with pytest.raises(InvalidPayload, match=r"data\.taskId"):
        kie.parse_status(KIE_SUCCESS, "veo_task_other")


def test_kie_status_inner_task_id_mismatch_invalid() -> None:
    body = copy.deepcopy(KIE_SUCCESS)
    body["data"]["response"]["taskId"] = "veo_task_other"
    with pytest.raises(InvalidPayload, match=r"data\.response\.taskId"):
        kie.parse_status(body, "veo_task_abc")


KIE_WRONG: list[tuple[tuple[str, ...], Any, str]] = [
    (("code",), ..., "code"),
    (("code",), "ok", "code"),
    (("msg",), 5, "msg"),
    (("data",), ..., "data"),
    (("data",), "veo_task_abc", "data"),
    (("data", "taskId"), ..., r"data\.taskId"),
    (("data", "taskId"), 5, r"data\.taskId"),
    (("data", "successFlag"), ..., r"data\.successFlag"),
    (("data", "successFlag"), "yes", r"data\.successFlag"),
    (("data", "successFlag"), 1.0, r"data\.successFlag"),
    (("data", "response"), "x", r"data\.response"),
    (("data", "response", "resultUrls"), 5, r"data\.response\.resultUrls"),
    (("data", "response", "resultUrls"), ["ftp://x"], r"data\.response\.resultUrls"),
    (("data", "response", "originUrls"), ["javascript:x"], r"data\.response\.originUrls"),
    (("data", "response", "fullResultUrls"), 5, r"data\.response\.fullResultUrls"),
    (("data", "response", "resolution"), 1080, r"data\.response\.resolution"),
    (("data", "resultUrls"), ["file:///x"], r"data\.resultUrls"),
    (("data", "errorCode"), 1.5, r"data\.errorCode"),
    (("data", "errorCode"), [400], r"data\.errorCode"),
    (("data", "errorMessage"), 5, r"data\.errorMessage"),
    (("data", "fallbackFlag"), "no", r"data\.fallbackFlag"),
    (("data", "createTime"), [1], r"data\.createTime"),
    (("data", "completeTime"), 1.5, r"data\.completeTime"),
    (("data", "paramJson"), 5, r"data\.paramJson"),
    (("data", "mediaIds"), "m1", r"data\.mediaIds"),
    (("data", "mediaIds"), [1], r"data\.mediaIds"),
]


def put(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node: Any = body
    for step in path[:-1]:
        if not isinstance(node.get(step), dict):
            node[step] = {}
        node = node[step]
    if value is ...:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return body


@pytest.mark.parametrize(("path", "value", "field"), KIE_WRONG, ids=[f"{w[0]}={w[1]!r}" for w in KIE_WRONG])
def test_kie_status_wrong_field_invalid(path: tuple[str, ...], value: Any, field: str) -> None:
    with pytest.raises(InvalidPayload, match=field):
        kie.parse_status(put(copy.deepcopy(KIE_SUCCESS), path, value), "veo_task_abc")


# ========================================================================================================
# APIXO statusTask (https://apixo.ai/docs/api-reference/status-task, seed 002)

APIXO_TASK = "extend_task_12345678"
APIXO_T0 = {"createTime": 1767965610929, "created_at": "2026-01-09T13:33:30.929Z"}


def apixo_answer(**data: Any) -> dict[str, Any]:
    return {
        "code": 200,
        "message": "success",
        "data": {"taskId": APIXO_TASK, "createTime": 1767965610929, **data},
    }


def apixo_event(**fields: Any) -> TaskEvent:
    values: dict[str, Any] = {"provider": "apixo", "task_id": APIXO_TASK, "verification": API}
    values.update(fields)
    return TaskEvent(**values)


APIXO_CASES: list[tuple[str, dict[str, Any], TaskEvent]] = [
    (
        "pending",
        apixo_answer(state="pending"),
        apixo_event(status=TaskStatus.IN_PROGRESS, extra=APIXO_T0, provider_status="pending"),
    ),
    (
        "processing",
        apixo_answer(state="processing"),
        apixo_event(status=TaskStatus.IN_PROGRESS, extra=APIXO_T0, provider_status="processing"),
    ),
    (
        "success",
        apixo_answer(
            state="success",
            resultJson='{"resultUrls":["https://file.apixo.ai/xxx.mp4"]}',
            completeTime=1767965730929,
            costTime=120000,
        ),
        apixo_event(
            status=TaskStatus.SUCCEEDED,
            result_urls=("https://file.apixo.ai/xxx.mp4",),
            extra={
                "costTime": 120000,
                **APIXO_T0,
                "completeTime": 1767965730929,
                "completed_at": "2026-01-09T13:35:30.929Z",
            },
            provider_status="success",
        ),
    ),
    (
        "failed",
        apixo_answer(
            state="failed",
            failCode="TASKID_ERROR",
            failMsg="The source task ID was not found",
            completeTime=1767965620132,
        ),
        apixo_event(
            status=TaskStatus.FAILED,
            failure_code="TASKID_ERROR",
            failure_message="The source task ID was not found",
            extra={**APIXO_T0, "completeTime": 1767965620132, "completed_at": "2026-01-09T13:33:40.132Z"},
            provider_status="failed",
        ),
    ),
    (
        "unknown state",
        apixo_answer(state="archived"),
        apixo_event(status=TaskStatus.UNKNOWN, extra=APIXO_T0, provider_status="archived"),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), APIXO_CASES, ids=[c[0] for c in APIXO_CASES])
def test_apixo_status(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    assert apixo.parse_status(body, APIXO_TASK) == expected


@pytest.mark.parametrize(
    "body",
    [
        {"code": 404, "message": "Not Found"},
        {"code": 404, "message": "task not found", "data": None},
        {"code": 422, "message": "recordInfo is null", "data": None},
        {"code": 400, "message": "Task does not exist"},
    ],
)
def test_apixo_status_unknown_task(body: dict[str, Any]) -> None:
    with pytest.raises(PermanentError) as caught:
        apixo.parse_status(body, APIXO_TASK)
    assert caught.value.reason == "unknown_task"


@pytest.mark.parametrize(
    "body",
    [
        {"code": 404, "message": "model not found"},
        {"code": 401, "message": "Unauthorized - Invalid API key"},
        {"code": 403, "message": "key not found"},
        {"code": 400, "message": "Invalid request parameters"},
        {"code": 500, "message": "Server Error"},
        {"code": 429, "message": "Too Many Requests"},
    ],
)
def test_apixo_status_error_answers_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="code"):
        apixo.parse_status(body, APIXO_TASK)


def test_apixo_status_other_task_invalid() -> None:
    with pytest.raises(InvalidPayload, match=r"data\.taskId"):
        apixo.parse_status(apixo_answer(state="success"), "task_other")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "code"),
        ({"code": "ok"}, "code"),
        ({"code": 200}, "data"),
        ({"code": 200, "data": []}, "data"),
        ({"code": 200, "data": {"state": "success"}}, r"data\.taskId"),
        (apixo_answer(), r"data\.state"),
        (apixo_answer(state="success", resultJson="{bad"), r"data\.resultJson"),
        (apixo_answer(state="success", resultJson="[]"), r"data\.resultJson"),
    ],
)
def test_apixo_status_unreadable_invalid(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload, match=field):
        apixo.parse_status(body, APIXO_TASK)


# ========================================================================================================
# useapi.net GET /jobs/{jobid} (seed 003: the answer is the job record)


def useapi_job(status: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobid": USEAPI_JOB,
        "type": "video",
        "status": status,
        "created": "2025-11-17T12:34:56.789Z",
        "request": {"prompt": "p", "model": "veo-3.1-fast", "count": 1, "replyRef": "ref-1"},
        "response": {},
    }
    body.update(fields)
    return body


def useapi_event(**fields: Any) -> TaskEvent:
    values: dict[str, Any] = {"provider": "useapi", "task_id": USEAPI_JOB, "verification": API}
    values.update(fields)
    return TaskEvent(**values)


USEAPI_EXTRA = {
    "reply_ref": "ref-1",
    "type": "video",
    "created_at": "2025-11-17T12:34:56.789Z",
    "model": "veo-3.1-fast",
    "count": 1,
}
FLOW_URL = "https://flow-content.google/video/a1?Expires=1"

USEAPI_CASES: list[tuple[str, dict[str, Any], TaskEvent]] = [
    (
        "created",
        useapi_job("created"),
        useapi_event(status=TaskStatus.IN_PROGRESS, extra=USEAPI_EXTRA, provider_status="created"),
    ),
    (
        "started",
        useapi_job("started"),
        useapi_event(status=TaskStatus.IN_PROGRESS, extra=USEAPI_EXTRA, provider_status="started"),
    ),
    (
        "completed (media[])",
        useapi_job("completed", response={"media": [{"mediaGenerationId": "user:1-video:a1", "videoUrl": FLOW_URL}]}),
        useapi_event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(FLOW_URL,),
            extra={**USEAPI_EXTRA, "media_generation_ids": ["user:1-video:a1"]},
            provider_status="completed",
        ),
    ),
    (
        "completed (operations[])",
        useapi_job("completed", response={"operations": [{"video": {"fifeUrl": FLOW_URL}}]}),
        useapi_event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(FLOW_URL,),
            extra=USEAPI_EXTRA,
            provider_status="completed",
        ),
    ),
    (
        "failed",
        useapi_job("failed", error="Polling timeout", code=408),
        useapi_event(
            status=TaskStatus.FAILED,
            failure_code="408",
            failure_message="Polling timeout",
            extra=USEAPI_EXTRA,
            provider_status="failed",
        ),
    ),
    (
        "unknown status",
        useapi_job("paused"),
        useapi_event(status=TaskStatus.UNKNOWN, extra=USEAPI_EXTRA, provider_status="paused"),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), USEAPI_CASES, ids=[c[0] for c in USEAPI_CASES])
def test_useapi_status(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    assert useapi.parse_status(body, USEAPI_JOB) == expected


@pytest.mark.parametrize(
    "body",
    [
        {"error": f"Job {USEAPI_JOB} not found", "code": 404},
        {"error": "Not found"},
        {"error": "job does not exist", "code": 400},
        {"jobId": USEAPI_JOB, "error": "Job not found", "code": 404},
        {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}},
    ],
)
def test_useapi_status_unknown_job(body: dict[str, Any]) -> None:
    with pytest.raises(PermanentError) as caught:
        useapi.parse_status(body, USEAPI_JOB)
    assert caught.value.reason == "unknown_task"


@pytest.mark.parametrize(
    "body",
    [
        {"error": "Unauthorized"},
        {"error": "Unauthorized", "code": 401},
        {"error": "Google Flow account jo***@gmail.com not found"},
        {"error": {"code": 503, "message": "Service temporarily unavailable.", "status": "UNAVAILABLE"}},
        {},
        {"jobid": USEAPI_JOB},
    ],
)
def test_useapi_status_error_answers_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="status"):
        useapi.parse_status(body, USEAPI_JOB)


def test_useapi_status_other_job_invalid() -> None:
    with pytest.raises(InvalidPayload, match="jobid"):
        useapi.parse_status(useapi_job("completed"), "j1-u1-email:x@y.z-bot:google-flow")


def test_useapi_status_camel_case_job_id() -> None:
    body = useapi_job("completed")
    body["jobId"] = body.pop("jobid")
    assert useapi.parse_status(body, USEAPI_JOB).status is TaskStatus.SUCCEEDED


# ========================================================================================================
# EvoLink GET /v1/tasks/{id} (https://docs.evolink.ai/en/api-manual/task-management/get-task-detail)

EVOLINK_URL = "https://files.evolink.ai/out/video.mp4"


def evolink_task(status: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": EVOLINK_TASK,
        "object": "video.generation.task",
        "created": 1756817821,
        "model": "veo3.1-pro",
        "type": "video",
        "status": status,
        "progress": 100 if status == "completed" else 30,
        "task_info": {"can_cancel": status in ("pending", "processing")},
    }
    body.update(fields)
    return body


def evolink_event(progress: int = 30, **fields: Any) -> TaskEvent:
    values: dict[str, Any] = {
        "provider": "evolink",
        "task_id": EVOLINK_TASK,
        "verification": API,
        "extra": {
            "created": 1756817821,
            "created_at": "2025-09-02T12:57:01Z",
            "model": "veo3.1-pro",
            "progress": progress,
        },
    }
    values.update(fields)
    return TaskEvent(**values)


EVOLINK_CASES: list[tuple[str, dict[str, Any], TaskEvent]] = [
    (
        "pending",
        evolink_task("pending"),
        evolink_event(status=TaskStatus.IN_PROGRESS, provider_status="pending"),
    ),
    (
        "processing",
        evolink_task("processing"),
        evolink_event(status=TaskStatus.IN_PROGRESS, provider_status="processing"),
    ),
    (
        "completed",
        evolink_task("completed", results=[EVOLINK_URL]),
        evolink_event(
            progress=100, status=TaskStatus.SUCCEEDED, result_urls=(EVOLINK_URL,), provider_status="completed"
        ),
    ),
    (
        "completed (output.video_url)",
        evolink_task("completed", output={"video_url": EVOLINK_URL}),
        evolink_event(
            progress=100, status=TaskStatus.SUCCEEDED, result_urls=(EVOLINK_URL,), provider_status="completed"
        ),
    ),
    (
        "failed",
        evolink_task("failed", error={"code": "generation_failed", "message": "upstream error"}),
        evolink_event(
            status=TaskStatus.FAILED,
            failure_code="generation_failed",
            failure_message="upstream error",
            provider_status="failed",
        ),
    ),
    (
        "cancelled",
        evolink_task("cancelled"),
        evolink_event(status=TaskStatus.FAILED, failure_code="cancelled", provider_status="cancelled"),
    ),
    (
        "unknown status",
        evolink_task("queued_for_review"),
        evolink_event(status=TaskStatus.UNKNOWN, provider_status="queued_for_review"),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), EVOLINK_CASES, ids=[c[0] for c in EVOLINK_CASES])
def test_evolink_status(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    assert evolink.parse_status(body, EVOLINK_TASK) == expected


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"code": "task_not_found", "message": "Task not found", "type": "invalid_request_error"}},
        {
            "error": {
                "code": "invalid_task_id",
                "message": "Invalid task ID format, must start with 'task-unified-'",
                "type": "invalid_request_error",
                "param": "task_id",
            }
        },
        {"error": {"code": 404, "message": "no such task"}},
        {"code": 404, "message": "Not Found"},
    ],
)
def test_evolink_status_unknown_task(body: dict[str, Any]) -> None:
    with pytest.raises(PermanentError) as caught:
        evolink.parse_status(body, EVOLINK_TASK)
    assert caught.value.reason == "unknown_task"


@pytest.mark.parametrize(
    "body",
    [
        {
            "error": {
                "code": "unauthorized",
                "message": "Invalid or expired token",
                "type": "authentication_error",
            }
        },
        {"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
        {"error": "internal"},
        {},
        {"id": EVOLINK_TASK},
    ],
)
def test_evolink_status_error_answers_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="status"):
        evolink.parse_status(body, EVOLINK_TASK)


def test_evolink_status_other_task_invalid() -> None:
    with pytest.raises(InvalidPayload, match="id"):
        evolink.parse_status(evolink_task("completed"), "task-unified-1-other")


# ========================================================================================================
# every provider: the answer is not an object; only InvalidPayload / PermanentError(unknown_task) escape

STATUS_PARSERS: list[tuple[str, Callable[[Any, str], TaskEvent], dict[str, Any], str]] = [
    ("kie", kie.parse_status, KIE_SUCCESS, "veo_task_abc"),
    ("apixo", apixo.parse_status, APIXO_CASES[2][1], APIXO_TASK),
    ("useapi", useapi.parse_status, USEAPI_CASES[2][1], USEAPI_JOB),
    ("evolink", evolink.parse_status, EVOLINK_CASES[2][1], EVOLINK_TASK),
]


@pytest.mark.parametrize(("name", "parse", "good", "task_id"), STATUS_PARSERS, ids=[p[0] for p in STATUS_PARSERS])
@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_status_answer_not_an_object_invalid(
    name: str, parse: Callable[[Any, str], TaskEvent], good: dict[str, Any], task_id: str, body: Any
) -> None:
    with pytest.raises(InvalidPayload, match="body"):
        parse(body, task_id)


@pytest.mark.parametrize(("name", "parse", "good", "task_id"), STATUS_PARSERS, ids=[p[0] for p in STATUS_PARSERS])
def test_status_events_are_provider_api_verified(
    name: str, parse: Callable[[Any, str], TaskEvent], good: dict[str, Any], task_id: str
) -> None:
    parsed = parse(good, task_id)
    assert parsed.verification is Verification.PROVIDER_API
    assert parsed.status is TaskStatus.SUCCEEDED
    assert TaskEvent.from_json(json.loads(json.dumps(parsed.to_json()))) == parsed


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
TOP_KEYS = [
    "code",
    "msg",
    "message",
    "data",
    "error",
    "status",
    "id",
    "jobid",
    "jobId",
    "results",
    "response",
]
DATA_KEYS = [
    "taskId",
    "successFlag",
    "state",
    "response",
    "resultUrls",
    "resultJson",
    "errorCode",
    "errorMessage",
    "failCode",
    "mediaIds",
    "paramJson",
    "createTime",
]


def _only_expected_errors(parse: Callable[[Any, str], TaskEvent], body: Any, task_id: str) -> None:
    try:
        parsed = parse(body, task_id)
    except InvalidPayload:
        return
    except PermanentError as exc:
        assert exc.reason == "unknown_task"
        return
    assert parsed.task_id == task_id
    assert parsed.verification is Verification.PROVIDER_API
    json.dumps(parsed.to_json())


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(STATUS_PARSERS),
    st.dictionaries(st.sampled_from(TOP_KEYS), JSON | st.sampled_from([200, 404, 422, "completed"]), max_size=6),
)
def test_random_answers_raise_only_expected_errors(
    parser: tuple[str, Callable[[Any, str], TaskEvent], dict[str, Any], str], body: dict[str, Any]
) -> None:
    _only_expected_errors(parser[1], body, parser[3])


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(STATUS_PARSERS),
    st.dictionaries(st.sampled_from(TOP_KEYS + DATA_KEYS), JSON, min_size=1, max_size=4),
    st.booleans(),
)
def test_random_values_in_good_answers_raise_only_expected_errors(
    parser: tuple[str, Callable[[Any, str], TaskEvent], dict[str, Any], str],
    changes: dict[str, Any],
    inside_data: bool,
) -> None:
    _, parse, good, task_id = parser
    body = copy.deepcopy(good)
    target = body["data"] if inside_data and isinstance(body.get("data"), dict) else body
    target.update(changes)
    _only_expected_errors(parse, body, task_id)
