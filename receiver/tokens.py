"""Signed callback URLs for providers that sign nothing (APIXO, useapi.net, EvoLink). Pure.

The user registers ``{public_base_url}/callbacks/{provider}?token=<token>`` with the provider; the receiver
checks the token with nothing but the configured keys and the clock, so no state is stored per task.

    token = "v1." provider "." expiry "." mac
    mac   = base64url-no-padding(HMAC-SHA256(key, "v1." provider "." expiry))

``expiry`` is Unix seconds, or ``0`` for a token that never expires. Every character is in
``[A-Za-z0-9._-]``, so a token never needs URL-encoding. The provider is readable so that a token pasted
into another provider's URL can be reported as such, but only once its MAC has verified (see :func:`verify`).
Keys are tried in order for rotation: :func:`mint` signs with ``keys[0]``, :func:`verify` accepts any.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, quote

from veo_archiver.errors import ConfigError, Rejected
from veo_archiver.payload import hmac_sha256

VERSION = "v1"
QUERY_PARAM = "token"
MAX_TOKEN_LENGTH = 512

_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_EXPIRY = re.compile(r"0|[1-9][0-9]{0,11}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_MAC_SIZE = hashlib.sha256().digest_size


def _mac(key: str, signed: str) -> bytes:
    return hmac_sha256(key.encode("utf-8", "surrogatepass"), signed.encode("ascii"))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _malformed(why: str) -> Rejected:
    return Rejected(f"callback token {why}", reason="token_malformed")


def _check_provider(provider: str) -> None:
    if not _PROVIDER.fullmatch(provider):
        raise ConfigError(f"provider name {provider!r} must match {_PROVIDER.pattern}")


def mint(provider: str, keys: Sequence[str], *, now: float, ttl_s: int | None = None) -> str:
    """A token for ``provider`` signed with ``keys[0]``, valid for ``ttl_s`` seconds (``None``: forever)."""
    _check_provider(provider)
    if isinstance(keys, str) or not keys or not keys[0]:
        raise ConfigError("minting a callback token needs a non-empty list of non-empty keys")
    if ttl_s is None:
        expiry = 0
    elif ttl_s <= 0:
        raise ConfigError(f"token TTL must be positive seconds or None (never expires), got {ttl_s}")
    else:
        expiry = int(now) + ttl_s
    signed = f"{VERSION}.{provider}.{expiry}"
    return f"{signed}.{_b64url(_mac(keys[0], signed))}"


def _parse(token: str) -> tuple[str, str, str, bytes]:
    """A token's four fields (the MAC decoded), or :class:`Rejected` (``token_malformed``): its shape only."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"is longer than {MAX_TOKEN_LENGTH} characters")
    if not token.isascii():
        raise _malformed("contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) != 4:
        raise _malformed("must have 4 dot-separated parts")
    version, token_provider, expiry_text, mac_text = parts
    if version != VERSION:
        raise _malformed(f"has an unknown version (expected {VERSION})")
    if not _PROVIDER.fullmatch(token_provider):
        raise _malformed("has an invalid provider field")
    if not _EXPIRY.fullmatch(expiry_text):
        raise _malformed("expiry is not Unix seconds")
    if not _B64URL.fullmatch(mac_text):
        raise _malformed("MAC is not base64url")
    try:
        given = base64.urlsafe_b64decode(mac_text + "=" * (-len(mac_text) % 4))
    except (binascii.Error, ValueError):
        raise _malformed("MAC is not base64url") from None
    if len(given) != _MAC_SIZE or _b64url(given) != mac_text:  # the second test refuses non-canonical text
        raise _malformed("MAC has the wrong length")
    return version, token_provider, expiry_text, given


def verify(token: str | None, provider: str, keys: Sequence[str], *, now: float) -> None:
    """Raise :class:`Rejected` unless ``token`` is a live token for ``provider`` signed by one of ``keys``.

    Order of checks, and why:

    1. shape (``token_missing``, ``token_malformed``): free, and needs no key;
    2. MAC over the token's *own* signed part, every key tried without early exit (``token_mismatch``):
       until it verifies, nothing the token says is believed or echoed, so a forger learns nothing about
       which provider or expiry would have been accepted;
    3. provider (``token_wrong_provider``): an authentic token of ours registered with another provider's
       URL; worth its own answer because it is an operator's mistake, not an attack;
    4. expiry (``token_expired``): ``now > expiry`` is refused; ``now == expiry`` is the last valid second.
    """
    if not math.isfinite(now):  # a NaN clock would make every token immortal: fail closed
        raise ConfigError(f"the clock gave a non-finite time: {now}")
    if not token:
        raise Rejected("callback token is missing (expected ?token=…)", reason="token_missing")
    version, token_provider, expiry_text, given = _parse(token)

    if isinstance(keys, str):  # one string would be tried as one-character keys, each trivially forgeable
        raise ConfigError("callback token keys must be a sequence of strings, not one string")
    signed = f"{version}.{token_provider}.{expiry_text}"
    matched = False
    for key in keys:  # every key is tried (rotation); no early exit, so timing does not tell which matched
        if key:
            matched |= hmac.compare_digest(_mac(key, signed), given)
    if not matched:
        raise Rejected("callback token does not verify with any configured key", reason="token_mismatch")

    if token_provider != provider:
        raise Rejected(
            f"callback token is for provider {token_provider!r}, not {provider!r}: "
            f"register /callbacks/{token_provider} URLs with {token_provider} only",
            reason="token_wrong_provider",
        )
    expiry = int(expiry_text)
    if expiry != 0 and now > expiry:
        raise Rejected(f"callback token expired {now - expiry:.0f} s ago", reason="token_expired")


def callback_url(public_base_url: str, provider: str, token: str) -> str:
    """The URL to register with ``provider``: ``{base}/callbacks/{provider}?token=<token>``."""
    _check_provider(provider)
    return f"{public_base_url.rstrip('/')}/callbacks/{provider}?{QUERY_PARAM}={quote(token, safe='')}"


def token_from(query: Mapping[str, str], body_ref: str | None) -> str | None:
    """The token from the ``token`` query parameter, else from a provider's echo field.

    useapi.net echoes ``replyRef`` back in the callback body; it may hold ``token=<t>`` (possibly among
    other ``&``-joined pairs or after a ``?``) or the bare token. The query parameter wins when both are
    present. Nothing is validated here: :func:`verify` does that.
    """
    from_query = query.get(QUERY_PARAM)
    if from_query:
        return from_query
    if not body_ref:
        return None
    ref = body_ref.strip()
    if f"{QUERY_PARAM}=" in ref:
        for name, value in parse_qsl(ref.rpartition("?")[2], keep_blank_values=True):
            if name.strip() == QUERY_PARAM and value.strip():
                return value.strip()
        return None
    return ref or None
