"""Small pure helpers shared by the provider modules: JSON decoding, task ids, header lookup and the
HMAC-SHA256 the signature checks share (typed field access is :mod:`veo_archiver.providers.shape`).

Every failure is an :class:`InvalidPayload` naming the field, so a malformed body can never surface as a
``KeyError``/``TypeError`` (which would become a 500 and make the provider retry a broken request).
These run once or more per callback on the receiver's hot path: the checks are precompiled regexes and
C-level string operations rather than per-character Python loops.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import json.scanner
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from veo_archiver.errors import InvalidPayload


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (given in lower case) in any mapping, whatever the case of its keys.

    The direct lookup answers at once for the mappings the receiver passes (Starlette's ``Headers`` and the
    receiver's ``RequestHeaders`` are case-insensitive; servers send lower-case names): building
    :func:`lower_headers` decodes every header again. Only a miss scans the keys, for a plain mapping keyed
    in another case. A header sent twice reads as the mapping's own ``get`` answers it (the first value for
    both header classes); the verifiers refuse repeated proof headers before reading them.
    """
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            value = candidate  # the last one, as lower_headers(headers)[name] would give
    return value


@functools.lru_cache(maxsize=64)
def _keyed_sha256(key: bytes) -> hmac.HMAC:
    # OpenSSL 3 fetches the digest and derives the keyed inner/outer states on every hmac.new (and
    # hmac.digest) call: one keyed object per configured key, copied per message, halves the cost of a
    # signature check. Bounded, and it only ever holds keys the settings already hold.
    return hmac.new(key, digestmod=hashlib.sha256)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """``hmac.new(key, message, hashlib.sha256).digest()``, reusing the keyed state of a recent key."""
    mac = _keyed_sha256(key).copy()
    mac.update(message)
    return mac.digest()


# The C scanner json.loads ends in (any decoder-like context will do; typeshed's own TODO says so). Called
# directly it skips the three Python-level wrappers around it, about half the cost of decoding a callback.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def loads_json(text: str) -> Any:
    """``json.loads(text)``, with the same value and the same errors, faster for the usual text.

    Text that is one JSON value from its first to its last character (no surrounding whitespace, no byte
    order mark) is what the scanner reads alone; anything else, and every failure, goes through
    ``json.loads`` itself, so that leading whitespace is skipped and errors keep the stdlib's messages.
    """
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


#: byte order marks of the encodings ``json.loads(bytes)`` would silently detect and decode
_FOREIGN_BOMS = (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\xfe\xff", b"\xff\xfe")


def decode_text(body: bytes) -> str:
    """The body as UTF-8 text (RFC 8259 8.1: JSON exchanged between systems is UTF-8), or InvalidPayload.

    ``json.loads(bytes)`` would also detect UTF-16 and UTF-32 and decode them, and the raw record (stored as
    UTF-8 text) would then hold garbage: JSON in those encodings is refused with reason ``not_utf8``, and so
    is any body that is not valid UTF-8. Bytes with a UTF-16/32 mark (or NUL bytes) that are not JSON in
    those encodings either are plain garbage: reason ``invalid_payload``. A UTF-8 byte order mark is
    tolerated and dropped (RFC 8259 lets a parser ignore it; it cannot change what the text says): refusing
    it would lose a sender's every callback for a harmless quirk.
    """
    if body.startswith(_FOREIGN_BOMS) or b"\x00" in body:  # NUL is never in JSON text: UTF-16/32 without a mark
        try:
            json.loads(body)  # detects UTF-16/32 as the stdlib would have
        except (ValueError, RecursionError):
            raise InvalidPayload("body is neither UTF-8 text nor JSON in another encoding") from None
        raise InvalidPayload("body is JSON in UTF-16 or UTF-32: send UTF-8", reason="not_utf8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"body is not UTF-8 text (byte {exc.start})", reason="not_utf8") from None
    return text.removeprefix("\ufeff")


def decode_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidPayload("empty body: expected a JSON object")
    text = decode_text(body)
    try:
        value = loads_json(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidPayload(f"expected a JSON object, got {type(value).__name__}")
    # Every nested list/object opens with a "[" or "{" character of the text (more of them may sit inside
    # strings; in UTF-8 no multi-byte character holds an ASCII byte): a body with at most MAX_DEPTH of them
    # cannot be nested deeper, and the walk over every decoded value is skipped for any normal callback.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting_depth(value) > MAX_DEPTH:
        raise InvalidPayload(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


#: no provider nests more than a handful of levels; a deeper body would only break re-serialisation later
MAX_DEPTH = 64


def nesting_depth(value: Any) -> int:
    """Depth of nested lists/objects, walked iteratively (no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def maybe_json(value: Any) -> Any:
    """Decode a JSON-encoded string field (kie's ``promptJson``); keep anything else as it is."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return loads_json(value)
        except (ValueError, RecursionError):
            return value
    return value


def as_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict) and not isinstance(body, Mapping):  # a dict is checked without the ABC machinery
        raise InvalidPayload(f"body: expected a JSON object, got {type(body).__name__}")
    return body


#: a surrogate code point (JSON's ``"\\ud800"``) alone, which UTF-8 cannot encode
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_task_id_text(value: Any) -> TypeGuard[str]:
    """A non-empty string with no lone surrogate: what a provider task id must be (it is HMACed, used in keys)."""
    # isascii() reads a flag of the string object: only non-ASCII text is scanned for a surrogate
    return isinstance(value, str) and bool(value.strip()) and (value.isascii() or _SURROGATE.search(value) is None)


def task_id_value(value: Any, path: str) -> str:
    """A provider task id: a non-empty string with no lone surrogate (it is HMACed and used in keys)."""
    if value is None:
        raise InvalidPayload(f"{path}: required task id is missing")
    if not is_task_id_text(value):
        raise InvalidPayload(f"{path}: expected a non-empty string")
    return value
