"""Durable, deduplicated intake: one Redis round trip per callback, without blocking the event loop.

A Lua script, atomically: records the delivery (raw body + non-secret headers) for replay and audit,
appends it to the operators' event stream, and, unless the (provider, task, terminal status) was already
accepted, writes an RQ job hash *in RQ's own format* (built by ``rq.Job`` itself, no I/O) and pushes its
id on the queue. When the server supports ``WAITAOF`` and AOF is on, the same pipeline waits for the
write to reach the AOF on disk before the receiver answers 200. An operator's replay
(``submit(..., replay=True)``) skips the dedupe check and enqueues a job under a fresh id, recorded with
the outcome ``replayed``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from rq.job import Job, JobStatus, Retry
from rq.scripts import _build_hset_args
from rq.serializers import JSONSerializer

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import ConfigError, QueueUnavailable
from veo_archiver.event import TaskEvent
from veo_archiver.settings import Settings

log = logging.getLogger(__name__)

#: headers never stored: credentials of any kind
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
EVENTS_MAXLEN = 100_000
DELIVERIES_PER_TASK = 100

_INTAKE_LUA = """
-- KEYS: 1 dedupe, 2 job hash, 3 queue list, 4 rq:queues, 5 deliveries list, 6 events stream
-- ARGV: 1 job id (or '' for record-only), 2 dedupe ttl, 3 record ttl, 4 record if accepted (or replayed),
--       5 record if duplicate, 6 events maxlen, 7 provider, 8 task id, 9 status, 10 '1' for an operator's
--       replay (no dedupe check, the dedupe key is left alone), 11.. job HSET pairs
local outcome = 'recorded'
local record = ARGV[4]
if ARGV[1] ~= '' then
  if ARGV[10] == '1' then
    outcome = 'replayed'
  elseif redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
    outcome = 'duplicate'
    record = ARGV[5]
  else
    outcome = 'accepted'
  end
end
redis.call('RPUSH', KEYS[5], record)
redis.call('LTRIM', KEYS[5], -%(per_task)d, -1)
redis.call('EXPIRE', KEYS[5], ARGV[3])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'provider', ARGV[7], 'task_id', ARGV[8],
           'status', ARGV[9], 'outcome', outcome, 'job_id', ARGV[1])
