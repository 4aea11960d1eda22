"""Durable, deduplicated intake with group commit: the callbacks in flight share one Redis round trip.

One Lua script per callback, atomically: records the delivery (raw body + non-secret headers) for replay and
audit, appends it to the operators' event stream, and, unless the (provider, task, terminal status) was
already accepted, writes an RQ job hash *in RQ's own format* and pushes its id on the queue. An operator's
replay (``submit(..., replay=True)``) skips the dedupe check and enqueues a job under a fresh id, recorded
with the outcome ``replayed``.

**Group commit** (:mod:`veo_archiver.group_commit`): :meth:`Intake.submit` joins the batch of the current
turn of the event loop and awaits its own reply; one pipeline carries the batch, with one ``WAITAOF`` after it
when the server supports it and AOF is on. Each caller is answered only once its own script ran (and was
fsynced); anything that goes wrong on the wire fails the whole batch with :class:`QueueUnavailable`.

**Conflicts and bounds.** The dedupe key remembers the accepted callback's result URLs (a digest): a later
delivery for the same (provider, task, status) with other URLs is recorded with the outcome ``conflict``, never
merged and never enqueued. A task keeps at most ``DELIVERY_BYTES_PER_TASK`` bytes of raw deliveries; past
them a record keeps the event and the body's size and sha256, not the body.

**Cheap per-callback work.** The RQ job hash comes from a :class:`JobTemplate` built once per ``Intake``
from ``rq.Job.create`` + ``rq.scripts._build_hset_args`` (tests pin it field for field against them); its
constant fields are literals in the script, and per callback only ``data``, ``description``, ``meta`` and the
timestamp travel. Commands are packed to RESP here. The delivery record is
sent once: the script appends its ``outcome`` and ``job_id`` itself (the same JSON bytes as before). The
callback's JSON is encoded once and spliced into both the record and the job's envelope.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from veo_archiver import redis_keys as keys
from veo_archiver.clock import iso
from veo_archiver.errors import ConfigError
from veo_archiver.event import TaskEvent
from veo_archiver.group_commit import GroupCommit
from veo_archiver.job_template import JobTemplate, build_job, bulk, command
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
EVENTS_MAXLEN = 100_000
DELIVERIES_PER_TASK = 100
#: raw deliveries kept per task, in bytes: past it a delivery's record keeps everything but its raw body (30
#: replays of one signed callback padded to 900 KB once stored 28.5 MB for 30 days)
DELIVERY_BYTES_PER_TASK = 4 * 1024 * 1024
#: bodies up to this size are always kept whole (the common case: no second record to send)
SMALL_BODY_BYTES = 16 * 1024

_INTAKE_LUA = """
-- KEYS: 1 queue list, 2 rq:queues, 3 events stream, 4 dedupe, 5 job hash, 6 deliveries list, 7 the bytes of
--       deliveries stored for the task
-- ARGV: 1 job id (or '' for record-only), 2 '1' for an operator's replay (no dedupe check, the dedupe key is
--       left alone), 3 the delivery record: a JSON object without its closing brace (this script appends
--       "outcome" and "job_id"), 4 provider, 5 task id, 6 status, 7 the digest of the result URLs, 8 the
--       record without the raw body ('' when the body is small); with a job id: 9 created_at = enqueued_at,
--       10 data, 11 description, 12 meta (the job hash's other fields are constants, written in below)
local job_id = ARGV[1]
local outcome = 'recorded'
if job_id ~= '' then
  if ARGV[2] == '1' then
    outcome = 'replayed'
  else
    local accepted = redis.call('GET', KEYS[4])
    if accepted then
      -- the value is "<job id>|<URL digest>": the same task and status with other URLs is never merged
      local bar = string.find(accepted, '|', 1, true)
      if bar and string.sub(accepted, bar + 1) ~= ARGV[7] then
        outcome = 'conflict'
      else
        outcome = 'duplicate'
      end
    elseif redis.call('EXISTS', KEYS[5]) > 0 then
      outcome = 'duplicate'
    else
      outcome = 'accepted'
    end
  end
end
local jid = 'null'
if job_id ~= '' then
  jid = '"' .. job_id .. '"'
end
local stored = ARGV[3]
-- each task keeps at most %(per_task_bytes)d bytes of raw deliveries; past them, records keep no body
if redis.call('INCRBY', KEYS[7], #stored) > %(per_task_bytes)d and ARGV[8] ~= '' then
  redis.call('DECRBY', KEYS[7], #stored - #ARGV[8])
  stored = ARGV[8]
end
redis.call('EXPIRE', KEYS[7], '%(record_ttl)d')
local record = stored .. ', "outcome": "' .. outcome .. '", "job_id": ' .. jid .. '}'
if redis.call('RPUSH', KEYS[6], record) > %(per_task)d then
  redis.call('LTRIM', KEYS[6], -%(per_task)d, -1)
end
redis.call('EXPIRE', KEYS[6], '%(record_ttl)d')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '%(events_maxlen)d', '*', 'provider', ARGV[4], 'task_id', ARGV[5],
           'status', ARGV[6], 'outcome', outcome, 'job_id', job_id)
if outcome == 'accepted' then
  redis.call('SET', KEYS[4], job_id .. '|' .. ARGV[7], 'EX', '%(dedupe_ttl)d')
end
if outcome == 'accepted' or outcome == 'replayed' then
  %(job_hset)s
  redis.call('SADD', KEYS[2], KEYS[1])
  redis.call('RPUSH', KEYS[1], job_id)
end
return outcome
"""


def intake_script(settings: Settings, template: JobTemplate | None = None) -> str:
    """The intake's Lua script for these settings: TTLs, caps and the job hash's constant fields are part of
    its text (hence of its SHA), so that only what differs per callback travels."""
    template = template or JobTemplate(settings)
    return (
        _INTAKE_LUA.replace("%(per_task)d", str(DELIVERIES_PER_TASK))
        .replace("%(per_task_bytes)d", str(DELIVERY_BYTES_PER_TASK))
        .replace("%(record_ttl)d", str(int(settings.raw_callback_ttl_s)))
        .replace("%(events_maxlen)d", str(EVENTS_MAXLEN))
        .replace("%(dedupe_ttl)d", str(int(settings.dedupe_ttl_s)))
        .replace("%(job_hset)s", template.lua_hset("KEYS[5]", first_argv=9))
    )


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


def build_envelope(event: TaskEvent, delivery: Delivery, delivery_id: str) -> dict[str, Any]:
    """The job's only argument: JSON-safe, self-contained (the worker needs nothing else from Redis)."""
    return {
        "v": 1,
        "delivery_id": delivery_id,
        "received_ts": delivery.received_at,
        "event": event.to_json(),
        "callback": delivery.to_json(),
    }


def envelope_json(event_json: str, callback_json: str, delivery: Delivery, delivery_id: str) -> str:
    """``json.dumps(build_envelope(...))`` from the event's and the callback's JSON, encoded once elsewhere."""
    return (
        f'{{"v": 1, "delivery_id": {json.dumps(delivery_id)}, "received_ts": {json.dumps(delivery.received_at)}, '
        f'"event": {event_json}, "callback": {callback_json}}}'
    )


def record_prefix(event_json: str, callback_json: str, delivery_id: str, replayed_at: str | None) -> str:
    """The delivery record as JSON, without its closing brace: the script appends outcome and job id."""
    text = f'{{"delivery_id": {json.dumps(delivery_id)}, "event": {event_json}, "callback": {callback_json}'
    if replayed_at is not None:
        text += f', "replayed_at": {json.dumps(replayed_at)}'
    return text


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
        # what every EVALSHA starts with: the command, the script, and the constant keys (KEYS[1..3])
        head: list[bytes] = []
        for arg in ("EVALSHA", self._sha, "7", keys.rq_queue_key(settings.queue_name), keys.RQ_QUEUES_SET,
                    keys.events_stream()):  # fmt: skip
            bulk(head, arg)
        self._evalsha_head = b"".join(head)
        self._writer = GroupCommit(
            client,
            batch_timeout_s=self._batch_timeout,
            script_load=self._script_load,
            waitaof=self._waitaof,
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
        delivery_id = uuid.uuid4().hex
        provider, task_id, status = event.provider, event.task_id, event.status.value
        event_json = json.dumps(event.to_json())
        callback_json = json.dumps(delivery.to_json())
        job_id = ""
        if event.status.terminal:
            job_id = keys.job_id(provider, task_id, status)
            if replay:
                job_id = f"{job_id}-replay-{uuid.uuid4().hex[:8]}"
        replayed_at = iso(time.time()) if replay else None
        record = record_prefix(event_json, callback_json, delivery_id, replayed_at)
        compact = ""
        if len(delivery.body) > SMALL_BODY_BYTES:  # what is kept once the task's byte budget is spent
            compact = record_prefix(event_json, json.dumps(delivery.to_json(body=False)), delivery_id, replayed_at)
        # EVALSHA sha 7 <3 constant keys> dedupe job deliveries bytes | job_id replay record provider task status
        # urls compact [job]
        args: list[str | bytes] = [
            keys.dedupe_key(provider, task_id, status),
            keys.rq_job_key(job_id or "none"),
            keys.deliveries_key(provider, task_id),
            keys.delivery_bytes_key(provider, task_id),
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
                envelope_json(event_json, callback_json, delivery, delivery_id),
                provider=provider,
                task_id=task_id,
                status=status,
                delivery_id=delivery_id,
            )
        packed = [b"*%d\r\n" % (6 + len(args)), self._evalsha_head]  # EVALSHA, sha, numkeys, 3 constant keys
        for arg in args:
            bulk(packed, arg)
        reply = await self._writer.commit(b"".join(packed))
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "callback " + outcome,
                extra={"provider": provider, "task_id": task_id, "job_id": job_id or None, "status": status},
            )
        return IntakeResult(outcome=outcome, job_id=job_id or None, delivery_id=delivery_id)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except redis.RedisError:
            return False
