"""Signed callback tokens (``receiver.tokens``): pure, clock injected.

Expected MACs are computed here from the documented format, independently of ``tokens.mint``:
``v1.<provider>.<expiry>.<base64url-no-padding(HMAC-SHA256(key, "v1.<provider>.<expiry>"))>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver import tokens
from veo_archiver.errors import ConfigError, Rejected

NOW = 1_750_000_000
KEY = "tok_key_new_0123456789abcdef"
OLD_KEY = "tok_key_old_fedcba9876543210"
TOKEN_SHAPE = re.compile(r"v1\.[a-z0-9][a-z0-9_-]*\.(0|[1-9][0-9]*)\.[A-Za-z0-9_-]{43}")


def expected_token(key: str, provider: str, expiry: int) -> str:
    signed = f"v1.{provider}.{expiry}"
    mac = hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def reason_of(token: str | None, provider: str = "apixo", keys: tuple[str, ...] = (KEY,), now: float = NOW) -> str:
    with pytest.raises(Rejected) as info:
        tokens.verify(token, provider, keys, now=now)
    return info.value.reason


# --- mint and round trip


def test_mint_matches_the_documented_format() -> None:
    assert tokens.mint("apixo", [KEY], now=NOW) == expected_token(KEY, "apixo", 0)
    assert tokens.mint("useapi", [KEY], now=NOW + 0.9, ttl_s=3600) == expected_token(KEY, "useapi", NOW + 3600)


@pytest.mark.parametrize("provider", ["apixo", "useapi", "evolink"])
@pytest.mark.parametrize("ttl_s", [None, 1, 86_400])
def test_round_trip(provider: str, ttl_s: int | None) -> None:
    token = tokens.mint(provider, [KEY, OLD_KEY], now=NOW, ttl_s=ttl_s)
    assert TOKEN_SHAPE.fullmatch(token)
    assert token.split(".")[1] == provider
    tokens.verify(token, provider, [KEY, OLD_KEY], now=NOW)


def test_an_independently_built_token_verifies() -> None:
    tokens.verify(expected_token(KEY, "evolink", NOW + 60), "evolink", [KEY], now=NOW)


def test_rotation_old_token_verifies_while_the_old_key_is_still_listed() -> None:
    old_token = tokens.mint("apixo", [OLD_KEY], now=NOW)
    new_token = tokens.mint("apixo", [KEY, OLD_KEY], now=NOW)
    assert new_token == expected_token(KEY, "apixo", 0)  # keys[0] signs
    tokens.verify(old_token, "apixo", [KEY, OLD_KEY], now=NOW)
    tokens.verify(new_token, "apixo", [KEY, OLD_KEY], now=NOW)
    assert reason_of(old_token, keys=(KEY,)) == "token_mismatch"  # once the old key is retired


def test_every_key_is_tried_without_early_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    tokens.verify(tokens.mint("apixo", [KEY], now=NOW), "apixo", [KEY, OLD_KEY, "third-key"], now=NOW)
    assert len(calls) == 3


# --- every reason


@pytest.mark.parametrize("token", [None, ""])
def test_missing(token: str | None) -> None:
    assert reason_of(token) == "token_missing"


GOOD = expected_token(KEY, "apixo", 0)
GOOD_MAC = GOOD.rsplit(".", 1)[1]


@pytest.mark.parametrize(
    "token",
    [
        "v1.apixo.0",  # three parts
        f"v1.apixo.0.{GOOD_MAC}.x",  # five parts
        f"v2.apixo.0.{GOOD_MAC}",  # unknown version
        f"V1.apixo.0.{GOOD_MAC}",
        f".apixo.0.{GOOD_MAC}",
        f"v1..0.{GOOD_MAC}",  # empty provider
        f"v1.APIXO.0.{GOOD_MAC}",
        f"v1.ap%69xo.0.{GOOD_MAC}",
        f"v1.apixo.abc.{GOOD_MAC}",  # non-numeric expiry
        f"v1.apixo..{GOOD_MAC}",
        f"v1.apixo.-1.{GOOD_MAC}",
        f"v1.apixo.+5.{GOOD_MAC}",
        f"v1.apixo. 5.{GOOD_MAC}",
        f"v1.apixo.1_000.{GOOD_MAC}",
        f"v1.apixo.1e9.{GOOD_MAC}",
        f"v1.apixo.007.{GOOD_MAC}",
        f"v1.apixo.9999999999999.{GOOD_MAC}",
        "v1.apixo.0.",  # empty MAC
        f"v1.apixo.0.{GOOD_MAC[:-1]}+",  # standard, not URL-safe, base64
        f"v1.apixo.0.{GOOD_MAC}=",  # padding
        f"v1.apixo.0.{GOOD_MAC[:42]}",  # 42 chars: not even base64 of whole bytes
        f"v1.apixo.0.{GOOD_MAC[:40]}",  # 30 bytes: wrong MAC length
        f"v1.apixo.0.{GOOD_MAC}AAAA",  # 35 bytes
        f"v1.apixo.0.{GOOD_MAC[:-1]}B",  # non-canonical: stray low bits in the last character
        f"v1.apixo.٣.{GOOD_MAC}",  # non-ASCII digit
        f"v1.apixó.0.{GOOD_MAC}",  # non-ASCII
        GOOD + "\x00",
        "v1.apixo.0." + "A" * 600,  # over 512 characters
        "\ud800",
    ],
)
def test_malformed(token: str) -> None:
    assert reason_of(token) == "token_malformed"


def test_wrong_provider_for_an_authentic_token() -> None:
    token = tokens.mint("apixo", [KEY], now=NOW)
    with pytest.raises(Rejected) as info:
        tokens.verify(token, "useapi", [KEY], now=NOW)
    assert info.value.reason == "token_wrong_provider"
    assert "apixo" in info.value.message and "useapi" in info.value.message
    assert info.value.status_code == 401


def test_unauthenticated_fields_are_never_reported() -> None:
    # A forgery names another provider and a long-past expiry: the MAC is checked first, so the answer is
    # token_mismatch, never token_wrong_provider / token_expired, and the message says nothing about them.
    forged = expected_token("attacker-key", "useapi", NOW - 10)
    with pytest.raises(Rejected) as info:
        tokens.verify(forged, "apixo", [KEY], now=NOW)
    assert info.value.reason == "token_mismatch"
    assert "useapi" not in info.value.message
    assert forged.rsplit(".", 1)[1] not in info.value.message


def test_mismatch_when_a_field_is_changed() -> None:
    token = tokens.mint("apixo", [KEY], now=NOW, ttl_s=60)
    _, provider, expiry, mac = token.split(".")
    assert reason_of(f"v1.{provider}.{int(expiry) + 1}.{mac}") == "token_mismatch"
    assert reason_of(f"v1.{provider}.0.{mac}") == "token_mismatch"  # cannot be made eternal
    assert reason_of(f"v1.useapi.{expiry}.{mac}", provider="useapi") == "token_mismatch"


def test_mismatch_with_no_usable_key() -> None:
    assert reason_of(GOOD, keys=()) == "token_mismatch"
    assert reason_of(GOOD, keys=("",)) == "token_mismatch"
    assert reason_of(expected_token("", "apixo", 0), keys=("",)) == "token_mismatch"  # an empty key never verifies


def test_expiry_boundary() -> None:
    token = tokens.mint("apixo", [KEY], now=NOW, ttl_s=300)
    expiry = NOW + 300
    tokens.verify(token, "apixo", [KEY], now=expiry)  # the last valid second
    assert reason_of(token, now=expiry + 0.001) == "token_expired"
    assert reason_of(token, now=expiry + 86_400) == "token_expired"


def test_zero_expiry_never_expires() -> None:
    tokens.verify(tokens.mint("apixo", [KEY], now=NOW), "apixo", [KEY], now=NOW + 100 * 365 * 86_400)


def test_expired_token_for_another_provider_reports_the_provider_first() -> None:
    token = tokens.mint("apixo", [KEY], now=NOW, ttl_s=1)
    assert reason_of(token, provider="evolink", now=NOW + 10) == "token_wrong_provider"


# --- configuration mistakes


@pytest.mark.parametrize("provider", ["", "Apixo", "api.xo", "a/b", "x" * 33, "é"])
def test_mint_refuses_a_provider_name_that_would_break_the_format(provider: str) -> None:
    with pytest.raises(ConfigError):
        tokens.mint(provider, [KEY], now=NOW)


@pytest.mark.parametrize("keys", [[], [""], KEY])
def test_mint_refuses_missing_keys(keys: list[str] | str) -> None:
    with pytest.raises(ConfigError):
        tokens.mint("apixo", keys, now=NOW)


@pytest.mark.parametrize("ttl_s", [0, -1])
def test_mint_refuses_a_non_positive_ttl(ttl_s: int) -> None:
    with pytest.raises(ConfigError):
        tokens.mint("apixo", [KEY], now=NOW, ttl_s=ttl_s)


@pytest.mark.parametrize("now", [float("nan"), float("inf")])
def test_a_broken_clock_fails_closed(now: float) -> None:
    with pytest.raises(ConfigError):
        tokens.verify(tokens.mint("apixo", [KEY], now=NOW, ttl_s=1), "apixo", [KEY], now=now)


def test_verify_refuses_one_string_as_the_key_list() -> None:
    with pytest.raises(ConfigError):
        tokens.verify(expected_token("t", "apixo", 0), "apixo", "tok", now=NOW)


# --- URLs


@pytest.mark.parametrize("base", ["https://archiver.example.com", "https://archiver.example.com/", "http://h:8080/x//"])
def test_callback_url(base: str) -> None:
    token = tokens.mint("useapi", [KEY], now=NOW, ttl_s=60)
    url = tokens.callback_url(base, "useapi", token)
    assert url == f"{base.rstrip('/')}/callbacks/useapi?token={token}"
    parts = urlsplit(url)
    assert parts.path.endswith("/callbacks/useapi")
    assert parse_qs(parts.query) == {"token": [token]}


@given(
    provider=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True),
    key=st.text(min_size=1),
    now=st.floats(min_value=0, max_value=4e9),
    ttl_s=st.none() | st.integers(min_value=1, max_value=10**9),
)
def test_tokens_never_need_url_encoding(provider: str, key: str, now: float, ttl_s: int | None) -> None:
    token = tokens.mint(provider, [key], now=now, ttl_s=ttl_s)
    assert quote(token, safe="") == token
    assert TOKEN_SHAPE.fullmatch(token)
    assert len(token) <= tokens.MAX_TOKEN_LENGTH
    tokens.verify(token, provider, [key], now=now)


# --- finding the token


def test_token_from_query_wins() -> None:
    assert tokens.token_from({"token": GOOD}, "token=other") == GOOD


@pytest.mark.parametrize(
    "body_ref",
    [
        GOOD,
        f"token={GOOD}",
        f" token={GOOD} ",
        f"job=7&token={GOOD}",
        f"https://a.example/cb?x=1&token={GOOD}",
    ],
)
def test_token_from_reply_ref(body_ref: str) -> None:
    assert tokens.token_from({}, body_ref) == GOOD
    assert tokens.token_from({"token": ""}, body_ref) == GOOD


@pytest.mark.parametrize("body_ref", [None, "", "   ", "token=", "job=7&token="])
def test_token_from_nothing(body_ref: str | None) -> None:
    assert tokens.token_from({}, body_ref) is None
    assert tokens.token_from({"other": "x"}, body_ref) is None


# --- hostile input only ever raises Rejected

_token_like = st.builds(
    lambda v, p, e, m: f"{v}.{p}.{e}.{m}",
    st.sampled_from(["v1", "v2", "", "V1"]) | st.text(max_size=4),
    st.sampled_from(["apixo", "useapi", ""]) | st.text(max_size=8),
    st.sampled_from(["0", str(NOW), "-1"]) | st.text(max_size=14),
    st.from_regex(r"[A-Za-z0-9_=+/-]{0,48}", fullmatch=True) | st.text(max_size=48),
)


@given(
    token=st.none() | st.text(max_size=700) | _token_like,
    now=st.floats(allow_nan=False, allow_infinity=False),
)
def test_random_tokens_only_raise_rejected(token: str | None, now: float) -> None:
    with pytest.raises(Rejected) as info:
        tokens.verify(token, "apixo", [KEY, OLD_KEY], now=now)
    assert info.value.reason in {
        "token_missing",
        "token_malformed",
        "token_wrong_provider",
        "token_expired",
        "token_mismatch",
    }


@given(
    query=st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=3),
    body_ref=st.none() | st.text(),
)
def test_token_from_never_raises(query: dict[str, str], body_ref: str | None) -> None:
    found = tokens.token_from(query, body_ref)
    assert found is None or isinstance(found, str)
