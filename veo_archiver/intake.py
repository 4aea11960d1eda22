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

**One wire format** (:mod:`veo_archiver.intake_format`): the record, the job's envelope and the script's
KEYS/ARGV layout are declared there and encoded by its functions only. The job (envelope version 3) carries the
event and its ``delivery_id``; the delivery that created it also stores its record under a key of its own,
where the job reads the raw callback, so the task's audit list is trimmed freely.

**Conflicts and bounds.** The dedupe key remembers the accepted callback's result URLs (a digest): a later
delivery for the same (provider, task, status) with other URLs is recorded with the outcome ``conflict``, never
merged and never enqueued. A task keeps at most ``DELIVERY_BYTES_PER_TASK`` bytes of large records (whose
stored callback, body and headers, is over ``SMALL_CALLBACK_BYTES``); past them a record keeps the event and
the body's size and sha256, not the body (nor large headers). Small callbacks cost no accounting: the cap of
``DELIVERIES_PER_TASK`` records bounds them.

**Cheap per-callback work.** The RQ job hash comes from a :class:`JobTemplate` built once per ``Intake``
(tests pin it against RQ); its constant fields are literals in the script, and per callback only ``data`` (not
compressed), ``description``, ``meta`` and the timestamp travel. JSON is encoded once, compact, by orjson; a
batch is packed by redis-py's public ``Connection.pack_command`` (hiredis's C packer when installed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.connection import Connection

from veo_archiver import jsontext
from veo_archiver import redis_keys as keys
from veo_archiver.clock import iso
from veo_archiver.errors import ConfigError
from veo_archiver.event import TaskEvent
from veo_archiver.group_commit import GroupCommit
from veo_archiver.intake_format import (
    LAYOUT,
    SECRET_HEADERS,
    Delivery,
    ScriptLayout,
    encode_envelope,
    encode_record,
)
from veo_archiver.intake_script import DELIVERIES_PER_TASK, EVENTS_MAXLEN, intake_script
from veo_archiver.job_template import JobTemplate, build_job
from veo_archiver.redact import redact_bytes
from veo_archiver.settings import Settings

__all__ = [
    "DELIVERIES_PER_TASK",
    "EVENTS_MAXLEN",
    "SECRET_HEADERS",
    "SMALL_CALLBACK_BYTES",
    "Delivery",
    "Intake",
    "IntakeResult",
    "JobTemplate",
    "build_job",
    "intake_script",
    "iso",
]

log = logging.getLogger(__name__)

#: a delivery whose stored callback (body and headers, as JSON) is up to this size is always kept whole and
#: costs no byte accounting (the common case: no compact form to send)
SMALL_CALLBACK_BYTES = 16 * 1024

#: a record-only delivery's job arguments (the job fields it does not have)
_NO_JOB: Mapping[str, str | bytes] = {"created_at": "", "data": b"", "description": "", "meta": b""}


class Packer:
    """RESP through redis-py's public packer, ``Connection.pack_command``: the sync connection's uses hiredis's
    C packer when hiredis is installed (the asyncio connection's is pure Python, about three times slower per
    callback: bench/intake_micro.py). Building a ``Connection`` opens no socket."""

    def __init__(self) -> None:
        factory: Any = Connection  # untyped in redis-py
        self._connection = factory()

    def pack(self, *args: str | bytes | int) -> list[bytes]:
        packed: list[bytes] = self._connection.pack_command(*args)
        return packed


