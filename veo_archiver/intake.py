"""Durable, deduplicated intake with group commit: the callbacks in flight share one Redis command.

For each delivery, atomically (one Lua script runs a whole batch of them): record the delivery (raw body +
non-secret headers) for replay and audit, append it to the operators' event stream, and, unless the
(provider, task, terminal status) was already accepted, write an RQ job hash *in RQ's own format* and push its
id on the queue. An operator's replay (``submit(..., replay=True)``) skips the dedupe check and enqueues a job
under a fresh id, recorded with the outcome ``replayed``.

**Group commit** (:mod:`veo_archiver.group_commit`): :meth:`Intake.submit` joins a batch and awaits its own
element of the reply; one ``EVALSHA`` carries the batch (Redis pays a script call's own cost once a batch),
with one ``WAITAOF`` after it when the server supports it and AOF is on. Each caller is answered only once the
script ran (and was fsynced); a failure of one delivery inside the script fails that caller only; anything
that goes wrong on the wire fails the whole batch with :class:`QueueUnavailable`.

**The raw callback is stored once**: in the task's delivery record (:mod:`veo_archiver.records.delivery`). The
job (envelope version 2) carries the event and the record's ``delivery_id``; the worker reads the raw callback
from the record when it archives it. A record that created a job is never dropped from a full list: the script
parks it under its own key instead.

**Conflicts and bounds.** The dedupe key remembers the accepted callback's result URLs (a digest): a later
delivery for the same (provider, task, status) with other URLs is recorded with the outcome ``conflict``, never
merged and never enqueued. A task keeps at most ``DELIVERY_BYTES_PER_TASK`` bytes of large raw deliveries
(bodies over ``SMALL_BODY_BYTES``); past them a record keeps the event and the body's size and sha256, not the
body. Small bodies cost no accounting: the cap of ``DELIVERIES_PER_TASK`` records bounds them.

**Cheap per-callback work.** The RQ job hash comes from a :class:`JobTemplate` built once per ``Intake``
from ``rq.Job.create`` + ``rq.scripts._build_hset_args`` (tests pin it against them); its constant fields are
literals in the script, and per callback only ``data`` (not compressed), ``description``, ``meta`` and the
timestamp travel. JSON is encoded once, compact, by orjson (:mod:`veo_archiver.jsontext`), and spliced into
the record and the job's envelope; commands are packed to RESP here; the record is sent once and the script
appends its ``outcome`` and ``job_id``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from veo_archiver import jsontext
from veo_archiver import redis_keys as keys
from veo_archiver.clock import iso
from veo_archiver.errors import ConfigError
from veo_archiver.event import TaskEvent
from veo_archiver.group_commit import GroupCommit
from veo_archiver.intake_script import (
    ARGV_PER_DELIVERY,
    DELIVERIES_PER_TASK,
    EVENTS_MAXLEN,
    KEYS_PER_DELIVERY,
    intake_script,
)
from veo_archiver.job_template import JobTemplate, build_job, bulk, command
from veo_archiver.redact import redact_bytes
from veo_archiver.settings import Settings

__all__ = [
    "DELIVERIES_PER_TASK",
    "EVENTS_MAXLEN",
    "SECRET_HEADERS",
    "Delivery",
    "Intake",
    "IntakeResult",
    "JobTemplate",
    "build_envelope",
    "build_job",
    "envelope_json",
    "intake_script",
    "iso",
    "record_prefix",
]

log = logging.getLogger(__name__)

#: headers never stored: credentials of any kind
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
#: bodies up to this size are always kept whole (the common case: no second record to send)
SMALL_BODY_BYTES = 16 * 1024

#: a record-only delivery's last four arguments (the job fields it does not have)
_NO_JOB = ("", b"", "", b"")


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery of a callback, as received."""

    body: bytes
    headers: Mapping[str, str]
    received_at: float
    remote: str | None = None
    path: str = ""

    def public_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS}

    def to_json(self, *, body: bool = True) -> dict[str, Any]:
        """The stored form; ``body=False`` keeps the raw body's size and digest only (see
        ``DELIVERY_BYTES_PER_TASK``)."""
        out: dict[str, Any] = {
            "received_at": iso(self.received_at),
            "remote": self.remote,
            "path": self.path,
            "headers": self.public_headers(),
        }
        if body:
            out["body"] = self.body.decode("utf-8", errors="replace")
        else:
            out["body"] = None
            out["body_omitted"] = {"bytes": len(self.body), "sha256": hashlib.sha256(self.body).hexdigest()}
        return out


