"""``apixo.parse`` on the callback bodies documented in PROVIDERS.md section 2 and seed 002 (APIXO)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from veo_archiver.errors import InvalidPayload
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.providers import apixo

TOKEN = Verification.TOKEN
URL = "https://cdn.apixo.ai/output/abc.mp4"

# --- the documented bodies (https://apixo.ai/docs/api-reference/webhooks, seed 002)

CALLBACK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "message": "success",
    "data": {
        "taskId": "task_abc",
        "state": "success",
        "resultJson": json.dumps({"resultUrls": [URL]}),
        "costTime": 12500,
        "createTime": 1704067200000,
        "completeTime": 1704067212500,
    },
}
CALLBACK_FAILED: dict[str, Any] = {
    "code": 200,
    "message": "success",
    "data": {
        "taskId": "task_abc",
        "state": "failed",
        "failCode": "CONTENT_VIOLATION",
        "failMsg": "Content violates usage policy",
        "createTime": 1704067200000,
        "completeTime": 1704067205000,
    },
}
SEED_PROCESSING: dict[str, Any] = {
    "code": 200,
    "message": "success",
    "data": {"taskId": "extend_task_12345678", "state": "processing", "createTime": 1767965610929},
}
SEED_SUCCESS: dict[str, Any] = {
    "code": 200,
    "message": "success",
    "data": {
        "taskId": "extend_task_12345678",
        "state": "success",
        "resultJson": '{"resultUrls":["https://file.apixo.ai/xxx.mp4"]}',
        "createTime": 1767965610929,
        "completeTime": 1767965730929,
        "costTime": 120000,
    },
}
SEED_FAILED: dict[str, Any] = {
    "code": 200,
    "message": "success",
    "data": {
        "taskId": "extend_task_12345678",
        "state": "failed",
        "failCode": "CONTENT_VIOLATION",
        "failMsg": "Content does not meet safety guidelines",
        "createTime": 1767965610929,
        "completeTime": 1767965620132,
    },
}

T0 = {"createTime": 1704067200000, "created_at": "2024-01-01T00:00:00.000Z"}
SEED_T0 = {"createTime": 1767965610929, "created_at": "2026-01-09T13:33:30.929Z"}


def with_data(base: dict[str, Any] = CALLBACK_SUCCESS, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            del body["data"][key]
        else:
            body["data"][key] = value
    return body


def event(**fields: Any) -> TaskEvent:
    values: dict[str, Any] = {"provider": "apixo", "verification": TOKEN}
    values.update(fields)
    return TaskEvent(**values)


# --------------------------------------------------------------------------------------------------------
# the corpus: each documented body to its exact event

CORPUS: list[tuple[str, dict[str, Any], TaskEvent]] = [
    (
        "webhook success",
        CALLBACK_SUCCESS,
        event(
            task_id="task_abc",
            status=TaskStatus.SUCCEEDED,
            result_urls=(URL,),
            extra={
                "costTime": 12500,
                **T0,
                "completeTime": 1704067212500,
                "completed_at": "2024-01-01T00:00:12.500Z",
            },
            provider_status="success",
        ),
    ),
    (
        "webhook failed",
        CALLBACK_FAILED,
        event(
            task_id="task_abc",
            status=TaskStatus.FAILED,
            failure_code="CONTENT_VIOLATION",
            failure_message="Content violates usage policy",
            extra={**T0, "completeTime": 1704067205000, "completed_at": "2024-01-01T00:00:05.000Z"},
            provider_status="failed",
        ),
    ),
    (
        "seed processing",
        SEED_PROCESSING,
        event(
            task_id="extend_task_12345678",
            status=TaskStatus.IN_PROGRESS,
            extra=SEED_T0,
            provider_status="processing",
        ),
    ),
    (
        "pending",
        with_data(SEED_PROCESSING, state="pending"),
        event(
            task_id="extend_task_12345678",
            status=TaskStatus.IN_PROGRESS,
            extra=SEED_T0,
            provider_status="pending",
        ),
    ),
    (
        "seed success",
        SEED_SUCCESS,
        event(
            task_id="extend_task_12345678",
            status=TaskStatus.SUCCEEDED,
            result_urls=("https://file.apixo.ai/xxx.mp4",),
            extra={
                "costTime": 120000,
                **SEED_T0,
                "completeTime": 1767965730929,
                "completed_at": "2026-01-09T13:35:30.929Z",
            },
            provider_status="success",
        ),
    ),
    (
        "seed failed",
        SEED_FAILED,
        event(
            task_id="extend_task_12345678",
            status=TaskStatus.FAILED,
            failure_code="CONTENT_VIOLATION",
            failure_message="Content does not meet safety guidelines",
            extra={**SEED_T0, "completeTime": 1767965620132, "completed_at": "2026-01-09T13:33:40.132Z"},
            provider_status="failed",
        ),
    ),
    (
        "unknown state",
        with_data(SEED_PROCESSING, state="queued"),
        event(
            task_id="extend_task_12345678",
            status=TaskStatus.UNKNOWN,
            extra=SEED_T0,
            provider_status="queued",
        ),
    ),
    (
        "newer failCode vocabulary",
        with_data(CALLBACK_FAILED, failCode="SensitiveContentDetected", failMsg="", completeTime=...),
        event(
            task_id="task_abc",
            status=TaskStatus.FAILED,
            failure_code="SensitiveContentDetected",
            extra=T0,
            provider_status="failed",
        ),
    ),
    (
        "failed without failCode or failMsg",
        with_data(CALLBACK_FAILED, failCode=..., failMsg=..., completeTime=...),
        event(task_id="task_abc", status=TaskStatus.FAILED, extra=T0, provider_status="failed"),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_documented_bodies(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    assert apixo.parse(body, verification=TOKEN) == expected
    assert apixo.task_id_of(body) == expected.task_id


@pytest.mark.parametrize(("name", "body", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_events_round_trip_through_json(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    parsed = apixo.parse(body, verification=TOKEN)
    assert TaskEvent.from_json(json.loads(json.dumps(parsed.to_json()))) == parsed


def test_body_not_mutated() -> None:
    body = copy.deepcopy(CALLBACK_SUCCESS)
    apixo.parse(body, verification=TOKEN)
    assert body == CALLBACK_SUCCESS


def test_outer_code_is_not_consulted() -> None:
    """The outer code is 200 even for failures: state alone decides, whatever the envelope says."""
    body = copy.deepcopy(CALLBACK_SUCCESS)
    body["code"] = 500
    body["message"] = "whatever"
    assert apixo.parse(body, verification=TOKEN) == apixo.parse(CALLBACK_SUCCESS, verification=TOKEN)


def test_state_is_case_and_space_insensitive_but_kept_verbatim() -> None:
    parsed = apixo.parse(with_data(state=" SUCCESS "), verification=TOKEN)
    assert parsed.status is TaskStatus.SUCCEEDED
    assert parsed.provider_status == " SUCCESS "


def test_result_json_already_decoded_object() -> None:
    parsed = apixo.parse(with_data(resultJson={"resultUrls": [URL]}), verification=TOKEN)
    assert parsed.result_urls == (URL,)


def test_result_json_several_urls_in_order_without_duplicates() -> None:
    urls = [f"https://cdn.apixo.ai/output/{i}.mp4" for i in (3, 1, 2)]
    body = with_data(resultJson=json.dumps({"resultUrls": [*urls, urls[0]]}))
    assert apixo.parse(body, verification=TOKEN).result_urls == tuple(urls)


def test_result_urls_inside_result_json_as_json_string() -> None:
    body = with_data(resultJson=json.dumps({"resultUrls": json.dumps([URL])}))
    assert apixo.parse(body, verification=TOKEN).result_urls == (URL,)


@pytest.mark.parametrize("value", [..., None, "", "  ", "{}", {}, '{"resultUrls": []}', '{"resultUrls": null}'])
def test_success_without_urls_gives_empty_list(value: Any) -> None:
    parsed = apixo.parse(with_data(resultJson=value), verification=TOKEN)
    assert parsed.status is TaskStatus.SUCCEEDED
    assert parsed.result_urls == ()


def test_urls_only_reported_for_success() -> None:
    body = with_data(CALLBACK_FAILED, resultJson=json.dumps({"resultUrls": [URL]}))
    assert apixo.parse(body, verification=TOKEN).result_urls == ()


def test_fail_fields_only_reported_for_failure() -> None:
    parsed = apixo.parse(with_data(failCode="X", failMsg="y"), verification=TOKEN)
    assert (parsed.failure_code, parsed.failure_message) == (None, None)


def test_numeric_fail_code_stringified() -> None:
    assert apixo.parse(with_data(CALLBACK_FAILED, failCode=501), verification=TOKEN).failure_code == "501"


def test_timestamps_as_numeric_strings() -> None:
    parsed = apixo.parse(with_data(createTime="1704067200000", costTime="12500"), verification=TOKEN)
    assert parsed.extra["createTime"] == 1704067200000
    assert parsed.extra["created_at"] == "2024-01-01T00:00:00.000Z"
    assert parsed.extra["costTime"] == 12500


def test_timestamp_out_of_datetime_range_keeps_raw_value_only() -> None:
    parsed = apixo.parse(with_data(completeTime=10**20), verification=TOKEN)
    assert parsed.extra["completeTime"] == 10**20
    assert "completed_at" not in parsed.extra


def test_unknown_data_fields_ignored() -> None:
    parsed = apixo.parse(with_data(somethingNew={"a": [1]}), verification=TOKEN)
    assert parsed == apixo.parse(CALLBACK_SUCCESS, verification=TOKEN)


# --------------------------------------------------------------------------------------------------------
# every way a body can be wrong -> InvalidPayload naming the field


@pytest.mark.parametrize("body", [{}, {"code": 200, "message": "success"}, {"data": None}])
def test_missing_data_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="data"):
        apixo.parse(body, verification=TOKEN)
    with pytest.raises(InvalidPayload, match="data"):
        apixo.task_id_of(body)


@pytest.mark.parametrize("data", ["task_abc", 5, ["task_abc"], True])
def test_data_wrong_type_invalid(data: Any) -> None:
    with pytest.raises(InvalidPayload, match="data"):
        apixo.parse({"code": 200, "data": data}, verification=TOKEN)


@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_body_not_an_object_invalid(body: Any) -> None:
    with pytest.raises(InvalidPayload, match="body"):
        apixo.parse(body, verification=TOKEN)


def test_missing_task_id_invalid() -> None:
    with pytest.raises(InvalidPayload, match=r"data\.taskId"):
        apixo.parse(with_data(taskId=...), verification=TOKEN)


@pytest.mark.parametrize("task_id", [5, "", "   ", ["task_abc"], {"id": "x"}, True, "a\ud800b"])
def test_task_id_wrong_type_invalid(task_id: Any) -> None:
    with pytest.raises(InvalidPayload, match=r"data\.taskId"):
        apixo.parse(with_data(taskId=task_id), verification=TOKEN)


@pytest.mark.parametrize("state", [..., None, 5, "", "  ", ["success"], {"s": 1}, True])
def test_state_missing_or_wrong_invalid(state: Any) -> None:
    with pytest.raises(InvalidPayload, match=r"data\.state"):
        apixo.parse(with_data(state=state), verification=TOKEN)


@pytest.mark.parametrize(
    "value",
    [
        "{not json",
        "resultUrls",
        '{"resultUrls": [',
        "[" * 100_000,  # deeply nested: a RecursionError inside json must not escape
        '["https://cdn.apixo.ai/output/abc.mp4"]',  # JSON, but not an object
        '"https://cdn.apixo.ai/output/abc.mp4"',
        "5",
        "null",
        5,
        1.5,
        True,
        [URL],
    ],
)
def test_result_json_unreadable_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match=r"data\.resultJson"):
        apixo.parse(with_data(resultJson=value), verification=TOKEN)


@pytest.mark.parametrize(
    "urls",
    [5, True, {"u": URL}, ["ftp://x"], ["javascript:alert(1)"], [URL, 5], [URL, None], "file:///etc/passwd"],
)
def test_result_urls_not_urls_invalid(urls: Any) -> None:
    with pytest.raises(InvalidPayload, match=r"data\.resultJson\.resultUrls"):
        apixo.parse(with_data(resultJson=json.dumps({"resultUrls": urls})), verification=TOKEN)


@pytest.mark.parametrize("value", [1.5, True, ["X"], {"c": 1}])
def test_fail_code_wrong_type_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match=r"data\.failCode"):
        apixo.parse(with_data(CALLBACK_FAILED, failCode=value), verification=TOKEN)


@pytest.mark.parametrize("value", [5, 1.5, True, ["x"], {"m": "x"}])
def test_fail_msg_wrong_type_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match=r"data\.failMsg"):
        apixo.parse(with_data(CALLBACK_FAILED, failMsg=value), verification=TOKEN)


@pytest.mark.parametrize("field", ["costTime", "createTime", "completeTime"])
@pytest.mark.parametrize("value", ["abc", "", 1.5, True, [1], {"ms": 1}, "1" * 100])
def test_times_wrong_type_invalid(field: str, value: Any) -> None:
    with pytest.raises(InvalidPayload, match=rf"data\.{field}"):
        apixo.parse(with_data(**{field: value}), verification=TOKEN)


# --------------------------------------------------------------------------------------------------------
# property: nothing but InvalidPayload ever escapes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
NEAR_VALUES = (
    JSON
    | st.sampled_from(["success", "failed", "pending", "processing", "", URL, "ftp://x", "[", "{}", "1e400"])
    | JSON.map(json.dumps)
    | st.lists(st.sampled_from([URL, "ftp://x", "", "not a url"]), max_size=3).map(
        lambda urls: json.dumps({"resultUrls": urls})
    )
)
PATHS = ["taskId", "state", "resultJson", "failCode", "failMsg", "costTime", "createTime", "completeTime"]
BASES = [CALLBACK_SUCCESS, CALLBACK_FAILED, SEED_PROCESSING, SEED_SUCCESS, SEED_FAILED]


def _only_invalid_payload(body: Any) -> None:
    try:
        parsed = apixo.parse(body, verification=TOKEN)
    except InvalidPayload:
        return
    json.dumps(parsed.to_json())  # the event must travel inside a job
    assert parsed.task_id == apixo.task_id_of(body)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["code", "message", "data", "x"]), JSON, max_size=4))
def test_random_objects_raise_only_invalid_payload(body: dict[str, Any]) -> None:
    _only_invalid_payload(body)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(BASES),
    st.lists(st.tuples(st.sampled_from(PATHS), NEAR_VALUES), min_size=1, max_size=4),
)
def test_random_values_at_documented_paths_raise_only_invalid_payload(
    base: dict[str, Any], changes: list[tuple[str, Any]]
) -> None:
    body = copy.deepcopy(base)
    for path, value in changes:
        body["data"][path] = value
    _only_invalid_payload(body)


@hsettings(deadline=None)
@given(st.dictionaries(st.text(max_size=10), JSON, max_size=6))
def test_random_data_objects_raise_only_invalid_payload(data: dict[str, Any]) -> None:
    _only_invalid_payload({"code": 200, "message": "success", "data": data})
