"""kie.ai webhook signatures through ``receiver.verify.verify_kie``: pure, clock injected.

Expected signatures are computed here from the documented rule
(https://docs.kie.ai/common-api/webhook-verification), independently of ``kie.sign``:
``base64(HMAC-SHA256(webhookHmacKey, taskId + "." + X-Webhook-Timestamp))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from receiver.verify import verify_kie
from veo_archiver.errors import InvalidPayload, Rejected, RequestError
from veo_archiver.event import TaskStatus, Verification
from veo_archiver.providers import kie
from veo_archiver.settings import Settings

NOW = 1_750_000_000
KEY = "whk_live_0123456789abcdef"
OTHER_KEY = "whk_live_fedcba9876543210"
TASK = "veo_task_abc"


def expected_signature(key: str, task_id: str, ts: int | str) -> str:
    mac = hmac.new(key.encode("utf-8"), f"{task_id}.{ts}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def signed_headers(key: str = KEY, task_id: str = TASK, ts: int | str = NOW) -> dict[str, str]:
    return {"X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": expected_signature(key, task_id, ts)}


def success_body(**data_overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "taskId": TASK,
        "promptJson": '{"aspectRatio":"16:9","model":"veo3_fast","prompt":"cat"}',
        "info": {"resultUrls": ["https://tempfile.aiquickdraw.com/v/video1.mp4"], "resolution": "1080p"},
        "fallbackFlag": False,
    }
    data.update(data_overrides)
    return {"code": 200, "msg": "Veo3.1 video generated successfully.", "data": data}


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def signed_settings(*keys: str, **kw: Any) -> Settings:
    return Settings(kie_hmac_keys=keys or (KEY,), **kw)


def reject_reason(settings: Settings, headers: dict[str, str], body: bytes, now: float = NOW) -> str:
    with pytest.raises(Rejected) as info:
        verify_kie(settings, headers, body, now=now)
    assert info.value.status_code == 401
    return info.value.reason


# --------------------------------------------------------------------------------------------------------
# the vector itself


def test_known_vector_is_the_documented_formula() -> None:
    # A fixed vector, computed once by hand from the formula above, so a change to both sides is caught.
    mac = hmac.new(b"secret", b"veo_task_abc.1750000000", hashlib.sha256).digest()
    assert expected_signature("secret", "veo_task_abc", 1750000000) == base64.b64encode(mac).decode()
    assert len(base64.b64decode(expected_signature("secret", "veo_task_abc", 1750000000))) == 32


@pytest.mark.parametrize(("key", "task_id", "ts"), [(KEY, TASK, NOW), ("k", "t", 0), ("ключ", "veo_task_é", "17")])
def test_kie_sign_matches_independent_computation(key: str, task_id: str, ts: int | str) -> None:
    assert kie.sign(key, task_id, ts) == expected_signature(key, task_id, ts)


# --------------------------------------------------------------------------------------------------------
# accepted


def test_valid_signature_accepted() -> None:
    event = verify_kie(signed_settings(), signed_headers(), encode(success_body()), now=NOW)
    assert event.task_id == TASK
    assert event.provider == "kie"
    assert event.verification is Verification.SIGNATURE
    assert event.status is TaskStatus.SUCCEEDED
    assert event.result_urls == ("https://tempfile.aiquickdraw.com/v/video1.mp4",)


def _body_with_task_id_at(place: str, task_id: str = TASK) -> dict[str, Any]:
    body = success_body()
    del body["data"]["taskId"]
    if place == "data.taskId":
        body["data"]["taskId"] = task_id
    elif place == "data.task_id":
        body["data"]["task_id"] = task_id
    else:
        body["taskId"] = task_id
        body["data"]["callbackType"] = "task_completed"
    return body


@pytest.mark.parametrize("place", ["data.taskId", "data.task_id", "taskId"])
def test_task_id_accepted_in_each_documented_place(place: str) -> None:
    body = _body_with_task_id_at(place, "veo_task_place_1")
    event = verify_kie(signed_settings(), signed_headers(task_id="veo_task_place_1"), encode(body), now=NOW)
    assert event.task_id == "veo_task_place_1"
    assert event.verification is Verification.SIGNATURE


@pytest.mark.parametrize(
    "places",
    [
        ("taskId", "data.taskId"),
        ("taskId", "data.task_id"),
        ("data.taskId", "data.task_id"),
        ("taskId", "data.taskId", "data.task_id"),
    ],
)
def test_several_task_id_places_present_and_equal_accepted(places: tuple[str, ...]) -> None:
    body = success_body()
    del body["data"]["taskId"]
    for place in places:
        if place == "taskId":
            body["taskId"] = TASK
        elif place == "data.taskId":
            body["data"]["taskId"] = TASK
        else:
            body["data"]["task_id"] = TASK
    event = verify_kie(signed_settings(), signed_headers(), encode(body), now=NOW)
    assert event.task_id == TASK


@pytest.mark.parametrize(
    ("top", "camel", "snake"),
    [
        ("veo_task_abc", "veo_task_other", None),
        ("veo_task_abc", None, "veo_task_other"),
        (None, "veo_task_abc", "veo_task_other"),
        ("veo_task_abc", "veo_task_abc", "veo_task_other"),
    ],
)
def test_task_id_places_disagreeing_is_invalid(top: str | None, camel: str | None, snake: str | None) -> None:
    body = success_body()
    del body["data"]["taskId"]
    if top is not None:
        body["taskId"] = top
    if camel is not None:
        body["data"]["taskId"] = camel
    if snake is not None:
        body["data"]["task_id"] = snake
    # Signed for the first id: disagreement must be refused whichever one the signature covers.
    for signed_for in ("veo_task_abc", "veo_task_other"):
        with pytest.raises(InvalidPayload, match="disagree"):
            verify_kie(signed_settings(), signed_headers(task_id=signed_for), encode(body), now=NOW)


def test_rotation_second_of_two_keys_accepted() -> None:
    settings = signed_settings(OTHER_KEY, KEY)
    event = verify_kie(settings, signed_headers(key=KEY), encode(success_body()), now=NOW)
    assert event.verification is Verification.SIGNATURE
    event = verify_kie(settings, signed_headers(key=OTHER_KEY), encode(success_body()), now=NOW)
    assert event.task_id == TASK


def test_rotation_removed_key_rejected() -> None:
    settings = signed_settings(OTHER_KEY)  # KEY was rotated out
    assert reject_reason(settings, signed_headers(key=KEY), encode(success_body())) == "signature_mismatch"


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_timestamp_within_tolerance_accepted(offset: int) -> None:
    ts = NOW + offset
    event = verify_kie(signed_settings(), signed_headers(ts=ts), encode(success_body()), now=NOW)
    assert event.task_id == TASK


def test_fractional_now_at_exact_tolerance() -> None:
    # now is a float in production (time.time()): the window is inclusive on both sides.
    assert verify_kie(signed_settings(), signed_headers(ts=NOW - 300), encode(success_body()), now=NOW + 0.0).task_id
    assert reject_reason(signed_settings(), signed_headers(ts=NOW - 300), encode(success_body()), now=NOW + 0.5) == (
        "timestamp_stale"
    )


# --------------------------------------------------------------------------------------------------------
# rejected, each with its own reason


def test_missing_timestamp_header_rejected() -> None:
    headers = signed_headers()
    del headers["X-Webhook-Timestamp"]
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_missing"


def test_missing_signature_header_rejected() -> None:
    headers = signed_headers()
    del headers["X-Webhook-Signature"]
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_missing"


def test_both_headers_missing_rejected() -> None:
    assert reject_reason(signed_settings(), {}, encode(success_body())) == "signature_missing"
    assert reject_reason(signed_settings(), {"Content-Type": "application/json"}, encode(success_body())) == (
        "signature_missing"
    )


@pytest.mark.parametrize(
    "ts",
    [
        "",
        "  ",
        "abc",
        "1750000000.5",
        "-1750000000",
        "+1750000000",
        "0x683E8F80",
        "1e9",
        "1_750_000_000",
        "١٧٥٠٠٠٠٠٠٠",
        "1750000000²",
        "²",
        "9999999999999999999999999",
    ],
)
def test_non_numeric_timestamp_rejected(ts: str) -> None:
    headers = {"X-Webhook-Timestamp": ts, "X-Webhook-Signature": expected_signature(KEY, TASK, ts)}
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "timestamp_malformed"


@pytest.mark.parametrize("sig", ["", "not base64!", "@@@@", "abc", "ab=c", "é" * 44, "YWJj\x00"])
def test_bad_base64_signature_rejected(sig: str) -> None:
    headers = {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": sig}
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_malformed"


def test_urlsafe_base64_signature_rejected() -> None:
    # Find a timestamp whose signature contains '+' or '/', then send it in the URL-safe alphabet.
    for ts in range(NOW, NOW + 200):
        sig = expected_signature(KEY, TASK, ts)
        if "+" in sig or "/" in sig:
            break
    urlsafe = sig.replace("+", "-").replace("/", "_")
    headers = {"X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": urlsafe}
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_malformed"


@pytest.mark.parametrize("raw", [b"", b"x" * 31, b"x" * 33, b"x" * 20, b"x" * 64])
def test_base64_of_wrong_length_rejected(raw: bytes) -> None:
    headers = {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": base64.b64encode(raw).decode()}
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_malformed"


def test_hex_digest_instead_of_base64_rejected() -> None:
    hexsig = hmac.new(KEY.encode(), f"{TASK}.{NOW}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": hexsig}
    assert reject_reason(signed_settings(), headers, encode(success_body())) in (
        "signature_malformed",
        "signature_mismatch",
    )


def test_wrong_key_rejected() -> None:
    assert reject_reason(signed_settings(), signed_headers(key="not-the-key"), encode(success_body())) == (
        "signature_mismatch"
    )


def test_stale_timestamp_rejected() -> None:
    assert reject_reason(signed_settings(), signed_headers(ts=NOW - 301), encode(success_body())) == "timestamp_stale"


def test_future_timestamp_rejected() -> None:
    assert reject_reason(signed_settings(), signed_headers(ts=NOW + 301), encode(success_body())) == (
        "timestamp_future"
    )


def test_tampered_task_id_rejected() -> None:
    # Signature genuinely made by kie.ai, but for another task: body says veo_task_abc.
    headers = signed_headers(task_id="veo_task_someone_else")
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_mismatch"


def test_signature_for_other_timestamp_rejected() -> None:
    headers = {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": expected_signature(KEY, TASK, NOW - 5)}
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_mismatch"


def test_signature_with_padded_timestamp_is_over_the_header_text() -> None:
    # The signed message uses the timestamp exactly as sent; a leading zero changes it.
    headers = {
        "X-Webhook-Timestamp": "0" + str(NOW),
        "X-Webhook-Signature": expected_signature(KEY, TASK, NOW),
    }
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_mismatch"


def test_signature_over_wrong_separator_rejected() -> None:
    mac = hmac.new(KEY.encode(), f"{TASK}{NOW}".encode(), hashlib.sha256).digest()
    headers = {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": base64.b64encode(mac).decode()}
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "signature_mismatch"


# --------------------------------------------------------------------------------------------------------
# header names are case-insensitive


@pytest.mark.parametrize(
    ("ts_name", "sig_name"),
    [
        ("x-webhook-timestamp", "x-webhook-signature"),
        ("X-WEBHOOK-TIMESTAMP", "X-WEBHOOK-SIGNATURE"),
        ("X-Webhook-Timestamp", "X-Webhook-Signature"),
        ("x-WebHook-TimeStamp", "X-wEBHOOK-sIGNATURE"),
    ],
)
def test_header_names_case_insensitive(ts_name: str, sig_name: str) -> None:
    headers = {ts_name: str(NOW), sig_name: expected_signature(KEY, TASK, NOW)}
    event = verify_kie(signed_settings(), headers, encode(success_body()), now=NOW)
    assert event.task_id == TASK


def test_header_names_case_insensitive_for_rejection_too() -> None:
    headers = {
        "X-WEBHOOK-TIMESTAMP": str(NOW - 301),
        "x-webhook-signature": expected_signature(KEY, TASK, NOW - 301),
    }
    assert reject_reason(signed_settings(), headers, encode(success_body())) == "timestamp_stale"


# --------------------------------------------------------------------------------------------------------
# custom tolerance


def test_custom_tolerance() -> None:
    settings = signed_settings(timestamp_tolerance_s=10)
    body = encode(success_body())
    for offset in (-10, 0, 10):
        assert verify_kie(settings, signed_headers(ts=NOW + offset), body, now=NOW).task_id == TASK
    assert reject_reason(settings, signed_headers(ts=NOW - 11), body) == "timestamp_stale"
    assert reject_reason(settings, signed_headers(ts=NOW + 11), body) == "timestamp_future"
    # with the default tolerance these would have been fine
    assert verify_kie(signed_settings(), signed_headers(ts=NOW - 11), body, now=NOW).task_id == TASK


# --------------------------------------------------------------------------------------------------------
# no keys configured


def test_no_keys_refuses_unsigned() -> None:
    assert reject_reason(Settings(), {}, encode(success_body())) == "unsigned_refused"


def test_no_keys_refuses_even_with_signature_headers() -> None:
    # We cannot check a signature without a key: refusing is the only safe answer.
    assert reject_reason(Settings(), signed_headers(), encode(success_body())) == "unsigned_refused"


def test_no_keys_refuses_before_looking_at_body() -> None:
    assert reject_reason(Settings(), {}, b"\xff\xfe not json") == "unsigned_refused"


def test_no_keys_unsigned_allowed() -> None:
    event = verify_kie(Settings(kie_allow_unsigned=True), {}, encode(success_body()), now=NOW)
    assert event.task_id == TASK
    assert event.verification is Verification.UNSIGNED
    assert event.status is TaskStatus.SUCCEEDED


def test_unsigned_allowed_still_validates_body() -> None:
    with pytest.raises(InvalidPayload):
        verify_kie(Settings(kie_allow_unsigned=True), {}, b"not json", now=NOW)


def test_keys_configured_ignores_allow_unsigned() -> None:
    # Once a key is configured, kie_allow_unsigned must not open a way around the signature.
    settings = Settings(kie_hmac_keys=(KEY,), kie_allow_unsigned=True)
    assert reject_reason(settings, {}, encode(success_body())) == "signature_missing"
    assert reject_reason(settings, signed_headers(key="wrong"), encode(success_body())) == "signature_mismatch"


# --------------------------------------------------------------------------------------------------------
# body checks and their order


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"veo_task_abc"',
        b"null",
        b"{",
        b"{}",
        b'{"data": {}}',
        b'{"taskId": 5}',
        b'{"taskId": ""}',
        b'{"data": {"taskId": ["x"]}}',
    ],
)
def test_keys_configured_headers_present_body_invalid(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        verify_kie(signed_settings(), signed_headers(), body, now=NOW)


@pytest.mark.parametrize("body", [b"", b"\xff\xfe\x00garbage", b"not json at all", b"{"])
def test_headers_missing_rejected_before_body_is_looked_at(body: bytes) -> None:
    assert reject_reason(signed_settings(), {}, body) == "signature_missing"


@pytest.mark.parametrize("present", ["X-Webhook-Timestamp", "X-Webhook-Signature"])
def test_one_header_missing_rejected_before_body_is_looked_at(present: str) -> None:
    headers = {present: signed_headers()[present]}
    assert reject_reason(signed_settings(), headers, b"\xff garbage") == "signature_missing"


def test_valid_signature_but_unparseable_payload_is_invalid() -> None:
    body = success_body()
    body["code"] = [200]
    with pytest.raises(InvalidPayload, match="code"):
        verify_kie(signed_settings(), signed_headers(), encode(body), now=NOW)


def test_signature_checked_before_payload_fields() -> None:
    # A bad signature on a body with a broken (unsigned) field is a 401, not a 400.
    body = success_body()
    body["code"] = [200]
    assert reject_reason(signed_settings(), signed_headers(key="wrong"), encode(body)) == "signature_mismatch"


def test_deeply_nested_body_is_invalid_not_a_crash() -> None:
    body = b'{"taskId": "veo_task_abc", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(InvalidPayload):
        verify_kie(signed_settings(), signed_headers(), body, now=NOW)


def test_lone_surrogate_task_id_is_a_request_error() -> None:
    body = b'{"code": 200, "msg": "ok", "data": {"taskId": "veo_\\ud800"}}'
    with pytest.raises(RequestError):
        verify_kie(signed_settings(), signed_headers(), body, now=NOW)


# --------------------------------------------------------------------------------------------------------
# property: nothing but RequestError ever escapes

header_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FFF), max_size=20),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.sampled_from(["", " ", str(NOW), str(NOW - 301), "²", "١٢٣", "1" * 13, "0" * 12]),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
)
header_name = st.sampled_from(
    [
        "X-Webhook-Timestamp",
        "x-webhook-timestamp",
        "X-Webhook-Signature",
        "X-WEBHOOK-SIGNATURE",
        "Content-Type",
    ]
)
headers_strategy = st.dictionaries(st.one_of(header_name, st.text(max_size=10)), header_text, max_size=4)
body_strategy = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"{}", b"[]", b"null", b"1e999", b'{"taskId": "\\udc80"}', encode(success_body())]),
)
all_settings = st.sampled_from(
    [
        Settings(),
        Settings(kie_allow_unsigned=True),
        signed_settings(),
        signed_settings(OTHER_KEY, KEY, timestamp_tolerance_s=1),
    ]
)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            "200",
            "²",
            "-",
            "--5",
            "1" * 5000,
            "[",
            "[]",
            "[x]",
            "https://a.example/v.mp4",
            '["https://a.example/1.mp4"]',
            "{",
            '{"a": 1}',
            "javascript:alert(1)",
            "http://",
            "[,]",
        ]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10,
)
kie_like_body = st.fixed_dictionaries(
    {},
    optional={
        "code": json_value,
        "msg": json_value,
        "taskId": st.one_of(st.just(TASK), json_value),
        "data": st.one_of(
            json_value,
            st.fixed_dictionaries(
                {},
                optional={
                    "taskId": st.one_of(st.just(TASK), json_value),
                    "task_id": st.one_of(st.just(TASK), json_value),
                    "promptJson": json_value,
                    "fallbackFlag": json_value,
                    "creditsConsumed": json_value,
                    "info": st.one_of(
                        json_value,
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "resultUrls": json_value,
                                "originUrls": json_value,
                                "imageUrls": json_value,
                                "resolution": json_value,
                            },
                        ),
                    ),
                },
            ),
        ),
    },
)


def _only_request_errors(settings: Settings, headers: dict[str, str], body: bytes, now: float) -> None:
    try:
        verify_kie(settings, headers, body, now=now)
    except RequestError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        assert exc.status_code in (400, 401, 413, 415)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    settings=all_settings,
    headers=headers_strategy,
    body=body_strategy,
    now=st.one_of(st.just(float(NOW)), st.floats(min_value=0, max_value=4e9)),
)
def test_random_headers_and_bodies_raise_only_request_errors(
    settings: Settings, headers: dict[str, str], body: bytes, now: float
) -> None:
    _only_request_errors(settings, headers, body, now)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings=all_settings, headers=headers_strategy, body=kie_like_body)
def test_random_kie_like_bodies_raise_only_request_errors(
    settings: Settings, headers: dict[str, str], body: dict[str, Any]
) -> None:
    _only_request_errors(settings, headers, json.dumps(body).encode(), NOW)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=kie_like_body, ts=st.integers(min_value=NOW - 300, max_value=NOW + 300))
def test_validly_signed_random_bodies_raise_only_request_errors(body: dict[str, Any], ts: int) -> None:
    # The body is not covered by the signature: a replayed valid signature can carry any body.
    data = body.get("data")
    task_id = body.get("taskId") or (data.get("taskId") or data.get("task_id") if isinstance(data, dict) else None)
    headers = signed_headers(task_id=task_id if isinstance(task_id, str) else TASK, ts=ts)
    _only_request_errors(signed_settings(), headers, json.dumps(body).encode(), NOW)


# --------------------------------------------------------------------------------------------------------
# verify_kie reads the proof headers once and the task id once: the split functions answer as the whole ones


@pytest.mark.parametrize(
    "headers",
    [
        signed_headers(),
        {"x-webhook-timestamp": str(NOW), "x-webhook-signature": expected_signature(KEY, TASK, NOW)},
        {"X-Webhook-Timestamp": str(NOW - 400), "X-Webhook-Signature": expected_signature(KEY, TASK, NOW - 400)},
        {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": "not base64!"},
        {"X-Webhook-Timestamp": str(NOW)},
        {},
    ],
)
def test_check_signature_answers_as_verify_signature(headers: dict[str, str]) -> None:
    def outcome(check: Any) -> Any:
        try:
            check()
        except Rejected as exc:
            return exc.reason, str(exc)
        return "ok"

    ts, sig = kie.signature_headers(headers)
    assert kie.has_signature(headers) is (ts is not None and sig is not None)
    whole = outcome(lambda: kie.verify_signature(headers, TASK, [KEY], now=NOW, tolerance_s=300))
    split = outcome(lambda: kie.check_signature(ts, sig, TASK, [KEY], now=NOW, tolerance_s=300))
    assert whole == split


def test_event_from_is_parse() -> None:
    body = success_body()
    event = kie.event_from(body, kie.task_id_of(body), verification=Verification.SIGNATURE)
    assert event == kie.parse(body, verification=Verification.SIGNATURE)


# --------------------------------------------------------------------------------------------------------
# what a refusal names


@pytest.mark.parametrize(
    ("headers", "now", "reason"),
    [
        (signed_headers(key=OTHER_KEY), NOW, "signature_mismatch"),
        (signed_headers(), NOW + 3600, "timestamp_stale"),
        ({"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": "!!"}, NOW, "signature_malformed"),
    ],
)
def test_a_refused_signature_names_the_task_it_was_for(headers: dict[str, str], now: int, reason: str) -> None:
    """Unproven, for the operator's refusal record: a wrong key or a skewed clock refuses real tasks."""
    with pytest.raises(Rejected) as info:
        verify_kie(signed_settings(), headers, encode(success_body(taskId="veo_task_refused_7")), now=now)
    assert (info.value.reason, info.value.claimed_task_id) == (reason, "veo_task_refused_7")


def test_a_refusal_before_the_task_id_is_read_names_none() -> None:
    with pytest.raises(Rejected) as info:
        verify_kie(signed_settings(), {}, encode(success_body()), now=NOW)
    assert (info.value.reason, info.value.claimed_task_id) == ("signature_missing", None)
