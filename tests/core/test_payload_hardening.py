"""Hostile bodies and ids: ``veo_archiver.payload`` refuses bodies that are not UTF-8 JSON (``not_utf8``),
over HTTP too; ``veo_archiver.archive_keys.task_segment`` keeps every archive path segment short enough
for a filesystem without changing the keys of ids that already fit."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.headers import RequestHeaders
from tests.stacks import stored_keys
from veo_archiver.archive_keys import (
    MAX_SEGMENT_BYTES,
    encode_task_id,
    manifest_key,
    task_prefix,
    task_segment,
    video_key,
)
from veo_archiver.errors import InvalidPayload
from veo_archiver.payload import MAX_DEPTH, decode_json_object, header_value, hmac_sha256, loads_json
from veo_archiver.settings import Settings

DOC = {"code": 200, "msg": "vidéo 🎬", "data": {"taskId": "t1"}}
TEXT = json.dumps(DOC, ensure_ascii=False)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_bodies_refused(encoding: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        decode_json_object(TEXT.encode(encoding))
    assert info.value.reason == "not_utf8"


@pytest.mark.parametrize(
    "body",
    [
        b'{"msg": "caf\xe9"}',  # latin-1
        b'{"msg": "\xed\xa0\x80"}',  # an encoded lone surrogate
        b'{"msg": "\xc0\xaf"}',  # overlong
        b'{"msg": "\xf4\x90\x80\x80"}',  # past U+10FFFF
    ],
)
def test_invalid_utf8_refused(body: bytes) -> None:
    with pytest.raises(InvalidPayload) as info:
        decode_json_object(body)
    assert info.value.reason == "not_utf8"


@pytest.mark.parametrize("body", [b'{"msg": "a\x00b"}', b"\xfe\xff\x00{", b"\xff\xfe\x00garbage", b"\x00\x00\x00{"])
def test_garbage_with_a_foreign_mark_or_nul_is_an_invalid_payload(body: bytes) -> None:
    with pytest.raises(InvalidPayload) as info:
        decode_json_object(body)
    assert info.value.reason == "invalid_payload"


def test_utf8_accepted_and_utf8_bom_tolerated() -> None:
    assert decode_json_object(TEXT.encode()) == DOC
    assert decode_json_object(b"\xef\xbb\xbf" + TEXT.encode()) == DOC


def test_not_utf8_over_http(redis_server) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_server.url, kie_allow_unsigned=True)
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/callbacks/kie", content=TEXT.encode("utf-16"), headers={"content-type": "application/json"}
        )
    assert (answer.status_code, answer.json()["reason"]) == (400, "not_utf8")
    with redis_server.client() as rds:
        assert not stored_keys(rds)


# --------------------------------------------------------------------------------------------- task segments


@pytest.mark.parametrize(
    "task_id",
    ["veo_task_1", "j1731859234567v-u12345-email:jo***@gmail.com-bot:google-flow", "a~b", "x" * MAX_SEGMENT_BYTES],
)
def test_ids_that_fit_keep_their_segment(task_id: str) -> None:
    assert task_segment(task_id) == encode_task_id(task_id)
    assert task_prefix("kie", task_id) == f"kie/{encode_task_id(task_id)}"


@pytest.mark.parametrize("task_id", ["x" * (MAX_SEGMENT_BYTES + 1), "é" * 1024, "🎬" * 300, "a%" * 500])
def test_long_ids_are_shortened(task_id: str) -> None:
    segment = task_segment(task_id)
    assert len(segment.encode()) <= MAX_SEGMENT_BYTES
    prefix, tilde, digest = segment.rpartition("~")
    assert tilde and len(digest) == 64 and encode_task_id(task_id).startswith(prefix)
    assert "%" not in prefix[-2:]  # never cut inside a %XX escape
    assert "/" not in segment and segment not in (".", "..")
    assert video_key("kie", task_id, 0) == f"kie/{segment}/0.mp4"
    assert manifest_key("kie", task_id) == f"kie/{segment}/manifest.json"


def test_ids_sharing_a_long_prefix_get_distinct_segments() -> None:
    base = "p" * 400
    assert task_segment(base + "a") != task_segment(base + "b")


@hsettings(deadline=None)
@given(st.text(min_size=1, max_size=1500), st.text(min_size=1, max_size=1500))
def test_segments_are_short_and_distinct(a: str, b: str) -> None:
    sa, sb = task_segment(a), task_segment(b)
    assert len(sa.encode()) <= MAX_SEGMENT_BYTES and len(sb.encode()) <= MAX_SEGMENT_BYTES
    if a != b:
        assert sa != sb


# --------------------------------------------------------------------------------------------- fast paths
# decode_json_object, loads_json, header_value and hmac_sha256 take shortcuts on the receiver's hot path;
# these pin that the shortcuts answer exactly what the plain stdlib computation answers.


def nested(depth: int) -> str:
    return '{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_nesting_limit_is_exact() -> None:
    assert decode_json_object(nested(MAX_DEPTH).encode())
    with pytest.raises(InvalidPayload, match=f"nested deeper than {MAX_DEPTH}"):
        decode_json_object(nested(MAX_DEPTH + 1).encode())


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    body = json.dumps({"s": "[{" * 500, "urls": [["x"]]}).encode()
    assert decode_json_object(body)["s"] == "[{" * 500


@hsettings(deadline=None)
@given(
    st.one_of(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
            ),
            max_leaves=10,
        ).map(json.dumps),
        st.text(alphabet=' \t\n\ufeff{}[]",:0-1ae.', max_size=12),
    ),
    st.sampled_from(["", " ", "\n", "\ufeff", "x", "}", " 1"]),
    st.sampled_from(["", " ", "\ufeff"]),
)
def test_loads_json_answers_as_json_loads(text: str, suffix: str, prefix: str) -> None:
    candidate = prefix + text + suffix
    try:
        expected: object = ("value", json.loads(candidate))
    except ValueError as exc:
        expected = (type(exc), str(exc))
    try:
        got: object = ("value", loads_json(candidate))
    except ValueError as exc:
        got = (type(exc), str(exc))
    assert got == expected


def test_header_value_reads_any_case_from_any_mapping() -> None:
    raw = [(b"x-webhook-signature", b"sig"), (b"content-type", b"application/json")]
    for headers in (
        Headers(raw=raw),
        RequestHeaders(raw),
        {"X-Webhook-Signature": "sig"},
        {"x-webhook-signature": "sig"},
    ):
        assert header_value(headers, "x-webhook-signature") == "sig"
        assert header_value(headers, "x-webhook-timestamp") is None
    assert header_value({"X-A": "1", "x-a": "2"}, "x-a") == "2"  # the lower-case key answers directly
    assert header_value({"X-A": "1", "X-a": "2"}, "x-a") == "2"  # else the last one, as lower_headers gives


@pytest.mark.parametrize("key_size", [0, 1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("message", [b"", b"task.1750000000", bytes(range(256)) * 4])
def test_hmac_sha256_is_hmac(key_size: int, message: bytes) -> None:
    key = bytes((7 * i + key_size) % 256 for i in range(key_size))
    assert hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()
    assert hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()  # from the cached state
