"""``useapi.parse`` on the job records documented in PROVIDERS.md section 3 and seed 003 (useapi.net)."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from veo_archiver.errors import InvalidPayload
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.providers import useapi

TOKEN = Verification.TOKEN
JOB = "j1731859234567v-u12345-email:jo***@gmail.com-bot:google-flow"
SOURCE = "user:12345-email:6a6f...-video:CAMaJDMx..."
CAPTCHA_ERROR = "captcha_quality: PUBLIC_ERROR_UNUSUAL_ACTIVITY_TOO_MUCH_TRAFFIC after 3 attempts"
CREATED = "2025-11-17T12:34:56.789Z"
UPDATED = "2025-11-17T12:37:23.456Z"


def video_url(i: int) -> str:
    return f"https://flow-content.google/video/v{i}?Expires=1&Signature=s{i}"


def thumb_url(i: int) -> str:
    return f"https://flow-content.google/image/v{i}?Expires=1"


def media_id(i: int) -> str:
    return f"user:12345-email:6a6f-video:v{i}"


def media_item(i: int) -> dict[str, Any]:
    """One ``response.media[]`` entry as in the seed's 200 example."""
    return {
        "name": f"a1d95d21-75d2-482d-a354-14ef8802ce6{i}",
        "projectId": "9f63078c-redacted",
        "workflowId": "fa986834-redacted",
        "workflowStepId": "CAE",
        "mediaMetadata": {
            "createTime": "2026-05-20T23:14:02.931677Z",
            "mediaTitle": "The camera slowly pans right",
            "mediaStatus": {"mediaGenerationStatus": "MEDIA_GENERATION_STATUS_SUCCESSFUL"},
            "visibility": "PRIVATE",
        },
        "video": {
            "generatedVideo": {"seed": 987654321 + i, "model": "veo_3_1_t2v", "isLooped": False},
            "dimensions": {"length": "8s"},
            "operation": {"name": f"a1d95d21-{i}"},
        },
        "mediaGenerationId": media_id(i),
        "videoUrl": video_url(i),
        "thumbnailUrl": thumb_url(i),
    }


def operation_item(i: int, *, nested: bool = False) -> dict[str, Any]:
    """One ``response.operations[]`` entry of the Nov 2025 schema (URL in ``video`` or in the operation)."""
    video = {
        "uri": f"gs://bucket/v{i}.mp4",
        "seed": 1000 + i,
        "mediaGenerationId": media_id(i),
        "fifeUrl": video_url(i),
        "servingBaseUri": f"https://flow-content.google/base/v{i}",
    }
    if nested:
        return {
            "operation": {"name": f"op{i}", "metadata": {"video": video}},
            "sceneId": f"scene{i}",
            "status": "VIDEO_GENERATION_STATUS_SUCCEEDED",
        }
    return {
        "operation": {"name": f"op{i}"},
        "sceneId": f"scene{i}",
        "status": "VIDEO_GENERATION_STATUS_SUCCEEDED",
        "video": video,
    }


def job(status: str, *, response: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobid": JOB,
        "type": "video",
        "status": status,
        "created": CREATED,
        "updated": UPDATED,
        "request": {
            "prompt": "A serene mountain landscape",
            "model": "veo-3.1-fast",
            "aspectRatio": "landscape",
            "count": 2,
            "async": True,
            "replyUrl": "https://receiver.example/callbacks/useapi/tok",
            "replyRef": "ref-42",
        },
        "response": response if response is not None else {},
    }
    body.update(fields)
    return body


BASE_EXTRA: dict[str, Any] = {
    "reply_ref": "ref-42",
    "type": "video",
    "created_at": CREATED,
    "updated_at": UPDATED,
    "model": "veo-3.1-fast",
    "count": 2,
}

SEED_ASYNC_CREATED: dict[str, Any] = {  # seed 003, "201 Created" (an extend job)
    "jobid": "j1737312345678v-u12345-email:jo***@gmail.com-bot:google-flow",
    "type": "video",
    "status": "created",
    "created": "2026-01-29T12:34:56.789Z",
    "request": {
        "async": True,
        "prompt": "The camera slowly pans right revealing a majestic waterfall",
        "mediaGenerationId": SOURCE,
    },
    "response": {
        "captcha": {
            "service": "AntiCaptcha",
            "taskId": "14af1dbb-885c-4e25-8121-7a79489dfd0e",
            "durationMs": 5357,
        }
    },
}