def urls_digest(urls: tuple[str, ...] | list[str]) -> str:
    """What the dedupe key remembers of an accepted callback's result URLs, to tell a conflict."""
    return hashlib.sha256("\n".join(urls).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class IntakeResult:
    outcome: str  # accepted | duplicate | conflict | recorded | replayed
    job_id: str | None
    delivery_id: str


class Intake:
    """Owns the receiver's async Redis client; built in the app's lifespan. Safe to share between the
    callbacks of one event loop (that is the point: they are committed together). ``layout`` is the script's
    KEYS/ARGV layout (tests give another one to see the script follow it); ``clock`` (monotonic seconds) says
    how long a connection sat idle, so tests move it instead of sleeping."""

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        layout: ScriptLayout = LAYOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._redis = client
        self._layout = layout
        self._template = JobTemplate(settings)
        self._lua = intake_script(settings, self._template, layout)
        self._sha = hashlib.sha1(self._lua.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
        self._wait_aof = False
        self._probed = False
        self._server_version = ""
        self._packer = Packer()
        self._constant_keys = layout.constant_keys_of(
            {
                "queue": keys.rq_queue_key(settings.queue_name),
                "queues": keys.RQ_QUEUES_SET,
                "events": keys.events_stream(),
            }
        )
        # the one timer of a batch on the wire (connection from the pool, send, every reply, WAITAOF's own
        # timeout of enqueue_timeout_s included): past it, every caller of the batch gets QueueUnavailable
        self._batch_timeout = settings.enqueue_timeout_s * 2 + 1.0
        self._writer = GroupCommit(
            client,
            pack=self._pack,
            batch_timeout_s=self._batch_timeout,
            script_load=self._packer.pack("SCRIPT", "LOAD", self._lua),
            waitaof=self._packer.pack("WAITAOF", 1, 0, int(settings.enqueue_timeout_s * 1000)),
            ping=self._packer.pack("PING"),
            durability=lambda: self._wait_aof if self._probed else None,
            before_batch=self._durability,
            clock=clock,
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
        record = encode_record(delivery_id, event_json, callback_json, job_id=job_id or None, replayed_at=replayed_at)
        compact = b""
        if len(callback_json) > SMALL_CALLBACK_BYTES:  # what is kept once the task's byte budget is spent
            compact_json = jsontext.dumpb(delivery.to_json(compact=True))
            compact = encode_record(
                delivery_id, event_json, compact_json, job_id=job_id or None, replayed_at=replayed_at
            )
        job: Mapping[str, str | bytes] = _NO_JOB
        if job_id:
            stamp, data, description, meta = self._template.values(
                encode_envelope(delivery_id, delivery.received_at, event_json),
                provider=provider,
                task_id=task_id,
                status=status,
                delivery_id=delivery_id,
            )
            job = {"created_at": stamp, "data": data, "description": description, "meta": meta}  # JOB_ARGV
        layout = self._layout
        item = (
            layout.keys_of(
                {
                    "dedupe": dedupe_key,
                    "job": keys.rq_job_key(job_id or "none"),
                    "deliveries": deliveries_key,
                    "budget": bytes_key,
                    "record": keys.delivery_record_key(delivery_id),
                }
            ),
            layout.argv_of(
                {
                    "job_id": job_id,
                    "replay": "1" if replay else "0",
                    "record": record,
                    "provider": provider,
                    "task_id": task_id,
                    "status": status,
                    "urls": urls_digest(event.result_urls),
                    "compact": compact,
                    **job,
                }
            ),
        )
        reply = await self._writer.commit(item)
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "callback " + outcome,
                extra={"provider": provider, "task_id": task_id, "job_id": job_id or None, "status": status},
            )
        return IntakeResult(outcome=outcome, job_id=job_id or None, delivery_id=delivery_id)

    def _pack(self, items: list[tuple[tuple[str, ...], tuple[str | bytes, ...]]]) -> list[bytes]:
        """One EVALSHA for a batch: the constant keys, then every delivery's keys, then every one's arguments."""
        return self._packer.pack(
            "EVALSHA",
            self._sha,
            len(self._constant_keys) + len(self._layout.keys) * len(items),
            *self._constant_keys,
            *chain.from_iterable(item_keys for item_keys, _ in items),
            *chain.from_iterable(item_argv for _, item_argv in items),
        )

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except redis.RedisError:
            return False
