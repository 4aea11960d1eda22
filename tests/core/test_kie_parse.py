"""``kie.parse`` on the callback bodies documented in PROVIDERS.md section 1 (kie.ai)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from veo_archiver.errors import InvalidPayload
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.providers import kie

SIG = Verification.SIGNATURE

# --- the documented bodies, verbatim in shape (https://docs.kie.ai/veo3-api/generate-veo-3-video-callbacks)

GENERATE_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "Veo3.1 video generated successfully.",
    "data": {
        "taskId": "veo_task_abc",
        "promptJson": '{"aspectRatio":"16:9","model":"veo3_fast","prompt":"cat"}',
        "info": {
            "resultUrls": ["https://tempfile.aiquickdraw.com/v/video1.mp4"],
            "originUrls": ["https://tempfile.aiquickdraw.com/v/original1.mp4"],
            "resolution": "1080p",
        },
        "fallbackFlag": False,
    },
}

FAILURE_400_MESSAGES = [
    "Your prompt was flagged by Website as violating content policies.",
    "Only English prompts are supported at this time.",
    "Failed to fetch the image. Kindly verify any access limits set by you or your service provider.",
    "public error unsafe image upload.",
]
MSG_422 = (
    "Your request was rejected by Flow(upstream said no). "
    "You may consider using our other fallback channels, such as enabling fallback."
)

EXTEND_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "Veo3.1 video extension successful.",
    "data": {
        "taskId": "veo_extend_task_xyz789",
        "info": {"resultUrls": ["https://tempfile.aiquickdraw.com/v/extended.mp4"], "resolution": "720p"},
        "fallbackFlag": False,
    },
}

FOURK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "4K Video generated successfully.",
    "data": {
        "taskId": "veo_task_x",
        "info": {
            "resultUrls": ["https://file.aiquickdraw.com/4k/x.mp4"],
            "imageUrls": ["https://file.aiquickdraw.com/4k/x.jpg"],
        },
        "creditsConsumed": 120,
    },
}

FOURK_FAILURE: dict[str, Any] = {
    "code": 500,
    "msg": "The 4K version of this video is unavailable. Please try a different video.",
    "data": {"taskId": "veo_task_x"},
}


def failure_body(code: int, msg: str, task_id: str = "veo_task_abc") -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": {"taskId": task_id, "fallbackFlag": False}}


def with_info(**info: Any) -> dict[str, Any]:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"]["info"] = info
    return body


# --------------------------------------------------------------------------------------------------------
# success


def test_generate_success() -> None:
    event = kie.parse(GENERATE_SUCCESS, verification=SIG)
    assert isinstance(event, TaskEvent)
    assert event.provider == "kie"
    assert event.task_id == "veo_task_abc"
    assert event.status is TaskStatus.SUCCEEDED
    assert event.verification is SIG
    assert event.result_urls == ("https://tempfile.aiquickdraw.com/v/video1.mp4",)
    assert event.failure_code is None
    assert event.failure_message is None
    assert event.provider_status == "200"
    assert event.extra["origin_urls"] == ["https://tempfile.aiquickdraw.com/v/original1.mp4"]
    assert event.extra["resolution"] == "1080p"
    assert event.extra["prompt"] == {"aspectRatio": "16:9", "model": "veo3_fast", "prompt": "cat"}
    assert event.extra["fallbackFlag"] is False
    assert event.extra["code"] == 200
    assert event.extra["msg"] == "Veo3.1 video generated successfully."
    assert "image_urls" not in event.extra
    assert event.kind is None


def test_generate_success_does_not_mutate_body() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    kie.parse(body, verification=SIG)
    assert body == GENERATE_SUCCESS


def test_verification_is_carried_through() -> None:
    assert kie.parse(GENERATE_SUCCESS, verification=Verification.UNSIGNED).verification is Verification.UNSIGNED


def test_event_round_trips_through_json() -> None:
    event = kie.parse(GENERATE_SUCCESS, verification=SIG)
    assert TaskEvent.from_json(event.to_json()) == event


def test_success_with_fallback_msg() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["msg"] = "Veo3.1 video generated successfully.(using fallback model)."
    body["data"]["fallbackFlag"] = True
    event = kie.parse(body, verification=SIG)
    assert event.status is TaskStatus.SUCCEEDED
    assert event.extra["fallbackFlag"] is True
    assert event.extra["msg"] == body["msg"]
    assert event.result_urls == ("https://tempfile.aiquickdraw.com/v/video1.mp4",)


def test_success_without_origin_urls_has_no_origin_key() -> None:
    # originUrls is only sent when the aspect ratio is not 16:9.
    body = with_info(resultUrls=["https://a.example/1.mp4"], resolution="720p")
    event = kie.parse(body, verification=SIG)
    assert "origin_urls" not in event.extra
    assert event.extra["resolution"] == "720p"


def test_prompt_json_given_as_object_kept() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"]["promptJson"] = {"prompt": "cat"}
    assert kie.parse(body, verification=SIG).extra["prompt"] == {"prompt": "cat"}


def test_prompt_json_not_json_kept_as_text() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"]["promptJson"] = "{not json"
    assert kie.parse(body, verification=SIG).extra["prompt"] == "{not json"


def test_extend_success() -> None:
    event = kie.parse(EXTEND_SUCCESS, verification=SIG)
    assert event.status is TaskStatus.SUCCEEDED
    assert event.task_id == "veo_extend_task_xyz789"
    assert event.result_urls == ("https://tempfile.aiquickdraw.com/v/extended.mp4",)
    assert event.extra["resolution"] == "720p"
    assert event.kind == "extend"


def test_4k_success() -> None:
    event = kie.parse(FOURK_SUCCESS, verification=SIG)
    assert event.status is TaskStatus.SUCCEEDED
    assert event.task_id == "veo_task_x"
    assert event.result_urls == ("https://file.aiquickdraw.com/4k/x.mp4",)
    assert event.extra["image_urls"] == ["https://file.aiquickdraw.com/4k/x.jpg"]
    assert event.extra["creditsConsumed"] == 120
    assert event.kind == "4k"
    assert "fallbackFlag" not in event.extra


def test_verification_page_example_body() -> None:
    # top-level taskId + data.task_id + callbackType, as on the webhook-verification page
    body = {
        "taskId": "ee603959-debb-48d1-98c4-a6d1c717eba6",
        "code": 200,
        "msg": "success",
        "data": {
            "task_id": "ee603959-debb-48d1-98c4-a6d1c717eba6",
            "callbackType": "task_completed",
            "info": {"resultUrls": ["https://a.example/1.mp4"]},
        },
    }
    event = kie.parse(body, verification=SIG)
    assert event.task_id == "ee603959-debb-48d1-98c4-a6d1c717eba6"
    assert event.extra["callbackType"] == "task_completed"


# --------------------------------------------------------------------------------------------------------
# failures


@pytest.mark.parametrize("msg", FAILURE_400_MESSAGES)
def test_failure_400(msg: str) -> None:
    event = kie.parse(failure_body(400, msg), verification=SIG)
    assert event.status is TaskStatus.FAILED
    assert event.failure_code == "400"
    assert event.failure_message == msg
    assert event.result_urls == ()
    assert event.task_id == "veo_task_abc"
    assert event.extra["fallbackFlag"] is False


@pytest.mark.parametrize(
    ("code", "msg"),
    [
        (422, MSG_422),
        (500, "Internal Error, Please try again later."),
        (500, "Internal Error - Timeout"),
        (501, "Failed - Video generation task failed"),
    ],
)
def test_failure_other_codes(code: int, msg: str) -> None:
    event = kie.parse(failure_body(code, msg), verification=SIG)
    assert event.status is TaskStatus.FAILED
    assert event.failure_code == str(code)
    assert event.failure_message == msg
    assert event.provider_status == str(code)
    assert event.result_urls == ()


def test_extend_failure() -> None:
    event = kie.parse(
        failure_body(501, "Failed - Video generation task failed", "veo_extend_task_xyz789"), verification=SIG
    )
    assert event.status is TaskStatus.FAILED
    assert event.task_id == "veo_extend_task_xyz789"
    assert event.failure_code == "501"


def test_4k_failure() -> None:
    event = kie.parse(FOURK_FAILURE, verification=SIG)
    assert event.status is TaskStatus.FAILED
    assert event.failure_code == "500"
    assert event.failure_message == FOURK_FAILURE["msg"]
    assert event.task_id == "veo_task_x"
    assert event.kind == "4k"


def test_failure_without_msg() -> None:
    event = kie.parse({"code": 500, "data": {"taskId": "t"}}, verification=SIG)
    assert event.status is TaskStatus.FAILED
    assert event.failure_code == "500"
    assert event.failure_message is None


# --------------------------------------------------------------------------------------------------------
# resultUrls / originUrls in all four documented forms

FORMS = [
    pytest.param(["https://a.example/1.mp4", "https://a.example/2.mp4"], id="list"),
    pytest.param('["https://a.example/1.mp4","https://a.example/2.mp4"]', id="json-string"),
    pytest.param("[https://a.example/1.mp4, https://a.example/2.mp4]", id="bracketed-non-json"),
]


@pytest.mark.parametrize("value", FORMS)
def test_result_urls_forms(value: Any) -> None:
    event = kie.parse(with_info(resultUrls=value), verification=SIG)
    assert event.result_urls == ("https://a.example/1.mp4", "https://a.example/2.mp4")


@pytest.mark.parametrize("value", FORMS)
def test_origin_urls_forms(value: Any) -> None:
    event = kie.parse(with_info(resultUrls=["https://a.example/r.mp4"], originUrls=value), verification=SIG)
    assert event.extra["origin_urls"] == ["https://a.example/1.mp4", "https://a.example/2.mp4"]


def test_result_urls_documented_openapi_example() -> None:
    event = kie.parse(with_info(resultUrls="[http://example.com/video1.mp4]"), verification=SIG)
    assert event.result_urls == ("http://example.com/video1.mp4",)


def test_result_urls_bracketed_non_json_http() -> None:
    event = kie.parse(with_info(resultUrls="[http://a/1.mp4, http://a/2.mp4]"), verification=SIG)
    assert event.result_urls == ("http://a/1.mp4", "http://a/2.mp4")


def test_result_urls_bare_url_string() -> None:
    event = kie.parse(with_info(resultUrls="https://a.example/only.mp4"), verification=SIG)
    assert event.result_urls == ("https://a.example/only.mp4",)


def test_origin_urls_bare_url_string() -> None:
    event = kie.parse(
        with_info(resultUrls="https://a.example/r.mp4", originUrls="https://a.example/o.mp4"),
        verification=SIG,
    )
    assert event.extra["origin_urls"] == ["https://a.example/o.mp4"]


def test_image_urls_as_json_string() -> None:
    body = copy.deepcopy(FOURK_SUCCESS)
    body["data"]["info"]["imageUrls"] = '["https://a.example/x.jpg"]'
    assert kie.parse(body, verification=SIG).extra["image_urls"] == ["https://a.example/x.jpg"]


# --------------------------------------------------------------------------------------------------------
# wrong types -> InvalidPayload naming the field


def test_code_as_list_invalid() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["code"] = [200]
    with pytest.raises(InvalidPayload, match="code"):
        kie.parse(body, verification=SIG)


@pytest.mark.parametrize("code", [None, "abc", 200.0, True, {"v": 200}, "", "²", "--5", "1" * 5000])
def test_code_other_wrong_values_invalid(code: Any) -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["code"] = code
    with pytest.raises(InvalidPayload, match="code"):
        kie.parse(body, verification=SIG)


def test_code_missing_invalid() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    del body["code"]
    with pytest.raises(InvalidPayload, match="code"):
        kie.parse(body, verification=SIG)


def test_data_as_string_invalid() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"] = "veo_task_abc"
    body["taskId"] = "veo_task_abc"  # so the task id is found and the data check is reached
    with pytest.raises(InvalidPayload, match="data"):
        kie.parse(body, verification=SIG)


def test_data_as_string_without_top_level_task_id_invalid() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"] = "veo_task_abc"
    with pytest.raises(InvalidPayload, match="taskId"):
        kie.parse(body, verification=SIG)


def test_info_as_list_invalid() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"]["info"] = ["https://a.example/1.mp4"]
    with pytest.raises(InvalidPayload, match=r"data\.info"):
        kie.parse(body, verification=SIG)


def test_msg_as_number_invalid() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["msg"] = 5
    with pytest.raises(InvalidPayload, match="msg"):
        kie.parse(body, verification=SIG)


@pytest.mark.parametrize("value", [5, 1.5, True, {"url": "https://a.example/1.mp4"}])
def test_result_urls_wrong_type_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match="resultUrls"):
        kie.parse(with_info(resultUrls=value), verification=SIG)


@pytest.mark.parametrize(
    "element",
    [
        "javascript:alert(1)",
        "ftp://x",
        "ftp://a.example/1.mp4",
        "file:///etc/passwd",
        "data:video/mp4;base64,AAAA",
        "http://",
        "/relative/1.mp4",
        "",
        5,
        None,
        ["https://a.example/1.mp4"],
    ],
)
def test_result_urls_non_url_element_invalid(element: Any) -> None:
    with pytest.raises(InvalidPayload, match="resultUrls"):
        kie.parse(with_info(resultUrls=["https://a.example/1.mp4", element]), verification=SIG)


@pytest.mark.parametrize("value", ["javascript:alert(1)", "ftp://x", "[javascript:alert(1)]", '["ftp://x"]'])
def test_result_urls_non_url_string_invalid(value: str) -> None:
    with pytest.raises(InvalidPayload, match="resultUrls"):
        kie.parse(with_info(resultUrls=value), verification=SIG)


@pytest.mark.parametrize("value", [5, "ftp://x", ["javascript:alert(1)"]])
def test_origin_urls_wrong_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match="originUrls"):
        kie.parse(with_info(resultUrls=["https://a.example/1.mp4"], originUrls=value), verification=SIG)


@pytest.mark.parametrize("value", [5, ["ftp://x"]])
def test_image_urls_wrong_invalid(value: Any) -> None:
    body = copy.deepcopy(FOURK_SUCCESS)
    body["data"]["info"]["imageUrls"] = value
    with pytest.raises(InvalidPayload, match="imageUrls"):
        kie.parse(body, verification=SIG)


@pytest.mark.parametrize("task_id", [5, "", "   ", ["veo_task_abc"], {"id": "x"}, True])
def test_task_id_wrong_type_invalid(task_id: Any) -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"]["taskId"] = task_id
    with pytest.raises(InvalidPayload, match="taskId"):
        kie.parse(body, verification=SIG)


def test_task_id_missing_invalid() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    del body["data"]["taskId"]
    with pytest.raises(InvalidPayload, match="taskId"):
        kie.parse(body, verification=SIG)


def test_result_urls_deeply_nested_string_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidPayload, match="resultUrls"):
        kie.parse(with_info(resultUrls="[" * 100_000), verification=SIG)


def test_prompt_json_deeply_nested_not_a_crash() -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["data"]["promptJson"] = "[" * 100_000
    event = kie.parse(body, verification=SIG)
    assert event.extra["prompt"] == "[" * 100_000


# --------------------------------------------------------------------------------------------------------
# code as a numeric string


@pytest.mark.parametrize("code", ["200", " 200 "])
def test_code_numeric_string_success(code: str) -> None:
    body = copy.deepcopy(GENERATE_SUCCESS)
    body["code"] = code
    event = kie.parse(body, verification=SIG)
    assert event.status is TaskStatus.SUCCEEDED
    assert event.extra["code"] == 200
    assert event.provider_status == "200"


def test_code_numeric_string_failure() -> None:
    body = failure_body(400, FAILURE_400_MESSAGES[0])
    body["code"] = "400"
    event = kie.parse(body, verification=SIG)
    assert event.status is TaskStatus.FAILED
    assert event.failure_code == "400"
