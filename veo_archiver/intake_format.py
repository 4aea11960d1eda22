"""The intake's wire format, declared once: the delivery record, the archive job's envelope and the intake
script's per-delivery KEYS/ARGV layout. The intake (:mod:`veo_archiver.intake`) encodes with these functions,
its Lua script (:mod:`veo_archiver.intake_script`) takes every position from :data:`LAYOUT`, and the readers
(:mod:`veo_archiver.records.delivery`: the worker, ``show``, ``replay``) decode with :func:`decode_entry`.
Tests and benchmarks use the same encoders; a test that wants a dict decodes their output.

**Delivery record**: one JSON object, complete from Python (:func:`encode_record`)::

    {"delivery_id", "event": {provider, task_id, status, verification…},
     "callback": {"received_at", "remote", "path", "headers", "body"} (Delivery.to_json),
     "replayed_at"?, "job_id": str | null}

Only the script knows the delivery's outcome (accepted, duplicate, conflict, recorded, replayed): it keeps it
*beside* the record, never inside, so it neither parses nor splices JSON. A stored **entry** is
``<outcome> <record JSON>`` (:data:`OUTCOME_SEPARATOR`); :func:`decode_entry` gives the record with its
``outcome`` added, as ``show``, ``replay`` and the README describe it. Entries written by the previous intake
(one JSON object with the outcome inside) decode too.

**Job envelope**, the job's only argument (:func:`encode_envelope`), version :data:`ENVELOPE_VERSION`::

    {"v": 3, "delivery_id", "received_ts", "received_at", "event"}

Version 3: a delivery that creates a job also stores its entry under a key of its own
(:func:`veo_archiver.redis_keys.delivery_record_key`, for ``RAW_CALLBACK_TTL``), where the job reads its raw
callback; the task's deliveries list is an audit log, trimmed freely. Jobs queued before still run: version 2
read the record from the task's list (or, once the list was full, from that same key, where it was parked),
version 1 carried the callback itself (:func:`veo_archiver.records.delivery.for_job`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from veo_archiver.clock import iso

#: the job envelope's version (see the module docstring for what each one means)
ENVELOPE_VERSION = 3
#: between the outcome and the record in a stored entry (a record's compact JSON starts with ``{``)
OUTCOME_SEPARATOR = b" "
#: headers never stored: credentials of any kind
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
#: in a record past its task's byte budget, headers longer than this (as JSON) keep their size and sha256 only
COMPACT_HEADERS_BYTES = 4096


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery of a callback, as received; :meth:`to_json` is the record's ``callback``."""

    body: bytes
    headers: Mapping[str, str]
    received_at: float
    remote: str | None = None
    path: str = ""

    def public_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS}

    def to_json(self, *, compact: bool = False) -> dict[str, Any]:
        """The stored form; ``compact=True`` (past the task's byte budget) keeps the raw body's size and sha256
        only, and the headers' too when they are large."""
        headers = self.public_headers()
        out: dict[str, Any] = {
            "received_at": iso(self.received_at),
            "remote": self.remote,
            "path": self.path,
            "headers": headers,
        }
        if not compact:
            out["body"] = self.body.decode("utf-8", errors="replace")
            return out
        out["body"] = None
        out["body_omitted"] = _omitted(self.body)
        stored = orjson.dumps(headers)
        if len(stored) > COMPACT_HEADERS_BYTES:
            out["headers"] = {}
            out["headers_omitted"] = _omitted(stored)
        return out


