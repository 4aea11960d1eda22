"""Standard Webhooks verification (``veo_archiver.standard_webhooks``): pure, clock injected.

The pinned vectors are the reference libraries' own (github.com/standard-webhooks/standard-webhooks):
``libraries/python/tests/test_webhooks.py::test_sign_function`` and ``libraries/go/webhook_symmetric_test.go``
for ``v1``; ``libraries/go/webhook_asymmetric_test.go::TestAsymmetricWebhookSign`` for ``v1a``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from veo_archiver import standard_webhooks as sw
from veo_archiver.errors import ConfigError, Rejected

# --- the reference vectors
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (published test vector)
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_V1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
#: the Go library's ed25519 seed (base64 of b"TESTSIGNINGKEYDONOTUSETHISFORANY") and its signature of the
#: same message
VECTOR_SEED = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
VECTOR_V1A = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="

NOW = 1_750_000_000
SECRET = "whsec_" + base64.b64encode(b"new-secret-for-tests-0123456789").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"old-secret-for-tests-9876543210").decode()
BODY = b'{"type":"video.completed","data":{"id":"task_1"}}'
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def public_key_of(seed_b64: str) -> str:
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))
    return "whpk_" + base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def expected_v1(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    """Computed from the spec, independently of ``sw.sign``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers_for(signature: str, *, msg_id: str = MSG_ID, ts: int | str = NOW) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def reason_of(
    headers: dict[str, str], body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), now: float = NOW
) -> str:
    with pytest.raises(Rejected) as info:
        sw.verify(headers, body, secrets, now=now)
    assert info.value.status_code == 401
    return info.value.reason


# --- published vectors


