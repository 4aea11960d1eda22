"""The typed reader the providers declare their JSON with (veo_archiver/providers/shape.py), and the order in
which the providers report a body with several faults: the first field their parser reads, as before."""

from __future__ import annotations

from typing import Any

import pytest

from veo_archiver.errors import InvalidPayload
from veo_archiver.event import Verification
from veo_archiver.providers import evolink, kie, useapi
from veo_archiver.providers.shape import (
    Code,
    Field,
    Flag,
    Int,
    Items,
    JsonObject,
    Obj,
    OptInt,
    OptObj,
    OptStr,
    Scalar,
    Shape,
    Str,
    Strings,
    TaskId,
    TextOr,
    Url,
    Urls,
)

URL = "https://cdn.example.com/v/a.mp4"


class Leaf(Shape):
    name = OptStr("name")
    count = OptInt("count")


class Body(Shape):
    code = Int("code")
    state = Str("state")
    task_id = TaskId("taskId")
    leaf = Obj(Leaf, "leaf")
    maybe = OptObj(Leaf, "maybe")
    items = Items(Leaf, "items")
    urls = Urls("urls")
    url = Url("url")
    flag = Flag("flag")
    number = Scalar("number", "a string or a number")
    error_code = Code("errorCode", "a string")
    ids = Strings("ids")
    result = JsonObject(Leaf, "result")
    error = TextOr(Leaf, "error", "a string or an object")


def read(field: str, body: dict[str, Any], path: str = "") -> Any:
    return getattr(Body(body, path), field)


def test_fields_read_typed_values() -> None:
    body = {
        "code": "200",
        "state": "done",
        "taskId": "t-1",
        "leaf": {"name": "x", "count": " 3 "},
        "items": [{"name": "a"}, {}],
        "urls": f'["{URL}"]',
        "url": URL,
        "flag": True,
        "number": "2025-01-01 00:00:00",
        "errorCode": 501,
        "ids": ["m1"],
        "result": '{"name": "r"}',
        "error": "boom",
    }
    shape = Body(body)
    assert (shape.code, shape.state, shape.task_id) == (200, "done", "t-1")
    assert (shape.leaf.name, shape.leaf.count) == ("x", 3)
    assert shape.maybe.raw == {} and shape.maybe.name is None  # an absent object reads as an empty one
    assert [item.name for item in shape.items] == ["a", None]
    assert (shape.urls, shape.url, shape.flag, shape.number) == ([URL], [URL], True, "2025-01-01 00:00:00")
    assert (shape.error_code, shape.ids, shape.result.name, shape.error) == ("501", ["m1"], "r", "boom")
    assert shape.__dict__["code"] == 200  # kept on the instance after the first read


def test_absent_and_null_read_alike() -> None:
    for body in ({}, dict.fromkeys(("urls", "url", "flag", "number", "errorCode", "ids", "result", "error"))):
        shape = Body(body)
        assert (shape.urls, shape.url, shape.flag, shape.number) == ([], [], None, None)
        assert (shape.error_code, shape.ids, shape.result.raw, shape.error) == (None, None, {}, None)
        assert shape.items == []