def event(**fields: Any) -> TaskEvent:
    values: dict[str, Any] = {"provider": "useapi", "verification": TOKEN, "task_id": JOB}
    values.update(fields)
    return TaskEvent(**values)


COUNT4 = job("completed", response={"media": [media_item(i) for i in range(4)]})
COUNT4["request"]["count"] = 4

CORPUS: list[tuple[str, dict[str, Any], TaskEvent]] = [
    (
        "seed async created (extend)",
        SEED_ASYNC_CREATED,
        event(
            task_id="j1737312345678v-u12345-email:jo***@gmail.com-bot:google-flow",
            status=TaskStatus.IN_PROGRESS,
            kind="extend",
            extra={
                "type": "video",
                "created_at": "2026-01-29T12:34:56.789Z",
                "source_media_generation_id": SOURCE,
            },
            provider_status="created",
        ),
    ),
    (
        "created",
        job("created"),
        event(status=TaskStatus.IN_PROGRESS, extra=BASE_EXTRA, provider_status="created"),
    ),
    (
        "started",
        job("started"),
        event(status=TaskStatus.IN_PROGRESS, extra=BASE_EXTRA, provider_status="started"),
    ),
    (
        "completed, media[], count 2",
        job("completed", response={"media": [media_item(0), media_item(1)]}),
        event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(video_url(0), video_url(1)),
            extra={
                **BASE_EXTRA,
                "media_generation_ids": [media_id(0), media_id(1)],
                "thumbnail_urls": [thumb_url(0), thumb_url(1)],
            },
            provider_status="completed",
        ),
    ),
    (
        "completed, media[], count 4",
        COUNT4,
        event(
            status=TaskStatus.SUCCEEDED,
            result_urls=tuple(video_url(i) for i in range(4)),
            extra={
                **BASE_EXTRA,
                "count": 4,
                "media_generation_ids": [media_id(i) for i in range(4)],
                "thumbnail_urls": [thumb_url(i) for i in range(4)],
            },
            provider_status="completed",
        ),
    ),
    (
        "completed, operations[].video.fifeUrl",
        job("completed", response={"operations": [operation_item(0), operation_item(1)]}),
        event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(video_url(0), video_url(1)),
            extra={**BASE_EXTRA, "media_generation_ids": [media_id(0), media_id(1)]},
            provider_status="completed",
        ),
    ),
    (
        "completed, operations[].operation.metadata.video.fifeUrl",
        job(
            "completed",
            response={"operations": [operation_item(0, nested=True), operation_item(1, nested=True)]},
        ),
        event(
            status=TaskStatus.SUCCEEDED,
            result_urls=(video_url(0), video_url(1)),
            extra={**BASE_EXTRA, "media_generation_ids": [media_id(0), media_id(1)]},
            provider_status="completed",
        ),
    ),
    (
        "failed, error string with code",
        job("failed", error="Polling timeout", code=408),
        event(
            status=TaskStatus.FAILED,
            failure_code="408",
            failure_message="Polling timeout",
            extra=BASE_EXTRA,
            provider_status="failed",
        ),
    ),
    (
        "failed, captcha error string without code",
        job("failed", error=CAPTCHA_ERROR),
        event(
            status=TaskStatus.FAILED,
            failure_message=CAPTCHA_ERROR,
            extra=BASE_EXTRA,
            provider_status="failed",
        ),
    ),
    (
        "failed, error object (503 shape)",
        job(
            "failed",
            error={"code": 503, "message": "Service temporarily unavailable.", "status": "UNAVAILABLE"},
        ),
        event(
            status=TaskStatus.FAILED,
            failure_code="503",
            failure_message="Service temporarily unavailable.",
            extra=BASE_EXTRA,
            provider_status="failed",
        ),
    ),
    (
        "failed, error summary plus response.error (error response structure)",
        job(
            "failed",
            error="Request failed",
            response={
                "error": {
                    "code": 429,
                    "message": "Resource exhausted",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [{"@type": "type.googleapis.com/x", "reason": "PUBLIC_ERROR_USER_QUOTA_REACHED"}],
                }
            },
        ),
        event(
            status=TaskStatus.FAILED,
            failure_code="429",
            failure_message="Request failed",
            extra=BASE_EXTRA,
            provider_status="failed",
        ),
    ),
    (
        "failed, only a per-media error",
        job(
            "failed",
            response={
                "media": [
                    {
                        "name": "m0",
                        "mediaMetadata": {
                            "mediaStatus": {
                                "mediaGenerationStatus": "MEDIA_GENERATION_STATUS_FAILED",
                                "error": {"code": 3, "message": "unsafe generation"},
                            }
                        },
                    }
                ]
            },
        ),
        event(
            status=TaskStatus.FAILED,
            failure_code="3",
            failure_message="unsafe generation",
            extra={**BASE_EXTRA, "media_errors": [{"index": 0, "code": "3", "message": "unsafe generation"}]},
            provider_status="failed",
        ),
    ),
    (
        "failed without any error",
        job("failed"),
        event(status=TaskStatus.FAILED, extra=BASE_EXTRA, provider_status="failed"),
    ),
    (
        "unknown status",
        job("queued"),
        event(status=TaskStatus.UNKNOWN, extra=BASE_EXTRA, provider_status="queued"),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_documented_bodies(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    assert useapi.parse(body, verification=TOKEN) == expected
    assert useapi.task_id_of(body) == expected.task_id


@pytest.mark.parametrize(("name", "body", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_events_round_trip_through_json(name: str, body: dict[str, Any], expected: TaskEvent) -> None:
    parsed = useapi.parse(body, verification=TOKEN)
    assert TaskEvent.from_json(json.loads(json.dumps(parsed.to_json()))) == parsed


@pytest.mark.parametrize(
    "job_id",
    [
        JOB,
        "j1737312345678v-u12345-email:jo***@gmail.com-bot:google-flow",
        "j1-u1-email:a.b+c@example.co.uk-bot:google-flow",
    ],
)
def test_job_ids_with_colon_at_and_star_kept_verbatim(job_id: str) -> None:
    assert useapi.parse(job("completed", jobid=job_id), verification=TOKEN).task_id == job_id


def test_camel_case_job_id_accepted() -> None:
    body = job("completed")
    body["jobId"] = body.pop("jobid")
    assert useapi.task_id_of(body) == JOB
    assert useapi.parse(body, verification=TOKEN).task_id == JOB


def test_both_job_id_spellings_agreeing_accepted() -> None:
    assert useapi.task_id_of(job("completed", jobId=JOB)) == JOB


def test_reply_ref_at_top_level() -> None:
    body = job("completed", replyRef="ref-7")
    del body["request"]["replyRef"]
    assert useapi.parse(body, verification=TOKEN).extra["reply_ref"] == "ref-7"


def test_reply_ref_in_both_places_agreeing() -> None:
    assert useapi.parse(job("completed", replyRef="ref-42"), verification=TOKEN).extra["reply_ref"] == "ref-42"


def test_no_reply_ref_no_key() -> None:
    body = job("completed")
    del body["request"]["replyRef"]
    assert "reply_ref" not in useapi.parse(body, verification=TOKEN).extra


def test_media_preferred_over_operations() -> None:
    body = job("completed", response={"media": [media_item(0)], "operations": [operation_item(5)]})
    parsed = useapi.parse(body, verification=TOKEN)
    assert parsed.result_urls == (video_url(0),)
    assert parsed.extra["media_generation_ids"] == [media_id(0)]


def test_operations_used_when_media_has_no_url() -> None:
    item = media_item(0)
    del item["videoUrl"]
    body = job("completed", response={"media": [item], "operations": [operation_item(5)]})
    assert useapi.parse(body, verification=TOKEN).result_urls == (video_url(5),)


def test_operation_video_url_preferred_over_metadata_url() -> None:
    item = operation_item(0)
    item["operation"]["metadata"] = {"video": {"fifeUrl": video_url(9)}}
    body = job("completed", response={"operations": [item]})
    assert useapi.parse(body, verification=TOKEN).result_urls == (video_url(0),)


def test_media_without_video_url_skipped_and_order_kept() -> None:
    items = [media_item(2), {"name": "failed-variant"}, media_item(0), {"videoUrl": ""}]
    body = job("completed", response={"media": items})
    assert useapi.parse(body, verification=TOKEN).result_urls == (video_url(2), video_url(0))


def test_duplicate_video_urls_dropped() -> None:
    body = job("completed", response={"media": [media_item(0), media_item(0)]})
    assert useapi.parse(body, verification=TOKEN).result_urls == (video_url(0),)


def test_completed_without_media_gives_empty_list() -> None:
    assert useapi.parse(job("completed", response={}), verification=TOKEN).result_urls == ()
    body = job("completed")
    del body["response"]
    assert useapi.parse(body, verification=TOKEN).result_urls == ()


def test_urls_only_reported_when_completed() -> None:
    body = job("started", response={"media": [media_item(0)]})
    parsed = useapi.parse(body, verification=TOKEN)
    assert parsed.result_urls == ()
    assert parsed.extra["media_generation_ids"] == [media_id(0)]


def test_error_only_reported_when_failed() -> None:
    parsed = useapi.parse(job("started", error="transient"), verification=TOKEN)
    assert (parsed.failure_code, parsed.failure_message) == (None, None)


def test_status_case_insensitive_kept_verbatim() -> None:
    parsed = useapi.parse(job("Completed"), verification=TOKEN)
    assert parsed.status is TaskStatus.SUCCEEDED
    assert parsed.provider_status == "Completed"


def test_error_object_status_used_when_no_code() -> None:
    parsed = useapi.parse(job("failed", error={"status": "UNAVAILABLE", "message": "down"}), verification=TOKEN)
    assert (parsed.failure_code, parsed.failure_message) == ("UNAVAILABLE", "down")


# --------------------------------------------------------------------------------------------------------
# every way a body can be wrong -> InvalidPayload naming the field


def put(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """Set ``value`` at ``path``, creating (or replacing with) containers on the way; ``...`` deletes."""
    node: Any = body
    for step, following in itertools.pairwise(path):
        child = node.get(step) if isinstance(node, dict) else node[step]
        if isinstance(following, int):
            if not isinstance(child, list):
                child = []
            while len(child) <= following:
                child.append({})
        elif not isinstance(child, dict):
            child = {}
        node[step] = child
        node = child
    if value is ...:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return body


def completed_media() -> dict[str, Any]:
    return job("completed", response={"media": [media_item(0), media_item(1)]})


def completed_operations() -> dict[str, Any]:
    item = operation_item(1)
    item["operation"]["metadata"] = {"video": {"fifeUrl": video_url(8), "mediaGenerationId": media_id(8)}}
    return job("completed", response={"operations": [operation_item(0), item]})


def failed_with_errors() -> dict[str, Any]:
    return job(
        "failed",
        error={"code": 503, "message": "x", "status": "UNAVAILABLE"},
        code=503,
        replyRef="ref-42",
        response={"error": {"code": 429, "message": "y", "status": "RESOURCE_EXHAUSTED"}},
    )


@pytest.mark.parametrize("body", [{}, {"status": "completed"}, {"jobid": None, "status": "completed"}])
def test_missing_job_id_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="jobid"):
        useapi.parse(body, verification=TOKEN)
    with pytest.raises(InvalidPayload, match="jobid"):
        useapi.task_id_of(body)


@pytest.mark.parametrize("key", ["jobid", "jobId"])
@pytest.mark.parametrize("value", [5, "", "   ", [JOB], {"id": JOB}, True, "j\udc00"])
def test_job_id_wrong_type_invalid(key: str, value: Any) -> None:
    body = job("completed")
    del body["jobid"]
    body[key] = value
    with pytest.raises(InvalidPayload, match=key):
        useapi.parse(body, verification=TOKEN)


def test_job_id_spellings_disagree_invalid() -> None:
    with pytest.raises(InvalidPayload, match="jobid"):
        useapi.parse(job("completed", jobId="j-other"), verification=TOKEN)


@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_body_not_an_object_invalid(body: Any) -> None:
    with pytest.raises(InvalidPayload, match="body"):
        useapi.parse(body, verification=TOKEN)


WRONG: list[tuple[Any, tuple[str | int, ...], Any, str]] = [
    # (base factory, path, value, field named in the error)
    (completed_media, ("status",), ..., "status"),
    (completed_media, ("status",), "", "status"),
    (completed_media, ("status",), 5, "status"),
    (completed_media, ("status",), ["completed"], "status"),
    (completed_media, ("request",), "x", "request"),
    (completed_media, ("request",), [1], "request"),
    (completed_media, ("response",), "x", "response"),
    (completed_media, ("response",), [media_item(0)], "response"),
    (completed_media, ("type",), 5, "type"),
    (completed_media, ("created",), 17, "created"),
    (completed_media, ("updated",), ["x"], "updated"),
    (completed_media, ("request", "model"), 5, r"request\.model"),
    (completed_media, ("request", "count"), "two", r"request\.count"),
    (completed_media, ("request", "count"), 1.5, r"request\.count"),
    (completed_media, ("request", "mediaGenerationId"), 5, r"request\.mediaGenerationId"),
    (completed_media, ("request", "replyRef"), 5, r"request\.replyRef"),
    (completed_media, ("replyRef",), {"r": 1}, "replyRef"),
    (completed_media, ("replyRef",), "ref-other", "replyRef"),
    (completed_media, ("response", "media"), "x", r"response\.media"),
    (completed_media, ("response", "media"), {"0": media_item(0)}, r"response\.media"),
    (completed_media, ("response", "media", 1), "x", r"response\.media\[1\]"),
    (completed_media, ("response", "media", 1), None, r"response\.media\[1\]"),
    (completed_media, ("response", "media", 1, "videoUrl"), "ftp://x", r"response\.media\[1\]\.videoUrl"),
    (completed_media, ("response", "media", 1, "videoUrl"), "not a url", r"response\.media\[1\]\.videoUrl"),
    (completed_media, ("response", "media", 1, "videoUrl"), 5, r"response\.media\[1\]\.videoUrl"),
    (
        completed_media,
        ("response", "media", 1, "videoUrl"),
        [video_url(1)],
        r"response\.media\[1\]\.videoUrl",
    ),
    (completed_media, ("response", "media", 0, "thumbnailUrl"), "javascript:x", r"media\[0\]\.thumbnailUrl"),
    (completed_media, ("response", "media", 0, "mediaGenerationId"), 5, r"media\[0\]\.mediaGenerationId"),
    (completed_media, ("response", "media", 0, "mediaMetadata"), "x", r"media\[0\]\.mediaMetadata"),
    (
        completed_media,
        ("response", "media", 0, "mediaMetadata", "mediaStatus"),
        [],
        r"mediaMetadata\.mediaStatus",
    ),
    (
        completed_media,
        ("response", "media", 0, "mediaMetadata", "mediaStatus", "error"),
        "x",
        r"mediaStatus\.error",
    ),
    (
        completed_media,
        ("response", "media", 0, "mediaMetadata", "mediaStatus", "error", "code"),
        1.5,
        r"mediaStatus\.error\.code",
    ),
    (
        completed_media,
        ("response", "media", 0, "mediaMetadata", "mediaStatus", "error", "message"),
        5,
        r"mediaStatus\.error\.message",
    ),
    (completed_operations, ("response", "operations"), "x", r"response\.operations"),
    (completed_operations, ("response", "operations", 0), 5, r"response\.operations\[0\]"),
    (completed_operations, ("response", "operations", 0, "video"), "x", r"operations\[0\]\.video"),
    (
        completed_operations,
        ("response", "operations", 0, "video", "fifeUrl"),
        "gs://b/v.mp4",
        r"video\.fifeUrl",
    ),
    (completed_operations, ("response", "operations", 0, "video", "fifeUrl"), 5, r"video\.fifeUrl"),
    (
        completed_operations,
        ("response", "operations", 0, "video", "mediaGenerationId"),
        5,
        "mediaGenerationId",
    ),
    (completed_operations, ("response", "operations", 1, "operation"), "x", r"operations\[1\]\.operation"),
    (
        completed_operations,
        ("response", "operations", 1, "operation", "metadata"),
        [],
        r"operation\.metadata",
    ),
    (
        completed_operations,
        ("response", "operations", 1, "operation", "metadata", "video"),
        "x",
        r"operation\.metadata\.video",
    ),
    (failed_with_errors, ("error",), 5, "error"),
    (failed_with_errors, ("error",), ["x"], "error"),
    (failed_with_errors, ("error", "code"), 1.5, r"error\.code"),
    (failed_with_errors, ("error", "code"), True, r"error\.code"),
    (failed_with_errors, ("error", "message"), 5, r"error\.message"),
    (failed_with_errors, ("error", "status"), 5, r"error\.status"),
    (failed_with_errors, ("code",), [503], "code"),
    (failed_with_errors, ("response", "error"), "x", r"response\.error"),
    (failed_with_errors, ("response", "error", "code"), {"c": 1}, r"response\.error\.code"),
    (failed_with_errors, ("response", "error", "message"), 5, r"response\.error\.message"),
]


@pytest.mark.parametrize(("base", "path", "value", "field"), WRONG, ids=[f"{w[1]}={w[2]!r}"[:60] for w in WRONG])
def test_wrong_field_invalid(base: Any, path: tuple[str | int, ...], value: Any, field: str) -> None:
    body = put(base(), path, value)
    with pytest.raises(InvalidPayload, match=field):
        useapi.parse(body, verification=TOKEN)


def test_metadata_fife_url_wrong_invalid() -> None:
    body = completed_operations()
    del body["response"]["operations"][1]["video"]
    body["response"]["operations"][1]["operation"]["metadata"]["video"]["fifeUrl"] = "ftp://x"
    with pytest.raises(InvalidPayload, match=r"operation\.metadata\.video\.fifeUrl"):
        useapi.parse(body, verification=TOKEN)


def test_metadata_fife_url_fallback() -> None:
    body = completed_operations()
    del body["response"]["operations"][1]["video"]
    parsed = useapi.parse(body, verification=TOKEN)
    assert parsed.result_urls == (video_url(0), video_url(8))
    assert parsed.extra["media_generation_ids"] == [media_id(0), media_id(8)]


# --------------------------------------------------------------------------------------------------------
# property: nothing but InvalidPayload ever escapes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
NEAR_VALUES = JSON | st.sampled_from(
    ["created", "started", "completed", "failed", "", JOB, video_url(0), "ftp://x", "[", "4", "-1"]
)
PATHS: list[tuple[str | int, ...]] = [
    ("jobid",),
    ("jobId",),
    ("status",),
    ("error",),
    ("error", "code"),
    ("error", "message"),
    ("error", "status"),
    ("code",),
    ("replyRef",),
    ("type",),
    ("created",),
    ("updated",),
    ("request",),
    ("request", "replyRef"),
    ("request", "model"),
    ("request", "count"),
    ("request", "mediaGenerationId"),
    ("response",),
    ("response", "error"),
    ("response", "error", "code"),
    ("response", "media"),
    ("response", "media", 0),
    ("response", "media", 1, "videoUrl"),
    ("response", "media", 0, "thumbnailUrl"),
    ("response", "media", 0, "mediaGenerationId"),
    ("response", "media", 0, "mediaMetadata"),
    ("response", "media", 0, "mediaMetadata", "mediaStatus"),
    ("response", "media", 0, "mediaMetadata", "mediaStatus", "error"),
    ("response", "operations"),
    ("response", "operations", 0),
    ("response", "operations", 0, "video"),
    ("response", "operations", 0, "video", "fifeUrl"),
    ("response", "operations", 1, "operation", "metadata", "video", "fifeUrl"),
]
BASES = [completed_media, completed_operations, failed_with_errors, lambda: copy.deepcopy(SEED_ASYNC_CREATED)]


def _only_invalid_payload(body: Any) -> None:
    try:
        parsed = useapi.parse(body, verification=TOKEN)
    except InvalidPayload:
        return
    json.dumps(parsed.to_json())
    assert parsed.task_id == useapi.task_id_of(body)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["jobid", "jobId", "status", "request", "response", "error", "code", "replyRef"]),
        JSON,
        max_size=6,
    )
)
def test_random_objects_raise_only_invalid_payload(body: dict[str, Any]) -> None:
    _only_invalid_payload(body)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASES), st.lists(st.tuples(st.sampled_from(PATHS), NEAR_VALUES), min_size=1, max_size=4))
def test_random_values_at_documented_paths_raise_only_invalid_payload(
    base: Any, changes: list[tuple[tuple[str | int, ...], Any]]
) -> None:
    body = base()
    for path, value in changes:
        put(body, path, value)
    _only_invalid_payload(body)
