"""``evolink.parse`` on the task objects documented in PROVIDERS.md section 4 and seed 004 (EvoLink)."""

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
from veo_archiver.providers import evolink

TOKEN = Verification.TOKEN
TASK = "task-unified-1756817821-4x3rx6ny"
URL = "https://files.evolink.ai/out/video.mp4"
URL2 = "https://files.evolink.ai/out/video2.mp4"

# --- the documented bodies (get-task-detail, the callback_url description, seed 004)

COMPLETED: dict[str, Any] = {
    "id": TASK,
    "object": "video.generation.task",
    "created": 1756817821,
    "model": "veo3.1-fast",
    "type": "video",
    "status": "completed",
    "progress": 100,
    "results": [URL],
    "task_info": {"can_cancel": False},
}
FAILED: dict[str, Any] = {
    "id": TASK,
    "object": "video.generation.task",
    "created": 1756817821,
    "model": "veo3.1-fast",
    "type": "video",
    "status": "failed",
    "progress": 0,
    "error": {"code": "content_policy_violation", "message": "The prompt was rejected by the safety system."},
    "task_info": {"can_cancel": False},
}
SEED_PENDING: dict[str, Any] = {  # seed 004, the create response (an extend task)
    "created": 1757169743,
    "id": "task-unified-1757169743-7cvnl5zw",
    "model": "veo3.1-fast-extend",
    "object": "video.generation.task",
    "progress": 0,
    "status": "pending",
    "task_info": {"can_cancel": True, "estimated_time": 180, "video_duration": 8},
    "type": "video",
    "usage": {"billing_rule": "per_call", "credits_reserved": 25.7, "user_group": "default"},
}
# EvoLink's skill repository shape (Evolink-AI/seedance-2-family-video-gen-skill, docs/response-schema.md)
SKILL_REPO_COMPLETED: dict[str, Any] = {
    "id": TASK,
    "status": "completed",
    "output": {"video_url": URL},
}

EXTRA = {"created": 1756817821, "created_at": "2025-09-02T12:57:01Z", "model": "veo3.1-fast"}
SEED_EXTRA = {
    "created": 1757169743,
    "created_at": "2025-09-06T14:42:23Z",
    "model": "veo3.1-fast-extend",
    "progress": 0,
}


