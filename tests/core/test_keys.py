"""``veo_archiver.archive_keys`` and ``veo_archiver.redis_keys``: reversible, safe archive path segments; RQ job ids."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from veo_archiver import redis_keys
from veo_archiver.archive_keys import decode_task_id, encode_task_id, task_prefix, video_key
from veo_archiver.redis_keys import job_id

SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._%-]+")
JOB_ID_CHARS = re.compile(r"[A-Za-z0-9_-]+")
USEAPI_ID = "j1731859234567v-u12345-email:jo***@gmail.com-bot:google-flow"


@pytest.mark.parametrize(
    "task_id",
    [
        "veo_task_abc",
        "veo_extend_task_xyz789",
        "ee603959-debb-48d1-98c4-a6d1c717eba6",
        "a.b.c",
        "A-Z_0.9",
        "x",
        "...",
        "a..b",
        ".hidden",
        "0",
    ],
)
def test_safe_ids_unchanged(task_id: str) -> None:
    assert encode_task_id(task_id) == task_id
    assert decode_task_id(task_id) == task_id


@pytest.mark.parametrize(
    "task_id",
    [
        USEAPI_ID,
        "j1731859234567v-u12345-email:someone+tag@example.co.uk-bot:google-flow",
        "user:pass@host",
        "***",
    ],
)
def test_useapi_style_ids(task_id: str) -> None:
    encoded = encode_task_id(task_id)
    for ch in "/:@*+":
        assert ch not in encoded
    assert SEGMENT_CHARS.fullmatch(encoded)
    assert decode_task_id(encoded) == task_id


def test_useapi_id_encoding_is_stable() -> None:
    # Archive keys are persistent: the encoding of a given id must never change.
    assert encode_task_id(USEAPI_ID) == "j1731859234567v-u12345-email%3Ajo%2A%2A%2A%40gmail.com-bot%3Agoogle-flow"


@pytest.mark.parametrize("task_id", [".", ".."])
def test_dot_segments_encoded(task_id: str) -> None:
    encoded = encode_task_id(task_id)
    assert encoded not in (".", "..")
    assert "/" not in encoded
    assert SEGMENT_CHARS.fullmatch(encoded)
    assert decode_task_id(encoded) == task_id


@pytest.mark.parametrize("task_id", ["a/../b", "../etc/passwd", "/abs", "a/b", "..\\..\\x", "a\\b", "%2e%2e", "%"])
def test_path_like_ids_have_no_separator(task_id: str) -> None:
    encoded = encode_task_id(task_id)
    assert "/" not in encoded
    assert "\\" not in encoded
    assert SEGMENT_CHARS.fullmatch(encoded)
    assert decode_task_id(encoded) == task_id


def test_percent_itself_is_encoded() -> None:
    # otherwise "a%2Fb" and "a/b" would collide
    assert encode_task_id("a%2Fb") != encode_task_id("a/b")
    assert decode_task_id(encode_task_id("a%2Fb")) == "a%2Fb"


def test_tilde_encoded() -> None:
    assert encode_task_id("a~b") == "a%7Eb"
    assert decode_task_id("a%7Eb") == "a~b"


@pytest.mark.parametrize(
    "task_id", ["видео_задача", "任务-123", "tâche:é", "emoji-🎬-id", "a\u00a0b", "a b\tc\n", "\x00"]
)
def test_unicode_and_control_ids_round_trip(task_id: str) -> None:
    encoded = encode_task_id(task_id)
    assert SEGMENT_CHARS.fullmatch(encoded)
    assert encoded.isascii()
    assert decode_task_id(encoded) == task_id


def test_empty_id_refused() -> None:
    with pytest.raises(ValueError):
        encode_task_id("")


def test_keys_use_one_segment_per_task() -> None:
    assert task_prefix("useapi", "a/../b").count("/") == 1
    assert video_key("useapi", USEAPI_ID, 0) == f"useapi/{encode_task_id(USEAPI_ID)}/0.mp4"


@hsettings(deadline=None)
@given(st.text(min_size=1))
def test_round_trip_property(task_id: str) -> None:
    encoded = encode_task_id(task_id)
    assert decode_task_id(encoded) == task_id
    assert SEGMENT_CHARS.fullmatch(encoded)
    assert encoded not in (".", "..")


@hsettings(deadline=None)
@given(st.text(min_size=1), st.text(min_size=1))
def test_encoding_is_injective(a: str, b: str) -> None:
    if a != b:
        assert encode_task_id(a) != encode_task_id(b)


# --------------------------------------------------------------------------------------------------------
# job ids

PROVIDERS = ["kie", "apixo", "useapi", "evolink"]
STATUSES = ["succeeded", "failed"]


@pytest.mark.parametrize("task_id", ["veo_task_abc", USEAPI_ID, "a/../b", "видео", "x" * 1000, "a b\nc"])
def test_job_id_charset(task_id: str) -> None:
    for provider in PROVIDERS:
        for status in STATUSES:
            assert JOB_ID_CHARS.fullmatch(job_id(provider, task_id, status))


def test_job_id_deterministic() -> None:
    assert job_id("kie", "veo_task_abc", "succeeded") == job_id("kie", "veo_task_abc", "succeeded")


def test_job_id_differs_per_status() -> None:
    assert job_id("kie", "veo_task_abc", "succeeded") != job_id("kie", "veo_task_abc", "failed")


def test_job_id_differs_per_provider() -> None:
    ids = {job_id(p, "veo_task_abc", "succeeded") for p in PROVIDERS}
    assert len(ids) == len(PROVIDERS)


def test_job_id_differs_per_task() -> None:
    assert job_id("kie", "veo_task_abc", "succeeded") != job_id("kie", "veo_task_abd", "succeeded")


@hsettings(deadline=None)
@given(st.text(min_size=1))
def test_job_id_charset_property(task_id: str) -> None:
    for provider in PROVIDERS:
        assert JOB_ID_CHARS.fullmatch(job_id(provider, task_id, "succeeded"))


@pytest.mark.parametrize(
    ("provider", "task_id", "status"),
    [("kie", "abc", "succeeded"), ("useapi", "a:b|c d", "failed"), ("standard-x", "é" * 300, "succeeded")],
)
def test_task_keys_are_the_single_key_builders(provider: str, task_id: str, status: str) -> None:
    assert redis_keys.task_keys(provider, task_id, status) == (
        redis_keys.job_id(provider, task_id, status),
        redis_keys.dedupe_key(provider, task_id, status),
        redis_keys.deliveries_key(provider, task_id),
        redis_keys.delivery_bytes_key(provider, task_id),
    )