if outcome == 'accepted' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
if outcome == 'accepted' or outcome == 'replayed' then
  redis.call('HSET', KEYS[2], unpack(ARGV, 11))
  redis.call('SADD', KEYS[4], KEYS[3])
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
return outcome
""".replace("%(per_task)d", str(DELIVERIES_PER_TASK))


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

    def to_json(self) -> dict[str, Any]:
        return {
            "received_at": iso(self.received_at),
            "remote": self.remote,
            "path": self.path,
            "headers": self.public_headers(),
            "body": self.body.decode("utf-8", errors="replace"),
        }


@dataclass(frozen=True)
class IntakeResult:
    outcome: str  # accepted | duplicate | recorded | replayed
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


def build_job(settings: Settings, job_id: str, envelope: dict[str, Any]) -> Job:
    """An RQ job built by RQ itself, in memory; ``_build_hset_args`` gives the exact hash RQ would write."""
    event = envelope["event"]
    job = Job.create(
        redis_keys.ARCHIVE_JOB,
        kwargs={"envelope": envelope},
        connection=_OFFLINE_REDIS,
        id=job_id,
        timeout=settings.job_timeout_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.failure_ttl_s,
        retry=Retry(max=len(settings.retry_intervals_s), interval=list(settings.retry_intervals_s)),
        serializer=JSONSerializer,
        description=f"archive {event['provider']}:{event['task_id']} ({event['status']})",
        meta={"provider": event["provider"], "task_id": event["task_id"], "delivery_id": envelope["delivery_id"]},
        origin=settings.queue_name,
    )
    job.redis_server_version = None
    job.enqueued_at = datetime.now(UTC).replace(tzinfo=None)
    job._status = JobStatus.QUEUED
    return job


def _first_outcome(job_id: str, replay: bool) -> str:
    if not job_id:
        return "recorded"
    return "replayed" if replay else "accepted"


# Job.create needs a connection object to bind to; it performs no I/O with it.
_OFFLINE_REDIS = redis.Redis(host="127.0.0.1", port=1)


class Intake:
    """Owns the receiver's async Redis client; built in the app's lifespan."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._settings = settings
        self._redis = client
        self._script = client.register_script(_INTAKE_LUA)
        self._wait_aof = False
        self._server_version = ""

    @property
    def waits_for_aof(self) -> bool:
        return self._wait_aof

    async def start(self) -> None:
        """Probe the server once: version and persistence decide how an acknowledgement is made durable."""
        try:
            server = await self._redis.info("server")
            persistence = await self._redis.info("persistence")
        except redis.RedisError as exc:
            log.warning("redis not reachable at startup (%s); will retry per request", exc)
            return
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
        if not aof_on:
            log.warning(
                "redis %s has AOF off: an acknowledged callback can be lost if Redis crashes "
                "(set appendonly yes; see README 'Durability')",
                self._server_version,
            )
        elif not self._wait_aof:
            log.info("redis %s: acknowledgements rely on its appendfsync policy", self._server_version)

    async def submit(self, event: TaskEvent, delivery: Delivery, *, replay: bool = False) -> IntakeResult:
        """Record the delivery and, for a terminal status, enqueue its archive job once.

        ``replay=True`` is reserved to operators (``veo-archiver replay``): the job gets a fresh id
        (``<job id>-replay-<random>``) and is enqueued even though the (provider, task, status) was already
        accepted; the delivery is recorded with the outcome ``replayed`` and the dedupe key is not touched.
        """
        delivery_id = uuid.uuid4().hex
        envelope = build_envelope(event, delivery, delivery_id)
        record: dict[str, Any] = {
            "delivery_id": delivery_id,
            "event": event.to_json(),
            "callback": envelope["callback"],
        }
        if replay:
            record["replayed_at"] = iso(time.time())
        job_args: list[Any] = []
        job_id = ""
        if event.status.terminal:
            job_id = redis_keys.job_id(event.provider, event.task_id, event.status.value)
            if replay:
                job_id = f"{job_id}-replay-{uuid.uuid4().hex[:8]}"
            job = build_job(self._settings, job_id, envelope)
            job_args = _build_hset_args(job)
        status = event.status.value
        args = [
            job_id,
            self._settings.dedupe_ttl_s,
            self._settings.raw_callback_ttl_s,
            json.dumps({**record, "outcome": _first_outcome(job_id, replay), "job_id": job_id or None}),
            json.dumps({**record, "outcome": "duplicate", "job_id": job_id}),
            EVENTS_MAXLEN,
            event.provider,
            event.task_id,
            status,
            "1" if replay else "0",
            *job_args,
        ]
        script_keys = [
            redis_keys.dedupe_key(event.provider, event.task_id, status),
            redis_keys.rq_job_key(job_id or "none"),
            redis_keys.rq_queue_key(self._settings.queue_name),
            redis_keys.RQ_QUEUES_SET,
            redis_keys.deliveries_key(event.provider, event.task_id),
            redis_keys.events_stream(),
        ]
        started = time.perf_counter()
        try:
            if self._wait_aof:
                replies = await self._evalsha_then_waitaof(script_keys, args)
            else:
                # one round trip: EVALSHA (redis-py's Script reloads the script once on NOSCRIPT); a pipeline
                # holding a Script would first send SCRIPT EXISTS on a round trip of its own, every time
                replies = [await self._script(keys=script_keys, args=args)]
        except redis.RedisError as exc:
            raise QueueUnavailable(f"redis could not take the job: {exc}") from exc
        outcome = replies[0].decode() if isinstance(replies[0], bytes) else str(replies[0])
        if self._wait_aof and int(replies[1][0]) < 1:
            raise QueueUnavailable("redis did not fsync the job to its AOF in time")
        log.info(
            "callback %s",
            outcome,
            extra={
                "provider": event.provider,
                "task_id": event.task_id,
                "job_id": job_id or None,
                "status": status,
                "enqueue_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return IntakeResult(outcome=outcome, job_id=job_id or None, delivery_id=delivery_id)

    async def _evalsha_then_waitaof(self, script_keys: list[str], args: list[Any]) -> list[Any]:
        timeout_ms = int(self._settings.enqueue_timeout_s * 1000)
        for attempt in (1, 2):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVALSHA", self._script.sha, len(script_keys), *script_keys, *args)
                pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
                replies = await pipe.execute(raise_on_error=False)
            if isinstance(replies[0], redis.exceptions.NoScriptError) and attempt == 1:
                await self._redis.script_load(_INTAKE_LUA)  # the server lost its script cache (a restart)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return list(replies)
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except redis.RedisError:
            return False