def with_fields(base: dict[str, Any] = COMPLETED, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def event(**fields: Any) -> TaskEvent:
    values: dict[str, Any] = {"provider": "evolink", "verification": TOKEN, "task_id": TASK}
    values.update(fields)
    return TaskEvent(**values)


CORPUS: list[tuple[str, dict[str, Any], TaskEvent]] = [
    (
        "completed, results[]",
        COMPLETED,
        event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(URL,),
            extra={**EXTRA, "progress": 100},
            provider_status="completed",
        ),
    ),
    (
        "completed, output.video_url string",
        SKILL_REPO_COMPLETED,
        event(status=TaskStatus.SUCCEEDED, result_urls=(URL,), provider_status="completed"),
    ),
    (
        "completed, output.video_url list",
        with_fields(SKILL_REPO_COMPLETED, output={"video_url": [URL, URL2]}),
        event(status=TaskStatus.SUCCEEDED, result_urls=(URL, URL2), provider_status="completed"),
    ),
    (
        "completed, results[] preferred over output.video_url",
        with_fields(COMPLETED, results=[URL2, URL], output={"video_url": "https://elsewhere.example/v.mp4"}),
        event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(URL2, URL),
            extra={**EXTRA, "progress": 100},
            provider_status="completed",
        ),
    ),
    (
        "failed",
        FAILED,
        event(
            status=TaskStatus.FAILED,
            failure_code="content_policy_violation",
            failure_message="The prompt was rejected by the safety system.",
            extra={**EXTRA, "progress": 0},
            provider_status="failed",
        ),
    ),
    (
        "failed, numeric error code stringified",
        with_fields(FAILED, error={"code": 500, "message": "internal"}),
        event(
            status=TaskStatus.FAILED,
            failure_code="500",
            failure_message="internal",
            extra={**EXTRA, "progress": 0},
            provider_status="failed",
        ),
    ),
    (
        "failed without error",
        with_fields(FAILED, error=...),
        event(status=TaskStatus.FAILED, extra={**EXTRA, "progress": 0}, provider_status="failed"),
    ),
    (
        "cancelled without error",
        with_fields(FAILED, status="cancelled", error=...),
        event(
            status=TaskStatus.FAILED,
            failure_code="cancelled",
            extra={**EXTRA, "progress": 0},
            provider_status="cancelled",
        ),
    ),
    (
        "cancelled with error.code",
        with_fields(FAILED, status="cancelled", error={"code": "user_cancelled", "message": "cancelled by user"}),
        event(
            status=TaskStatus.FAILED,
            failure_code="user_cancelled",
            failure_message="cancelled by user",
            extra={**EXTRA, "progress": 0},
            provider_status="cancelled",
        ),
    ),
    (
        "cancelled with only error.message",
        with_fields(FAILED, status="cancelled", error={"message": "cancelled by user"}),
        event(
            status=TaskStatus.FAILED,
            failure_code="cancelled",
            failure_message="cancelled by user",
            extra={**EXTRA, "progress": 0},
            provider_status="cancelled",
        ),
    ),
    (
        "seed pending (extend)",
        SEED_PENDING,
        event(
            task_id="task-unified-1757169743-7cvnl5zw",
            status=TaskStatus.IN_PROGRESS,
            kind="extend",
            extra=SEED_EXTRA,
            provider_status="pending",
        ),
    ),
    (
        "processing",
        with_fields(SEED_PENDING, status="processing", progress=45),
        event(
            task_id="task-unified-1757169743-7cvnl5zw",
            status=TaskStatus.IN_PROGRESS,
            kind="extend",
            extra={**SEED_EXTRA, "progress": 45},
            provider_status="processing",
        ),
    ),
    (
        "unknown status",
        with_fields(COMPLETED, status="expired", results=...),
        event(status=TaskStatus.UNKNOWN, extra={**EXTRA, "progress": 100}, provider_status="expired"),
    ),
    (
        "minimal body",
        {"id": TASK, "status": "completed"},
        event(status=TaskStatus.SUCCEEDED, provider_status="completed"),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_documented_bodies(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    assert evolink.parse(body, verification=TOKEN) == expected
    assert evolink.task_id_of(body) == expected.task_id


@pytest.mark.parametrize(("name", "body", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_events_round_trip_through_json(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    parsed = evolink.parse(body, verification=TOKEN)
    assert TaskEvent.from_json(json.loads(json.dumps(parsed.to_json()))) == parsed


def test_body_not_mutated() -> None:
    body = copy.deepcopy(COMPLETED)
    evolink.parse(body, verification=TOKEN)
    assert body == COMPLETED


def test_american_spelling_of_cancelled() -> None:
    parsed = evolink.parse(with_fields(FAILED, status="canceled", error=...), verification=TOKEN)
    assert (parsed.status, parsed.failure_code) == (TaskStatus.FAILED, "cancelled")


def test_status_case_insensitive_kept_verbatim() -> None:
    parsed = evolink.parse(with_fields(status="COMPLETED"), verification=TOKEN)
    assert parsed.status is TaskStatus.SUCCEEDED
    assert parsed.provider_status == "COMPLETED"


def test_error_as_plain_string_is_the_message() -> None:
    parsed = evolink.parse(with_fields(FAILED, error="boom"), verification=TOKEN)
    assert (parsed.failure_code, parsed.failure_message) == (None, "boom")


def test_results_as_json_string() -> None:
    assert evolink.parse(with_fields(results=json.dumps([URL, URL2])), verification=TOKEN).result_urls == (
        URL,
        URL2,
    )


@pytest.mark.parametrize("results", [..., None, [], ""])
def test_completed_without_results_gives_empty_list(results: Any) -> None:
    assert evolink.parse(with_fields(results=results), verification=TOKEN).result_urls == ()


def test_urls_only_reported_when_completed() -> None:
    assert evolink.parse(with_fields(status="processing"), verification=TOKEN).result_urls == ()


def test_error_only_reported_when_failed() -> None:
    parsed = evolink.parse(with_fields(error={"code": "x", "message": "y"}), verification=TOKEN)
    assert (parsed.failure_code, parsed.failure_message) == (None, None)


def test_created_out_of_range_keeps_raw_value_only() -> None:
    parsed = evolink.parse(with_fields(created=10**15), verification=TOKEN)
    assert parsed.extra["created"] == 10**15
    assert "created_at" not in parsed.extra


# --------------------------------------------------------------------------------------------------------
# every way a body can be wrong -> InvalidPayload naming the field


@pytest.mark.parametrize("body", [{}, {"status": "completed"}, {"id": None, "status": "completed"}])
def test_missing_id_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="id"):
        evolink.parse(body, verification=TOKEN)
    with pytest.raises(InvalidPayload, match="id"):
        evolink.task_id_of(body)


@pytest.mark.parametrize("value", [5, "", "   ", [TASK], {"id": TASK}, True, "t\ud800"])
def test_id_wrong_type_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match="id"):
        evolink.parse(with_fields(id=value), verification=TOKEN)


@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_body_not_an_object_invalid(body: Any) -> None:
    with pytest.raises(InvalidPayload, match="body"):
        evolink.parse(body, verification=TOKEN)


WRONG: list[tuple[dict[str, Any], str, Any, str]] = [
    (COMPLETED, "status", ..., "status"),
    (COMPLETED, "status", "", "status"),
    (COMPLETED, "status", 5, "status"),
    (COMPLETED, "status", ["completed"], "status"),
    (COMPLETED, "results", 5, "results"),
    (COMPLETED, "results", {"url": URL}, "results"),
    (COMPLETED, "results", ["ftp://x"], "results"),
    (COMPLETED, "results", [URL, 5], "results"),
    (COMPLETED, "results", ["not a url"], "results"),
    (COMPLETED, "results", "javascript:alert(1)", "results"),
    (COMPLETED, "output", "x", "output"),
    (COMPLETED, "output", [URL], "output"),
    (SKILL_REPO_COMPLETED, "output", {"video_url": 5}, r"output\.video_url"),
    (SKILL_REPO_COMPLETED, "output", {"video_url": "file:///etc/passwd"}, r"output\.video_url"),
    (SKILL_REPO_COMPLETED, "output", {"video_url": [URL, None]}, r"output\.video_url"),
    (FAILED, "error", 5, "error"),
    (FAILED, "error", ["x"], "error"),
    (FAILED, "error", {"code": 1.5}, r"error\.code"),
    (FAILED, "error", {"code": True}, r"error\.code"),
    (FAILED, "error", {"code": ["x"]}, r"error\.code"),
    (FAILED, "error", {"code": "x", "message": 5}, r"error\.message"),
    (FAILED, "error", {"code": "x", "message": {"m": 1}}, r"error\.message"),
    (COMPLETED, "created", "yesterday", "created"),
    (COMPLETED, "created", 1.5, "created"),
    (COMPLETED, "created", True, "created"),
    (COMPLETED, "model", 5, "model"),
    (COMPLETED, "model", ["veo3.1-fast"], "model"),
    (COMPLETED, "progress", "half", "progress"),
    (COMPLETED, "progress", 50.5, "progress"),
    (COMPLETED, "progress", [100], "progress"),
]


@pytest.mark.parametrize(("base", "key", "value", "field"), WRONG, ids=[f"{w[1]}={w[2]!r}"[:60] for w in WRONG])
def test_wrong_field_invalid(base: dict[str, Any], key: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidPayload, match=field):
        evolink.parse(with_fields(base, **{key: value}), verification=TOKEN)


# --------------------------------------------------------------------------------------------------------
# property: nothing but InvalidPayload ever escapes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
NEAR_VALUES = (
    JSON
    | st.sampled_from(["completed", "failed", "cancelled", "pending", "processing", "", TASK, URL, "ftp://x", "["])
    | st.fixed_dictionaries({"video_url": JSON | st.just(URL)})
    | st.fixed_dictionaries({}, optional={"code": JSON, "message": JSON})
)
KEYS = ["id", "status", "results", "output", "error", "created", "model", "progress", "object", "task_info"]


def _only_invalid_payload(body: Any) -> None:
    try:
        parsed = evolink.parse(body, verification=TOKEN)
    except InvalidPayload:
        return
    json.dumps(parsed.to_json())
    assert parsed.task_id == evolink.task_id_of(body)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), JSON, max_size=8))
def test_random_objects_raise_only_invalid_payload(body: dict[str, Any]) -> None:
    _only_invalid_payload(body)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([COMPLETED, FAILED, SEED_PENDING, SKILL_REPO_COMPLETED]),
    st.dictionaries(st.sampled_from(KEYS), NEAR_VALUES, min_size=1, max_size=4),
)
def test_random_values_at_documented_paths_raise_only_invalid_payload(
    base: dict[str, Any], changes: dict[str, Any]
) -> None:
    _only_invalid_payload(with_fields(base, **changes))