def urls_digest(urls: tuple[str, ...] | list[str]) -> str:
    """What the dedupe key remembers of an accepted callback's result URLs, to tell a conflict."""
    return hashlib.sha256("\n".join(urls).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class IntakeResult:
    outcome: str  # accepted | duplicate | conflict | recorded | replayed
    job_id: str | None
    delivery_id: str


#: version 2: the raw callback is stored once, in the task's delivery record, which the job reads when it runs
#: (version 1 jobs, queued before, carry it in ``callback``; workers read both)
ENVELOPE_VERSION = 2


def build_envelope(event: TaskEvent, delivery: Delivery, delivery_id: str) -> dict[str, Any]:
    """The job's only argument: JSON-safe. The raw callback is not in it: it is stored once, in the delivery
    record ``delivery_id`` of the task's deliveries (:mod:`veo_archiver.records.delivery`), where the job
    reads it when it runs."""
    return {
        "v": ENVELOPE_VERSION,
        "delivery_id": delivery_id,
        "received_ts": delivery.received_at,
        "received_at": iso(delivery.received_at),
        "event": event.to_json(),
    }


def envelope_json(event_json: bytes, delivery: Delivery, delivery_id: str) -> bytes:
    """:func:`build_envelope` as JSON, from the event's JSON encoded once elsewhere."""
    return b"".join(
        (
            b'{"v":2,"delivery_id":',
            jsontext.string(delivery_id),
            b',"received_ts":',
            jsontext.dumpb(delivery.received_at),
            b',"received_at":',
            jsontext.string(iso(delivery.received_at)),
            b',"event":',
            event_json,
            b"}",
        )
    )


def record_prefix(event_json: bytes, callback_json: bytes, delivery_id: str, replayed_at: str | None) -> bytes:
    """The delivery record as JSON, without its closing brace: the script appends outcome and job id."""
    parts = [b'{"delivery_id":', jsontext.string(delivery_id), b',"event":', event_json, b',"callback":', callback_json]
    if replayed_at is not None:
        parts += (b',"replayed_at":', jsontext.string(replayed_at))
    return b"".join(parts)


class Intake:
    """Owns the receiver's async Redis client; built in the app's lifespan. Safe to share between the
    callbacks of one event loop (that is the point: they are committed together)."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._settings = settings
        self._redis = client
        self._template = JobTemplate(settings)
        self._lua = intake_script(settings, self._template)
        self._sha = hashlib.sha1(self._lua.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
        self._wait_aof = False
        self._probed = False
        self._server_version = ""
        self._waitaof = command("WAITAOF", 1, 0, int(settings.enqueue_timeout_s * 1000))
        self._script_load = command("SCRIPT", "LOAD", self._lua)
        # the one timer of a batch on the wire (connection from the pool, send, every reply, WAITAOF's own
        # timeout of enqueue_timeout_s included): past it, every caller of the batch gets QueueUnavailable
        self._batch_timeout = settings.enqueue_timeout_s * 2 + 1.0
        # what every batch's EVALSHA holds besides its deliveries: the command and the script, then (after the
        # number of keys) the constant keys KEYS[1..3]
        head: list[bytes] = []
        bulk(head, "EVALSHA")
        bulk(head, self._sha)
        self._evalsha_head = b"".join(head)
        constant: list[bytes] = []
        for key in (keys.rq_queue_key(settings.queue_name), keys.RQ_QUEUES_SET, keys.events_stream()):
            bulk(constant, key)
        self._constant_keys = b"".join(constant)
        self._writer = GroupCommit(
            client,
            pack=self._pack,
            batch_timeout_s=self._batch_timeout,
            script_load=self._script_load,
            waitaof=self._waitaof,
            durability=lambda: self._wait_aof if self._probed else None,
            before_batch=self._durability,
        )

    @property
    def batches(self) -> int:
        """Batches sent so far (for benchmarks and tests)."""
        return self._writer.batches

    @property
    def batched(self) -> int:
        """Scripts sent in them."""
        return self._writer.batched

    async def _durability(self) -> bool:
        """Whether this batch waits for WAITAOF; the first batch probes Redis if start() could not."""
        if not self._probed:
            await self._probe()
        return self._wait_aof

    @property
    def waits_for_aof(self) -> bool:
        return self._wait_aof

    async def start(self) -> None:
        """Probe the server once: version and persistence decide how an acknowledgement is made durable.

        If Redis cannot be reached now, the first batch probes it instead (so a receiver started while Redis
        was down still waits for WAITAOF once it is there)."""
        try:
            await self._probe()
        except redis.RedisError as exc:
            log.warning("redis not reachable at startup (%s); will retry per request", exc)

    async def _probe(self) -> None:
        server = await self._redis.info("server")
        persistence = await self._redis.info("persistence")
        self._server_version = str(server.get("redis_version", ""))
        version = tuple(int(p) for p in self._server_version.split(".")[:2] if p.isdigit())
        aof_on = str(persistence.get("aof_enabled", "0")) == "1"
        mode = self._settings.redis_durability
        supports = version >= (7, 2)
        if mode == "waitaof" and not (supports and aof_on):
            raise ConfigError(
                f"REDIS_DURABILITY=waitaof needs Redis >= 7.2 with appendonly yes "
                f"(server {self._server_version}, aof {'on' if aof_on else 'off'})"
            )
        self._wait_aof = mode != "none" and supports and aof_on
        self._probed = True
        if not aof_on:
            log.warning(
                "redis %s has AOF off: an acknowledged callback can be lost if Redis crashes "
                "(set appendonly yes; see README 'Durability')",
                self._server_version,
            )
        elif not self._wait_aof:
            log.info("redis %s: acknowledgements rely on its appendfsync policy", self._server_version)
        try:
            await self._redis.script_load(self._lua)  # saves the first batch a NOSCRIPT round trip
        except redis.RedisError as exc:
            log.warning("could not load the intake script (%s); will load it on first use", exc)

    async def submit(self, event: TaskEvent, delivery: Delivery, *, replay: bool = False) -> IntakeResult:
        """Record the delivery and, for a terminal status, enqueue its archive job once.

        ``replay=True`` is reserved to operators (``veo-archiver replay``): the job gets a fresh id
        (``<job id>-replay-<random>``) and is enqueued even though the (provider, task, status) was already
        accepted; the delivery is recorded with the outcome ``replayed`` and the dedupe key is not touched.
        Raises :class:`QueueUnavailable` when Redis cannot take it (or, with WAITAOF, did not fsync it).
        """
        delivery_id = os.urandom(16).hex()
        provider, task_id, status = event.provider, event.task_id, event.status.value
        # stored without any callback-URL token (useapi.net echoes ours in replyRef): veo_archiver/redact.py
        event_json = redact_bytes(jsontext.dumpb(event.to_json()))
        callback_json = jsontext.dumpb(delivery.to_json())
        terminal_job_id, dedupe_key, deliveries_key, bytes_key = keys.task_keys(provider, task_id, status)
        job_id = ""
        if event.status.terminal:
            job_id = terminal_job_id
            if replay:
                job_id = f"{job_id}-replay-{os.urandom(4).hex()}"
        replayed_at = iso(time.time()) if replay else None
        record = record_prefix(event_json, callback_json, delivery_id, replayed_at)
        compact = b""
        if len(delivery.body) > SMALL_BODY_BYTES:  # what is kept once the task's byte budget is spent
            compact = record_prefix(event_json, jsontext.dumpb(delivery.to_json(body=False)), delivery_id, replayed_at)
        packed_keys: list[bytes] = []
        for key in (dedupe_key, keys.rq_job_key(job_id or "none"), deliveries_key, bytes_key):
            bulk(packed_keys, key)
        args: list[str | bytes] = [
            job_id,
            "1" if replay else "0",
            record,
            provider,
            task_id,
            status,
            urls_digest(event.result_urls),
            compact,
        ]
        if job_id:
            args += self._template.values(
                envelope_json(event_json, delivery, delivery_id),
                provider=provider,
                task_id=task_id,
                status=status,
                delivery_id=delivery_id,
            )
        else:
            args += _NO_JOB
        packed_args: list[bytes] = []
        for arg in args:
            bulk(packed_args, arg)
        reply = await self._writer.commit((b"".join(packed_keys), b"".join(packed_args)))
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "callback " + outcome,
                extra={"provider": provider, "task_id": task_id, "job_id": job_id or None, "status": status},
            )
        return IntakeResult(outcome=outcome, job_id=job_id or None, delivery_id=delivery_id)

    def _pack(self, items: list[tuple[bytes, bytes]]) -> bytes:
        """One EVALSHA for a batch: the constant keys, then every delivery's keys, then every one's arguments."""
        n = len(items)
        numkeys = str(3 + KEYS_PER_DELIVERY * n).encode()
        return b"".join(
            [
                b"*%d\r\n" % (6 + (KEYS_PER_DELIVERY + ARGV_PER_DELIVERY) * n),  # EVALSHA sha numkeys 3 keys
                self._evalsha_head,
                b"$%d\r\n%s\r\n" % (len(numkeys), numkeys),
                self._constant_keys,
                *(packed_keys for packed_keys, _ in items),
                *(packed_args for _, packed_args in items),
            ]
        )

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except redis.RedisError:
            return False
