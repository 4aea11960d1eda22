"""JSON as the intake stores it: compact UTF-8 bytes, encoded by orjson, with the standard library behind it.

The intake encodes every callback's event and delivery record once (and splices the bytes into the job and the
record, :mod:`veo_archiver.intake`); ``json.dumps`` cost about a tenth of the receiver's CPU per callback, orjson
a fifth of that. orjson refuses what ``json.dumps`` writes in two corners a decoded body can reach (a lone
surrogate from a ``"\\ud800"`` escape, an integer past 64 bits): :func:`dumpb` falls back to the standard
library there, so every value ``json.loads`` produced can be stored. Both write the same JSON values; the
bytes differ only in spacing and in non-ASCII characters (UTF-8 here, ``\\u`` escapes in the fallback).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumpb(value: Any) -> bytes:
    """``value`` as compact JSON bytes (UTF-8)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an integer past 64 bits, a non-str key
        return json.dumps(value, separators=(",", ":")).encode()


def string(text: str) -> bytes:
    """One JSON string literal, as :func:`dumpb` writes it."""
    return dumpb(text)
