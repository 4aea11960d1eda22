"""RQ's job hash of an archive job, written by the intake's Lua without RQ: derived from RQ's public API once,
and checked against RQ before the receiver accepts a callback. Also RESP packing.

:class:`JobTemplate` is built once per :class:`~veo_archiver.intake.Intake` from ``rq.Job.create(...,
status=QUEUED)`` and ``Job.to_dict()`` (what ``Job.save()`` writes): every field but five is fixed by the
settings and written into the intake script as a constant; per callback only ``created_at`` = ``enqueued_at``,
``data`` (the serialized call, not compressed: see :meth:`JobTemplate.values`), ``description`` and ``meta``
travel. Before it is used, the hash it makes is restored by RQ (``Job.restore``, as ``Job.fetch`` does) and
compared with the job ``Job.create`` built, field for field; RQ's key names are compared with ours. An RQ
release that writes or reads jobs differently stops the receiver with a :class:`ConfigError` naming the
field, instead of queueing jobs its workers cannot read. ``tests/core/test_job_template.py`` pins the
template against what the installed RQ writes into a real Redis (``job.save()``, ``HGETALL``,
``Job.fetch``). The intake packs its commands to RESP itself (redis-py's pure-Python packer costs about 8 us
an argument).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import redis
from rq import Queue
from rq.job import Job, JobStatus, Retry
from rq.serializers import JSONSerializer

from veo_archiver import jsontext
from veo_archiver import redis_keys as keys
from veo_archiver.clock import utc_second
from veo_archiver.errors import ConfigError
from veo_archiver.logs import escape_controls
from veo_archiver.settings import Settings


def lua_string(value: str | bytes) -> str:
    """A Lua string literal for any bytes (decimal escapes for everything but plain characters)."""
    raw = value.encode() if isinstance(value, str) else value
    return (
        '"'
        + "".join(
            chr(b) if (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in b" -_.:,[]{}") else f"\\{b:03d}"
            for b in raw
        )
        + '"'
    )


def bulk(out: list[bytes], value: str | bytes) -> None:
    raw = value.encode() if isinstance(value, str) else value
    out += (b"$%d\r\n" % len(raw), raw, b"\r\n")


def command(*args: str | bytes | int) -> bytes:
    """One command in RESP, packed here (redis-py's pure-Python packer costs ~8 us an argument)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        bulk(out, str(arg) if isinstance(arg, int) else arg)
    return b"".join(out)


def build_job(settings: Settings, job_id: str, envelope: dict[str, Any], *, func_name: str = keys.ARCHIVE_JOB) -> Job:
    """The queued archive job as RQ itself builds it, in memory (no I/O); :func:`hash_fields` of it is what
    ``job.save()`` writes. Not called per callback: :class:`JobTemplate` is derived from it and checked
    against it."""
    event = envelope["event"]
    return _create(
        settings,
        job_id,
        envelope,
        description=_description(event["provider"], event["task_id"], event["status"]),
        meta=_meta(event["provider"], event["task_id"], envelope["delivery_id"]),
        func_name=func_name,
    )


def _create(
    settings: Settings, job_id: str, envelope: Any, *, description: str, meta: dict[str, Any], func_name: str
) -> Job:
    job = Job.create(
        func_name,
        kwargs={"envelope": envelope},
        connection=_OFFLINE_REDIS,
        id=job_id,
        timeout=settings.job_timeout_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.failure_ttl_s,
        retry=Retry(max=len(settings.retry_intervals_s), interval=list(settings.retry_intervals_s)),
        serializer=JSONSerializer,
        description=description,
        meta=meta,
        origin=settings.queue_name,
        status=JobStatus.QUEUED,
    )
    job.enqueued_at = job.created_at
    return job


def hash_fields(job: Job) -> list[tuple[str, str | bytes]]:
    """The job hash ``job.save()`` writes, in ``Job.to_dict()``'s order, each value as redis-py sends it:
    bytes as they are, text (a ``str`` enum as its value) and numbers as text; ``None`` is not written."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in job.to_dict().items():
        if value is None:
            continue
        if isinstance(value, Enum):
            value = value.value
        out.append((name, value if isinstance(value, bytes | str) else str(value)))
    return out


def _description(provider: str, task_id: str, status: str) -> str:
    """What ``rq info``, rq-dashboard and RQ's own log lines show: control characters escaped, so a task id
    cannot forge a line in a text log or a terminal."""
    return f"archive {provider}:{escape_controls(task_id)} ({status})"


def _meta(provider: str, task_id: str, delivery_id: str) -> dict[str, Any]:
    return {"provider": provider, "task_id": task_id, "delivery_id": delivery_id}


_SPLICE = "\x00veo-archiver-envelope\x00"
#: the job the template is checked with: odd characters in every varying field
_PROBE_ID = "veo-archiver-template-probe"
_PROBE_ENVELOPE: dict[str, Any] = {
    "v": 2,
    "delivery_id": "0f" * 16,
    "event": {"provider": "kie", "task_id": 'probe "\u00e9\\\n\u2028', "status": "succeeded"},
    "received_ts": 1.5,
}
#: a time with an exact binary fraction, so the stamp and RQ's reading of it can be compared exactly
_PROBE_TIME = 1_800_000_000.25
#: what a restored job is compared on besides its whole ``to_dict()``: the call and the job's own settings
_COMPARED: dict[str, Callable[[Job], object]] = {
    "func_name": lambda job: job.func_name,
    "args": lambda job: list(job.args),
    "kwargs": lambda job: job.kwargs,
    "status": lambda job: job.get_status(refresh=False),
    "origin": lambda job: job.origin,
    "description": lambda job: job.description,
    "meta": lambda job: job.meta,
    "timeout": lambda job: job.timeout,
    "result_ttl": lambda job: job.result_ttl,
    "failure_ttl": lambda job: job.failure_ttl,
    "ttl": lambda job: job.ttl,
    "retries_left": lambda job: job.retries_left,
    "retry_intervals": lambda job: job.retry_intervals,
    "number_of_retries": lambda job: job.number_of_retries,
    "data": lambda job: job.serializer.loads(job.data),  # the whole call, as the job's serializer reads it
}


class JobTemplate:
    """RQ's hash of our queued archive job, derived from ``Job.create`` + ``Job.to_dict()`` and checked by
    ``Job.restore`` (:meth:`check`) when it is built.

    Every field but five is fixed by the settings (timeout, TTLs, retries, origin, status and RQ's empty
    fields) and is written into the intake script as a constant (:meth:`lua_hset`); per callback only
    ``created_at`` = ``enqueued_at`` ("now"), ``data`` (the serialized call; RQ compresses it, the template
    does not), ``description`` and ``meta`` travel (:meth:`values`). :meth:`hset_args` is the whole hash in
    ``Job.to_dict()``'s order.
    """

    VARYING = ("created_at", "enqueued_at", "data", "description", "meta")

    def __init__(self, settings: Settings, *, func_name: str = keys.ARCHIVE_JOB) -> None:
        # the call with a marker for the envelope: RQ's own layout of ``data``, split around the marker
        probe = _create(settings, _PROBE_ID, _SPLICE, description="-", meta={"m": 1}, func_name=func_name)
        fields = hash_fields(probe)
        names = [name for name, _ in fields]
        missing = [name for name in self.VARYING if name not in names]
        if missing:
            raise ConfigError(_refusal(f"field {', '.join(missing)}: not written by Job.to_dict()"))
        self._args: list[Any] = [part for pair in fields for part in pair]
        self._slot = {name: 2 * names.index(name) + 1 for name in self.VARYING}
        marker = JSONSerializer.dumps(_SPLICE)
        if probe.data.count(marker) != 1:
            raise ConfigError(_refusal("field data: the serialized call does not hold its keyword arguments as JSON"))
        self._data_head, self._data_tail = probe.data.split(marker)
        self.check(settings, func_name=func_name)

    def _stamp(self, now: float | None = None) -> str:
        """Now as ``rq.utils.utcformat`` writes it (``%Y-%m-%dT%H:%M:%S.%fZ``, UTC)."""
        now = time.time() if now is None else now
        second = int(now)
        return f"{utc_second(second)}.{int((now - second) * 1_000_000):06d}Z"

    def values(
        self, envelope_json: bytes, *, provider: str, task_id: str, status: str, delivery_id: str
    ) -> tuple[str, bytes, str, bytes]:
        """The varying fields: (created_at = enqueued_at, data, description, meta).

        ``data`` is the serialized call *uncompressed*: ``rq.Job.restore`` tries ``zlib.decompress`` and keeps
        the bytes as they are when they are not zlib data (a JSON call starts with ``[``, never a zlib
        header), so RQ reads it exactly as the compressed form, and the receiver saves the 25-80 us that
        ``zlib.compress`` costs per callback (most of it allocating and faulting in zlib's 256 KiB state)."""
        return (
            self._stamp(),
            self._data_head + envelope_json + self._data_tail,
            _description(provider, task_id, status),
            b"".join(
                (
                    b'{"provider":',
                    jsontext.string(provider),
                    b',"task_id":',
                    jsontext.string(task_id),
                    b',"delivery_id":',
                    jsontext.string(delivery_id),
                    b"}",
                )
            ),  # _meta(...) as JSON, encoded without building the dict
        )

    def hset_args(
        self, envelope_json: bytes, *, provider: str, task_id: str, status: str, delivery_id: str
    ) -> list[Any]:
        """The job hash's HSET field/value pairs, in ``Job.to_dict()``'s order."""
        stamp, data, description, meta = self.values(
            envelope_json, provider=provider, task_id=task_id, status=status, delivery_id=delivery_id
        )
        args = self._args.copy()
        slot = self._slot
        args[slot["created_at"]] = args[slot["enqueued_at"]] = stamp
        args[slot["data"]] = data
        args[slot["description"]] = description
        args[slot["meta"]] = meta
        return args

    def written(self, args: list[Any]) -> dict[bytes, bytes]:
        """The hash the intake script writes for :meth:`hset_args`, as ``HGETALL`` returns it: RQ's empty
        fields left out (:meth:`lua_hset`)."""
        return {
            _raw(name): _raw(value)
            for name, value in zip(args[0::2], args[1::2], strict=True)
            if name in self.VARYING or value not in ("", b"")
        }

    def lua_hset(self, key: str, *, first_argv: str) -> str:
        """``redis.call('HSET', key, ...)``: the constant fields as literals, the varying ones from
        ``ARGV[first_argv + 0 ..]`` (a Lua expression) in :meth:`values`' order.

        RQ's empty fields (callbacks, ``started_at``, ``worker_name``...: 8 of 20 for a queued job) are left
        out: ``Job.restore`` reads every one of them as ``obj.get(name)`` and treats absent and empty alike
        (:meth:`check` restores the hash without them and compares the job with RQ's), and each field of a
        hash this size costs Redis an allocation and the AOF its bytes."""
        argv = {"created_at": 0, "enqueued_at": 0, "data": 1, "description": 2, "meta": 3}
        parts = [key]
        for name, value in zip(self._args[0::2], self._args[1::2], strict=True):
            if name not in argv and value in ("", b""):
                continue
            parts.append(lua_string(name))
            parts.append(f"ARGV[{first_argv} + {argv[name]}]" if name in argv else lua_string(value))
        return f"redis.call('HSET', {', '.join(parts)})"

    def check(self, settings: Settings, *, func_name: str = keys.ARCHIVE_JOB) -> None:
        """Raise :class:`ConfigError` unless the installed RQ reads the hash this template writes (less its
        empty fields) as the job ``Job.create`` builds, and names its keys as :mod:`veo_archiver.redis_keys`
        does. No I/O: RQ restores the hash from memory, as ``Job.fetch`` does after ``HGETALL``."""
        queue = Queue(settings.queue_name, connection=_OFFLINE_REDIS, serializer=JSONSerializer)
        for what, rq_key, ours in (
            ("the job key", Job.key_for(_PROBE_ID), keys.rq_job_key(_PROBE_ID)),
            ("the queue key", queue.key, keys.rq_queue_key(settings.queue_name)),
            ("the set of queues", Queue.redis_queues_keys, keys.RQ_QUEUES_SET),
        ):
            if _text(rq_key) != ours:
                raise ConfigError(
                    f"this rq {_rq_version()} keeps {what} at {_text(rq_key)!r}, not {ours!r}: the receiver writes "
                    "RQ's keys itself (veo_archiver/redis_keys.py); unset RQ_KEY_PREFIX"
                )
        envelope = _PROBE_ENVELOPE
        event = envelope["event"]
        expected = build_job(settings, _PROBE_ID, envelope, func_name=func_name)
        args = self.hset_args(
            jsontext.dumpb(envelope),
            provider=event["provider"],
            task_id=event["task_id"],
            status=event["status"],
            delivery_id=envelope["delivery_id"],
        )
        args[self._slot["created_at"]] = args[self._slot["enqueued_at"]] = self._stamp(_PROBE_TIME)
        restored = Job(_PROBE_ID, connection=_OFFLINE_REDIS, serializer=JSONSerializer)
        try:
            restored.restore(self.written(args))
            mine = {name: read(restored) for name, read in _COMPARED.items()}
        except Exception as exc:  # whatever RQ raises for a hash it cannot read
            raise ConfigError(_refusal(f"the hash does not restore: {type(exc).__name__}: {exc}")) from exc
        for name, read in _COMPARED.items():
            if mine[name] != read(expected):
                raise ConfigError(
                    _refusal(f"field {name}: RQ reads {mine[name]!r}, Job.create made {read(expected)!r}")
                )
        when = datetime.fromtimestamp(_PROBE_TIME, UTC)
        for name in ("created_at", "enqueued_at"):
            stamp = getattr(restored, name)
            if not isinstance(stamp, datetime) or abs(_aware(stamp) - when) > timedelta(microseconds=1):
                raise ConfigError(_refusal(f"field {name}: RQ reads {stamp!r}, not {when.isoformat()}"))
        theirs, ours_again = _comparable(hash_fields(expected)), _comparable(hash_fields(restored))
        for name in sorted(set(theirs) | set(ours_again)):
            if theirs.get(name) != ours_again.get(name):
                raise ConfigError(
                    _refusal(
                        f"field {name}: RQ writes {theirs.get(name)!r}, re-saves the template's job with "
                        f"{ours_again.get(name)!r}"
                    )
                )


def _refusal(detail: str) -> str:
    return (
        f"this rq {_rq_version()} writes job hashes veo-archiver cannot reproduce: {detail}; "
        "pin rq to a tested version (pyproject.toml)"
    )


def _rq_version() -> str:
    try:
        return version("rq")
    except PackageNotFoundError:  # pragma: no cover - rq imported from a source tree
        return "(unknown version)"


def _comparable(fields: list[tuple[str, str | bytes]]) -> Mapping[str, bytes]:
    """A saved hash for comparison: empty fields dropped (RQ reads absent and empty alike), the varying
    times and the call (compared through RQ's reading of them) left out."""
    skip = {"created_at", "enqueued_at", "data"}
    return {name: _raw(value) for name, value in fields if name not in skip and value not in ("", b"")}


def _raw(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _aware(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


# Job.create needs a connection object to bind to; it performs no I/O with it.
_OFFLINE_REDIS = redis.Redis(host="127.0.0.1", port=1)
