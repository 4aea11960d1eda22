"""RQ's job hash of an archive job, built without RQ on the hot path, and RESP packing.

:class:`JobTemplate` is built once per :class:`~veo_archiver.intake.Intake` from ``rq.Job.create`` +
``rq.scripts._build_hset_args``: every field but five is fixed by the settings and written into the intake
script as a constant; per callback only ``created_at`` = ``enqueued_at``, ``data`` (the serialized
call, not compressed: see :meth:`JobTemplate.values`), ``description`` and ``meta`` travel. ``tests/core/
test_intake_group_commit.py`` pins the template, and the hash the script writes, against ``Job.create`` field
for field for the installed RQ. The intake packs its commands to RESP itself (redis-py's pure-Python packer
costs about 8 us an argument).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rq.job import Job, JobStatus, Retry
from rq.scripts import _build_hset_args
from rq.serializers import JSONSerializer

from veo_archiver import jsontext
from veo_archiver import redis_keys as keys
from veo_archiver.clock import utc_second
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
    """An RQ job built by RQ itself, in memory; ``_build_hset_args`` gives the exact hash RQ would write.

    Not called per callback (see :class:`JobTemplate`): it is what the template is built from and pinned to.
    """
    event = envelope["event"]
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
        description=_description(event["provider"], event["task_id"], event["status"]),
        meta=_meta(event["provider"], event["task_id"], envelope["delivery_id"]),
        origin=settings.queue_name,
    )
    job.redis_server_version = None
    job.enqueued_at = datetime.now(UTC).replace(tzinfo=None)
    job._status = JobStatus.QUEUED
    return job


def _description(provider: str, task_id: str, status: str) -> str:
    """What ``rq info``, rq-dashboard and RQ's own log lines show: control characters escaped, so a task id
    cannot forge a line in a text log or a terminal."""
    return f"archive {provider}:{escape_controls(task_id)} ({status})"


def _meta(provider: str, task_id: str, delivery_id: str) -> dict[str, Any]:
    return {"provider": provider, "task_id": task_id, "delivery_id": delivery_id}


_SPLICE = "\x00veo-archiver-envelope\x00"


class JobTemplate:
    """RQ's hash of our queued archive job, built once by ``Job.create`` + ``_build_hset_args``.

    Every field but five is fixed by the settings (timeout, TTLs, retries, origin, status and RQ's empty
    fields) and is written into the intake script as a constant (:meth:`lua_hset`); per callback only
    ``created_at`` = ``enqueued_at`` ("now"), ``data`` (the serialized call; RQ compresses it, the template does not),
    ``description`` and ``meta`` travel (:meth:`values`). :meth:`hset_args` is the whole hash in
    ``_build_hset_args``'s order; ``tests/test_intake_group_commit.py`` pins it, and the hash the script
    writes, against ``Job.create`` field for field for the installed RQ.
    """

    VARYING = ("created_at", "enqueued_at", "data", "description", "meta")

    def __init__(self, settings: Settings, *, func_name: str = keys.ARCHIVE_JOB) -> None:
        probe = build_job(
            settings,
            "template-probe",
            {"delivery_id": "d", "event": {"provider": "p", "task_id": "t", "status": "s"}, "callback": {}},
            func_name=func_name,
        )
        args = list(_build_hset_args(probe))
        names = args[0::2]
        missing = [name for name in self.VARYING if name not in names]
        if missing:
            raise RuntimeError(f"this rq writes no {missing} field in a job hash: JobTemplate needs updating")
        self._args = args
        self._slot = {name: 2 * names.index(name) + 1 for name in self.VARYING}
        # data = serializer.dumps((func_name, instance, args, kwargs)) with kwargs {"envelope": ...} (RQ adds zlib)
        call = JSONSerializer.dumps((func_name, None, (), {"envelope": _SPLICE})).decode()
        head, tail = call.split(json.dumps(_SPLICE))
        self._data_head, self._data_tail = head.encode(), tail.encode()

    def _stamp(self) -> str:
        """Now as ``rq.utils.utcformat`` writes it (``%Y-%m-%dT%H:%M:%S.%fZ``, UTC)."""
        now = time.time()
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
        """The job hash's HSET field/value pairs, in ``_build_hset_args``'s order."""
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

    def lua_hset(self, key: str, *, first_argv: str) -> str:
        """``redis.call('HSET', key, ...)``: the constant fields as literals, the varying ones from
        ``ARGV[first_argv + 0 ..]`` (a Lua expression) in :meth:`values`' order.

        RQ's empty fields (callbacks, ``started_at``, ``worker_name``...: 8 of 20 for a queued job) are left
        out: ``Job.restore`` reads every one of them as ``obj.get(name)`` and treats absent and empty alike
        (``tests/core/test_intake_group_commit.py`` restores both hashes and compares the jobs), and each field
        of a hash this size costs Redis an allocation and the AOF its bytes."""
        argv = {"created_at": 0, "enqueued_at": 0, "data": 1, "description": 2, "meta": 3}
        parts = [key]
        for name, value in zip(self._args[0::2], self._args[1::2], strict=True):
            if name not in argv and value in ("", b""):
                continue
            parts.append(lua_string(name))
            parts.append(f"ARGV[{first_argv} + {argv[name]}]" if name in argv else lua_string(value))
        return f"redis.call('HSET', {', '.join(parts)})"


# Job.create needs a connection object to bind to; it performs no I/O with it.
_OFFLINE_REDIS = redis.Redis(host="127.0.0.1", port=1)
