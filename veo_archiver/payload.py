"""Small pure helpers shared by the provider modules: JSON decoding and typed field access.

Every failure is an :class:`InvalidPayload` naming the field, so a malformed body can never surface as a
``KeyError``/``TypeError`` (which would become a 500 and make the provider retry a broken request).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from veo_archiver.errors import InvalidPayload


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def decode_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidPayload("empty body: expected a JSON object")
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise InvalidPayload("body is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidPayload(f"expected a JSON object, got {type(value).__name__}")
    if nesting_depth(value) > MAX_DEPTH:
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


def get_object(parent: Mapping[str, Any], key: str, *, path: str, required: bool = True) -> dict[str, Any] | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise InvalidPayload(f"{path}: required object is missing")
        return None
    if not isinstance(value, dict):
        raise InvalidPayload(f"{path}: expected an object, got {type(value).__name__}")
    return value


def get_str(parent: Mapping[str, Any], key: str, *, path: str, required: bool = True) -> str | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise InvalidPayload(f"{path}: required string is missing")
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{path}: expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidPayload(f"{path}: must not be empty")
    return value


def get_int(parent: Mapping[str, Any], key: str, *, path: str, required: bool = True) -> int | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise InvalidPayload(f"{path}: required integer is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isascii() and value.strip().removeprefix("-").isdigit() and len(value) < 64:
            return int(value.strip())
        raise InvalidPayload(f"{path}: expected an integer, got {type(value).__name__}")
    return value


def maybe_json(value: Any) -> Any:
    """Decode a JSON-encoded string field (kie's ``promptJson``); keep anything else as it is."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def as_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidPayload(f"body: expected a JSON object, got {type(body).__name__}")
    return body


def task_id_value(value: Any, path: str) -> str:
    """A provider task id: a non-empty string with no lone surrogate (it is HMACed and used in keys)."""
    if value is None:
        raise InvalidPayload(f"{path}: required task id is missing")
    if not isinstance(value, str) or not value.strip() or any("\ud800" <= c <= "\udfff" for c in value):
        raise InvalidPayload(f"{path}: expected a non-empty string")
    return value