def test_published_v1_vector() -> None:
    assert sw.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_V1
    assert expected_v1(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_V1
    headers = headers_for(VECTOR_V1, msg_id=VECTOR_ID, ts=VECTOR_TS)
    assert sw.verify(headers, VECTOR_BODY, [VECTOR_SECRET], now=VECTOR_TS) == VECTOR_ID


def test_published_v1_vector_with_an_unprefixed_secret() -> None:
    # As in the reference libraries, an unprefixed secret is the base64 after whsec_, not raw text.
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert sw.sign(bare, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_V1
    headers = headers_for(VECTOR_V1, msg_id=VECTOR_ID, ts=VECTOR_TS)
    assert sw.verify(headers, VECTOR_BODY, [bare], now=VECTOR_TS) == VECTOR_ID


def test_reference_invalid_signature_is_a_mismatch() -> None:
    headers = headers_for("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=", msg_id=VECTOR_ID, ts=VECTOR_TS)
    assert reason_of(headers, VECTOR_BODY, (VECTOR_SECRET,), now=VECTOR_TS) == "signature_mismatch"


@pytest.mark.parametrize("seed", [VECTOR_SEED, "whsk_" + VECTOR_SEED])
def test_published_v1a_vector(seed: str) -> None:
    assert sw.sign_ed25519(seed, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_V1A
    headers = headers_for(VECTOR_V1A, msg_id=VECTOR_ID, ts=VECTOR_TS)
    assert sw.verify(headers, VECTOR_BODY, [public_key_of(VECTOR_SEED)], now=VECTOR_TS) == VECTOR_ID


def test_reference_multi_signature_header() -> None:
    signatures = [
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        VECTOR_V1,
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
    ]
    headers = headers_for(" ".join(signatures), msg_id=VECTOR_ID, ts=VECTOR_TS)
    assert sw.verify(headers, VECTOR_BODY, [VECTOR_SECRET], now=VECTOR_TS) == VECTOR_ID


# --- rotation, ed25519, mixed


def test_round_trip_and_binary_body() -> None:
    body = b"\xff\x00not utf-8\xfe"
    signature = sw.sign(SECRET, MSG_ID, NOW, body)
    assert signature == expected_v1(SECRET, MSG_ID, NOW, body)
    assert sw.verify(headers_for(signature), body, [SECRET], now=NOW) == MSG_ID


def test_rotated_secrets_either_side() -> None:
    old_signature = sw.sign(OLD_SECRET, MSG_ID, NOW, BODY)
    new_signature = sw.sign(SECRET, MSG_ID, NOW, BODY)
    # the receiver lists both while the sender still signs with the old one
    assert sw.verify(headers_for(old_signature), BODY, [SECRET, OLD_SECRET], now=NOW) == MSG_ID
    # the sender signs with both (spec: space-separated) while the receiver already has only the new one
    both = f"{old_signature} {new_signature}"
    assert sw.verify(headers_for(both), BODY, [SECRET], now=NOW) == MSG_ID
    assert reason_of(headers_for(old_signature), secrets=(SECRET,)) == "signature_mismatch"


def test_every_secret_and_entry_is_compared_without_early_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    header = f"{sw.sign(SECRET, MSG_ID, NOW, BODY)} {sw.sign(OLD_SECRET, MSG_ID, NOW, BODY)}"
    sw.verify(headers_for(header), BODY, [SECRET, OLD_SECRET], now=NOW)
    assert len(calls) == 4


def test_ed25519_round_trip_and_tampering() -> None:
    private, public = sw.generate_ed25519_keypair()
    assert private.startswith("whsk_") and public.startswith("whpk_")
    assert len(base64.b64decode(private[5:])) == 32 and len(base64.b64decode(public[5:])) == 32
    signature = sw.sign_ed25519(private, MSG_ID, NOW, BODY)
    assert signature.startswith("v1a,")
    assert sw.verify(headers_for(signature), BODY, [public], now=NOW) == MSG_ID
    assert reason_of(headers_for(signature), BODY + b" ", (public,)) == "signature_mismatch"
    assert reason_of(headers_for(signature), BODY.replace(b"task_1", b"task_2"), (public,)) == "signature_mismatch"
    assert reason_of(headers_for(signature, msg_id="msg_other"), BODY, (public,)) == "signature_mismatch"
    assert reason_of(headers_for(signature, ts=NOW + 1), BODY, (public,)) == "signature_mismatch"
    _, other_public = sw.generate_ed25519_keypair()
    assert reason_of(headers_for(signature), BODY, (other_public,)) == "signature_mismatch"
    assert sw.verify(headers_for(signature), BODY, [other_public, public], now=NOW) == MSG_ID  # key rotation


def test_hmac_tampering() -> None:
    signature = sw.sign(SECRET, MSG_ID, NOW, BODY)
    assert reason_of(headers_for(signature), BODY + b"\n") == "signature_mismatch"
    assert reason_of(headers_for(signature, msg_id=MSG_ID + "x")) == "signature_mismatch"


def test_mixed_keyring_and_mixed_header() -> None:
    private, public = sw.generate_ed25519_keypair()
    v1a = sw.sign_ed25519(private, MSG_ID, NOW, BODY)
    v1 = sw.sign(SECRET, MSG_ID, NOW, BODY)
    keyring = sw.parse_secrets([SECRET, public])
    assert sw.verify(headers_for(f"{v1} {v1a}"), BODY, keyring, now=NOW) == MSG_ID
    assert sw.verify(headers_for(v1a), BODY, keyring, now=NOW) == MSG_ID
    assert sw.verify(headers_for(v1), BODY, keyring, now=NOW) == MSG_ID
    # a v1a signature is never checked as HMAC, nor a v1 one against a public key
    assert reason_of(headers_for(v1), secrets=(public,)) == "signature_mismatch"
    assert reason_of(headers_for(v1a), secrets=(SECRET,)) == "signature_mismatch"


# --- headers


@pytest.mark.parametrize(
    "names",
    [
        ("Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"),
        ("WEBHOOK-ID", "WEBHOOK-TIMESTAMP", "WEBHOOK-SIGNATURE"),
        ("svix-id", "svix-timestamp", "svix-signature"),
        ("Svix-Id", "SVIX-TIMESTAMP", "svix-Signature"),
    ],
)
def test_header_names_are_case_insensitive_and_svix_names_work(names: tuple[str, str, str]) -> None:
    values = (MSG_ID, str(NOW), sw.sign(SECRET, MSG_ID, NOW, BODY))
    assert sw.verify(dict(zip(names, values, strict=True)), BODY, [SECRET], now=NOW) == MSG_ID


def test_webhook_names_win_when_both_families_are_present() -> None:
    headers = headers_for(sw.sign(SECRET, MSG_ID, NOW, BODY))
    headers.update({"svix-id": "other", "svix-timestamp": "1", "svix-signature": "v1,AAAA"})
    assert sw.verify(headers, BODY, [SECRET], now=NOW) == MSG_ID


def test_surrounding_whitespace_in_header_values_is_ignored() -> None:
    signature = sw.sign(SECRET, MSG_ID, NOW, BODY)
    headers = {
        "webhook-id": f" {MSG_ID} ",
        "webhook-timestamp": f"{NOW} ",
        "webhook-signature": f"  {signature}  ",
    }
    assert sw.verify(headers, BODY, [SECRET], now=NOW) == MSG_ID


# --- every reason


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_signature_missing(missing: str) -> None:
    headers = headers_for(sw.sign(SECRET, MSG_ID, NOW, BODY))
    del headers[missing]
    assert reason_of(headers) == "signature_missing"
    headers[missing] = "  "
    assert reason_of(headers) == "signature_missing"


def test_signature_missing_with_no_headers_at_all() -> None:
    assert reason_of({}) == "signature_missing"
    assert reason_of({"content-type": "application/json"}) == "signature_missing"


@pytest.mark.parametrize(
    "ts",
    ["hello", "-1", "+1750000000", "1750000000.0", "1.75e9", "1_750_000_000", "١٧٥٠٠٠٠٠٠٠", "9" * 13, "0x10"],
)
def test_timestamp_malformed(ts: str) -> None:
    assert reason_of(headers_for(sw.sign(SECRET, MSG_ID, NOW, BODY), ts=ts)) == "timestamp_malformed"


def test_timestamp_window_boundaries_and_injected_clock() -> None:
    signature = sw.sign(SECRET, MSG_ID, NOW, BODY)
    headers = headers_for(signature)
    for now in (NOW - 300, NOW, NOW + 300):  # inclusive window, tolerance 300 s by default
        assert sw.verify(headers, BODY, [SECRET], now=now) == MSG_ID
    assert reason_of(headers, now=NOW + 300.5) == "timestamp_stale"
    assert reason_of(headers, now=NOW + 86_400) == "timestamp_stale"
    assert reason_of(headers, now=NOW - 300.5) == "timestamp_future"
    assert reason_of(headers, now=NOW - 86_400) == "timestamp_future"
    assert sw.verify(headers, BODY, [SECRET], now=NOW + 3600, tolerance_s=3600) == MSG_ID


def test_freshness_is_checked_before_the_signature() -> None:
    assert reason_of(headers_for("v1,AAAA", ts=NOW - 10_000)) == "timestamp_stale"
    assert reason_of(headers_for("garbage", ts=NOW + 10_000)) == "timestamp_future"


@pytest.mark.parametrize(
    "signature",
    [
        "garbage",  # no comma
        "v1",
        "v1,",
        "v1,!!!notbase64!!!",
        "v1,AAAA",  # 3 bytes: wrong length for HMAC-SHA256
        "v1a,AAAA",
        "v1," + base64.b64encode(b"x" * 64).decode(),  # an ed25519-sized v1
        "v1a," + base64.b64encode(b"x" * 32).decode(),  # an HMAC-sized v1a
        "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",  # unknown version only
        "v1=Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=,extra",
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc==",  # wrong padding
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy_WavXrAFQ_9tdO6mc=",  # URL-safe alphabet is not the spec's
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc\u00e9",
        "v2,abc v3,def nocomma",
        " ".join([sw.sign(SECRET, MSG_ID, NOW, BODY)] * (sw.MAX_SIGNATURES + 1)),  # even with a valid one inside
    ],
)
def test_signature_malformed(signature: str) -> None:
    assert reason_of(headers_for(signature)) == "signature_malformed"


def test_unknown_and_broken_entries_are_skipped_when_a_good_one_is_there() -> None:
    good = sw.sign(SECRET, MSG_ID, NOW, BODY)
    header = f"garbage v2,xyz v1,!!! v1a,AAAA {good} v1,"
    assert sw.verify(headers_for(header), BODY, [SECRET], now=NOW) == MSG_ID


def test_padding_may_be_omitted_in_a_signature() -> None:
    good = sw.sign(SECRET, MSG_ID, NOW, BODY)
    assert sw.verify(headers_for(good.rstrip("=")), BODY, [SECRET], now=NOW) == MSG_ID


def test_signature_mismatch_message_says_what_was_compared_and_no_secret() -> None:
    with pytest.raises(Rejected) as info:
        sw.verify(headers_for("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="), BODY, [SECRET], now=NOW)
    assert info.value.reason == "signature_mismatch"
    assert "1 v1" in info.value.message and "1 whsec_" in info.value.message
    assert SECRET[6:] not in info.value.message


@pytest.mark.parametrize("now", [float("nan"), float("inf"), float("-inf")])
def test_a_broken_clock_fails_closed(now: float) -> None:
    with pytest.raises(ConfigError):
        sw.verify(headers_for(sw.sign(SECRET, MSG_ID, NOW, BODY)), BODY, [SECRET], now=now)


# --- secrets: validated once, at startup


def test_parse_secrets_sorts_kinds_and_keeps_secrets_out_of_repr() -> None:
    _, public = sw.generate_ed25519_keypair()
    keyring = sw.parse_secrets([SECRET, f"  {OLD_SECRET}\n", public, VECTOR_SECRET.removeprefix("whsec_")])
    assert len(keyring.hmac_keys) == 3 and len(keyring.public_keys) == 1
    assert "3 whsec_" in repr(keyring) and "1 whpk_" in repr(keyring)
    assert base64.b64decode(SECRET[6:]) not in repr(keyring).encode()
    assert SECRET[6:] not in repr(keyring)


def test_secret_padding_may_be_omitted() -> None:
    unpadded = SECRET.rstrip("=")
    assert unpadded != SECRET
    assert sw.parse_secrets([unpadded]).hmac_keys == sw.parse_secrets([SECRET]).hmac_keys


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "whsec_",
        "whsec_!!!",
        "whsec_" + base64.b64encode(b"short").decode(),  # under the spec's 24 bytes
        "my plain text secret",  # not base64: refused rather than silently used as raw text
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",  # broken padding
        "whpk_" + base64.b64encode(b"x" * 31).decode(),
        "whpk_not base64",
        "whsk_" + VECTOR_SEED,  # the private half does not belong on the receiver
    ],
)
def test_parse_secrets_refuses_bad_secrets(secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        sw.parse_secrets([SECRET, secret])
    assert "#2 of 2" in info.value.message
    body = secret.partition("_")[2] if "_" in secret else secret
    assert not body or body not in info.value.message  # the secret is never echoed


def test_parse_secrets_refuses_an_empty_list_and_a_lone_string() -> None:
    with pytest.raises(ConfigError):
        sw.parse_secrets([])
    with pytest.raises(ConfigError):
        sw.parse_secrets(SECRET)


def test_verify_with_raw_strings_raises_config_error_for_a_bad_secret() -> None:
    with pytest.raises(ConfigError):
        sw.verify(headers_for("v1,AAAA"), BODY, ["whsec_!!!"], now=NOW)


def test_the_signing_helpers_refuse_the_wrong_kind_of_key() -> None:
    _, public = sw.generate_ed25519_keypair()
    with pytest.raises(ConfigError):
        sw.sign(public, MSG_ID, NOW, BODY)
    with pytest.raises(ConfigError):
        sw.sign_ed25519(public, MSG_ID, NOW, BODY)  # 32 bytes too, but prefixed whpk_
    with pytest.raises(ConfigError):
        sw.sign_ed25519("whsk_" + base64.b64encode(b"x" * 64).decode(), MSG_ID, NOW, BODY)


# --- hostile input only ever raises Rejected

_ED_PRIVATE, _ED_PUBLIC = sw.generate_ed25519_keypair()
_KEYRING = sw.parse_secrets([SECRET, OLD_SECRET, _ED_PUBLIC])

_name = st.sampled_from(
    [
        "webhook-id",
        "Webhook-Timestamp",
        "WEBHOOK-SIGNATURE",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "x",
    ]
)
_b64ish = st.from_regex(r"[A-Za-z0-9+/=_-]{0,100}", fullmatch=True)
_entry = st.builds(lambda v, s: f"{v},{s}", st.sampled_from(["v1", "v1a", "v2", ""]) | st.text(max_size=4), _b64ish)
_value = (
    st.text(max_size=200)
    | st.integers(min_value=NOW - 1000, max_value=NOW + 1000).map(str)
    | st.lists(_entry | st.text(max_size=20), max_size=20).map(" ".join)
)


@given(
    headers=st.dictionaries(_name, _value, max_size=7),
    body=st.binary(max_size=300),
    now=st.floats(min_value=-1e12, max_value=1e13),
)
def test_random_headers_and_bodies_only_raise_rejected(headers: dict[str, str], body: bytes, now: float) -> None:
    with pytest.raises(Rejected) as info:
        sw.verify(headers, body, _KEYRING, now=now)
    assert info.value.reason in {
        "signature_missing",
        "timestamp_malformed",
        "timestamp_stale",
        "timestamp_future",
        "signature_malformed",
        "signature_mismatch",
    }


@given(signature=st.lists(_entry | st.text(max_size=30), min_size=1, max_size=8).map(" ".join), body=st.binary())
def test_random_signatures_on_a_fresh_request_only_raise_rejected(signature: str, body: bytes) -> None:
    with pytest.raises(Rejected) as info:
        sw.verify(headers_for(signature), body, _KEYRING, now=NOW)
    assert info.value.reason in {"signature_missing", "signature_malformed", "signature_mismatch"}


@given(
    secret=st.text(max_size=80) | st.builds(lambda p, b: p + b, st.sampled_from(["whsec_", "whpk_", "whsk_"]), _b64ish)
)
def test_random_secrets_only_raise_config_error(secret: str) -> None:
    try:
        sw.parse_secrets([secret])
    except ConfigError:
        pass


def test_lone_surrogates_in_headers_are_rejected_not_crashes() -> None:
    signature = sw.sign(SECRET, MSG_ID, NOW, BODY)
    assert reason_of(headers_for(signature, msg_id="msg_\ud800")) == "signature_mismatch"
    assert reason_of(headers_for("v1,\udcff" + signature[3:])) == "signature_malformed"
    assert reason_of(headers_for(signature, ts="\ud800")) == "timestamp_malformed"