def _omitted(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def encode_record(
    delivery_id: str, event_json: bytes, callback_json: bytes, *, job_id: str | None, replayed_at: str | None
) -> bytes:
    """The delivery record, complete, from the event's and the callback's JSON encoded once elsewhere."""
    record: dict[str, Any] = {
        "delivery_id": delivery_id,
        "event": orjson.Fragment(event_json),
        "callback": orjson.Fragment(callback_json),
    }
    if replayed_at is not None:
        record["replayed_at"] = replayed_at
    record["job_id"] = job_id
    return orjson.dumps(record)


def encode_entry(outcome: str, record: bytes) -> bytes:
    """What the script stores for a delivery (it writes the same bytes itself; tests and tools use this)."""
    return outcome.encode() + OUTCOME_SEPARATOR + record


def decode_entry(raw: bytes | str) -> dict[str, Any] | None:
    """One stored entry as its record with ``outcome``; None when it is unreadable (never raises)."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    outcome: str | None = None
    if not data.startswith(b"{"):  # a current entry; one of the previous intake is a JSON object
        head, _, data = data.partition(OUTCOME_SEPARATOR)
        outcome = head.decode("ascii", "replace")
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    if outcome is not None:
        record["outcome"] = outcome
    return record


def encode_envelope(delivery_id: str, received_at: float, event_json: bytes) -> bytes:
    """The job's envelope, from the event's JSON encoded once elsewhere."""
    return orjson.dumps(
        {
            "v": ENVELOPE_VERSION,
            "delivery_id": delivery_id,
            "received_ts": received_at,
            "received_at": iso(received_at),
            "event": orjson.Fragment(event_json),
        }
    )


#: what the script's RQ job hash takes per delivery, in :meth:`veo_archiver.job_template.JobTemplate.values`'
#: order (its ``lua_hset`` reads them as ``ARGV[first + 0..3]``: they stay together, in this order)
JOB_ARGV = ("created_at", "data", "description", "meta")
_CONSTANT_KEYS = ("queue", "queues", "events")
_KEYS = ("dedupe", "job", "deliveries", "budget", "record")
_ARGV = ("job_id", "replay", "record", "provider", "task_id", "status", "urls", "compact", *JOB_ARGV)


@dataclass(frozen=True)
class ScriptLayout:
    """The intake script's KEYS and ARGV: ``constant_keys`` once, then ``keys`` for each delivery of the batch,
    then ``argv`` for each delivery. Names, order and count live here only: the script's Lua declares one local
    per name from it (:meth:`lua_locals`), the intake packs values by name (:meth:`keys_of`, :meth:`argv_of`).
    """

    constant_keys: tuple[str, ...] = _CONSTANT_KEYS
    keys: tuple[str, ...] = _KEYS
    argv: tuple[str, ...] = _ARGV

    def __post_init__(self) -> None:
        for part, want in (("constant_keys", _CONSTANT_KEYS), ("keys", _KEYS), ("argv", _ARGV)):
            have: tuple[str, ...] = getattr(self, part)
            if sorted(have) != sorted(want):
                raise ValueError(f"the intake script needs the {part} {sorted(want)}, not {sorted(have)}")
        first = self.argv.index(JOB_ARGV[0])
        if self.argv[first : first + len(JOB_ARGV)] != JOB_ARGV:
            raise ValueError(f"the job's arguments {JOB_ARGV} must follow each other in this order")

    def keys_of(self, values: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(values[name] for name in self.keys)

    def argv_of(self, values: Mapping[str, str | bytes]) -> tuple[str | bytes, ...]:
        return tuple(values[name] for name in self.argv)

    def constant_keys_of(self, values: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(values[name] for name in self.constant_keys)

    def job_argv_base(self, argv_var: str) -> str:
        """The Lua expression of the ARGV index just before the job's arguments (``lua_hset``'s first_argv)."""
        return f"{argv_var} + {self.argv.index(JOB_ARGV[0]) + 1}"

    def lua_locals(self, keys_var: str, argv_var: str) -> str:
        """Lua that binds one local per name of one delivery: ``key_<name>`` = KEYS[keys_var + i], ``<name>`` =
        ARGV[argv_var + i] (the job's arguments excepted: ``lua_hset`` reads those)."""
        keys = [(f"key_{name}", f"KEYS[{keys_var} + {i}]") for i, name in enumerate(self.keys, start=1)]
        argv = [(name, f"ARGV[{argv_var} + {i}]") for i, name in enumerate(self.argv, start=1) if name not in JOB_ARGV]
        return "\n".join(f"  local {local} = {value}" for local, value in keys + argv)

    def lua_constant_locals(self) -> str:
        return "\n".join(f"local key_{name} = KEYS[{i}]" for i, name in enumerate(self.constant_keys, start=1))


#: the layout the intake runs with
LAYOUT = ScriptLayout()