@pytest.mark.parametrize(
    ("field", "body", "message"),
    [
        ("code", {}, "data.code: required integer is missing"),
        ("code", {"code": True}, "data.code: expected an integer, got bool"),
        ("code", {"code": "1e2"}, "data.code: expected an integer, got str"),
        ("state", {}, "data.state: required string is missing"),
        ("state", {"state": 1}, "data.state: expected a string, got int"),
        ("state", {"state": "  "}, "data.state: must not be empty"),
        ("task_id", {}, "data.taskId: required task id is missing"),
        ("task_id", {"taskId": ""}, "data.taskId: expected a non-empty string"),
        ("leaf", {}, "data.leaf: required object is missing"),
        ("leaf", {"leaf": []}, "data.leaf: expected an object, got list"),
        ("maybe", {"maybe": "x"}, "data.maybe: expected an object, got str"),
        ("items", {"items": {}}, "data.items: expected a list, got dict"),
        ("items", {"items": [{}, 3]}, "data.items[1]: expected an object, got int"),
        ("urls", {"urls": 5}, "data.urls: expected a list of URLs or a string, got int"),
        ("url", {"url": 5}, "data.url: not an http(s) URL: '5'"),
        ("flag", {"flag": 1}, "data.flag: expected a boolean, got int"),
        ("number", {"number": 1.5}, "data.number: expected a string or a number, got float"),
        ("error_code", {"errorCode": False}, "data.errorCode: expected a string, got bool"),
        ("ids", {"ids": ["a", 1]}, "data.ids: expected a list of strings"),
        ("result", {"result": 3}, "data.result: expected a JSON string, got int"),
        ("result", {"result": "{"}, "data.result: not valid JSON: '{'"),
        ("result", {"result": "[]"}, "data.result: expected a JSON object, got list"),
        ("error", {"error": 3}, "data.error: expected a string or an object, got int"),
    ],
)
def test_each_field_names_its_path(field: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        read(field, body, "data")
    assert str(caught.value) == message


def test_nested_paths() -> None:
    body = {"leaf": {"count": []}, "items": [{}, {"name": 7}]}
    with pytest.raises(InvalidPayload, match=r"^leaf\.count: expected an integer, got list$"):
        _ = Body(body).leaf.count
    with pytest.raises(InvalidPayload, match=r"^items\[1\]\.name: expected a string, got int$"):
        _ = Body(body).items[1].name


def test_a_field_never_read_is_never_checked() -> None:
    shape = Body({"code": 200, "urls": 5})
    assert shape.code == 200  # urls is wrong, but nothing asked for it


# -- several faults in one body: the first the parser reads is reported ---------------------------------


def test_kie_status_names_the_foreign_task_before_a_malformed_response() -> None:
    body = {"code": 200, "msg": "success", "data": {"taskId": "other", "response": [], "successFlag": "x"}}
    with pytest.raises(InvalidPayload, match=r"^data\.taskId: the answer is for task 'other'"):
        kie.parse_status(body, "mine")


def test_kie_status_checks_both_url_lists_whatever_the_status() -> None:
    data = {"taskId": "t", "successFlag": 0, "response": {"resultUrls": [URL]}, "resultUrls": 5}
    with pytest.raises(InvalidPayload, match=r"^data\.resultUrls"):
        kie.parse_status({"code": 200, "msg": "success", "data": data}, "t")


def test_kie_callback_of_a_failed_task_ignores_its_result_urls() -> None:
    body = {"code": 501, "msg": "failed", "data": {"taskId": "t", "info": {"resultUrls": 5}}}
    event = kie.parse(body, verification=Verification.TOKEN)
    assert (event.failure_code, event.result_urls) == ("501", ())


def test_evolink_error_code_is_checked_before_its_message() -> None:
    body = {"id": "t", "status": "failed", "error": {"code": [], "message": 3}}
    with pytest.raises(InvalidPayload, match=r"^error\.code: expected a string, got list$"):
        evolink.parse(body, verification=Verification.TOKEN)


def test_useapi_media_is_checked_before_the_request_echo() -> None:
    body = {
        "jobid": "j1",
        "status": "completed",
        "request": {"model": 5},
        "response": {"media": [{"videoUrl": "ftp://x"}]},
    }
    with pytest.raises(InvalidPayload, match=r"^response\.media\[0\]\.videoUrl"):
        useapi.parse(body, verification=Verification.TOKEN)


def test_fields_that_skip_read_when_absent_would_have_read_none() -> None:
    fields = [value for shape in (Body, Leaf) for value in vars(shape).values() if isinstance(value, Field)]
    shortcut = [field for field in fields if field.none_when_absent]
    assert len(shortcut) == 7
    for field in shortcut:
        assert field.read(None, Body({})) is None, field.key
