"""Benchmark (prototype): "ingest, then dispatch" against the shipped intake, in one run, one redis-server.

    .venv/bin/python bench/ingest_dispatch.py                         # 2 s runs, repeat 2, crash check: ~40 s
    .venv/bin/python bench/ingest_dispatch.py --seconds 3 --repeat 3 --commandstats
    .venv/bin/python bench/ingest_dispatch.py --no-crash-check --no-dispatch-script

It imports this checkout's ``veo_archiver`` and ``tests/servers.py`` (``BENCH_REPO``, as for the other
benchmarks, would name another checkout, which must have the same intake interfaces); the header prints which
``intake.py`` was loaded.

**The shipped design** (row ``shipped Intake``: ``veo_archiver.intake.Intake``): group commit
(``veo_archiver.group_commit.GroupCommit``), ONE EVALSHA per batch; the script loops over the batch's
deliveries and, for each one, dedupes, records the delivery (the raw callback, stored once), XADDs the events
stream and writes the RQ job hash (envelope version 2: no raw callback in the job; RQ's empty fields left out)
+ pushes it on the queue, all before the callback is acknowledged.

**The prototype** (this file only): the ack path ("ingest") encodes the callback as ``Intake.submit`` does
(compact JSON bytes from ``jsontext.dumpb``, the event redacted, ``record_prefix``), does the dedupe check
(``SET dedupe NX GET EX``, same outcomes as the shipped script: accepted / duplicate / conflict) and XADDs the
delivery, once, to the ingest stream ``veo:intake``, with the same ``GroupCommit`` (same batching, held
connections, eager writes), ONE EVALSHA per batch (KEYS 2 and ARGV 8 per callback, against the shipped
script's 4 and 12). A dispatcher (a synchronous loop in a subprocess, its CPU measured apart) reads the stream
with a consumer group (``XREADGROUP GROUP dispatch d1 COUNT 256 BLOCK 100``) and, per batch, writes what the
shipped script writes besides the dedupe key: the job hash (``JobTemplate.values`` on the v2 ``envelope_json``,
RQ's empty fields left out as ``JobTemplate.lua_hset`` does), SADD rq:queues, RPUSH queue, RPUSH + EXPIRE
of the delivery record on the task's deliveries list (the record holds the raw callback, once; the same bytes
as the shipped record; no per-task byte counter: every body here is small, and small bodies are not counted),
XADD events; then it XACKs + XDELs the entries.
Two dispatchers, one row each:

- ``ingest + disp MULTI``: the batch in one MULTI/EXEC (every command and the whole job hash travel); a
  deliveries list past ``DELIVERIES_PER_TASK`` is trimmed after the EXEC by a small script that parks the
  records of jobs as the shipped script does (a crash in between leaves the list long until its next push);
- ``ingest + disp script`` (``--dispatch-script``, default on): the batch in ONE EVALSHA; the job hash's
  constant fields are literals in that script (as in the shipped one), only the varying ones travel, and
  the list is trimmed (and job records parked) atomically.

Not prototyped: operator replays, and the compact record of bodies over 16 KiB once a task's byte budget is
spent (every body here is small). The client and the dispatcher use redis-py's pure-Python reply parser when
hiredis is not installed (the header says): that is part of their CPU.

**Measured**, per design, ``--repeat`` times (medians; the order of the designs alternates between repeats),
on the same redis-server (AOF on, appendfsync everysec, auto-rewrite off; FLUSHALL + BGREWRITEAOF before each
run): ``--concurrency`` coroutines submit distinct signed kie.ai callbacks (built once, reused by every run)
for ``--seconds`` (as ``intake_micro.py``'s ``drive``). Columns, per callback: ``ack cb/s`` callbacks
acknowledged per second; ``client us`` the ack path's process CPU (``time.process_time``); ``redis ack``
redis-server's CPU (``INFO cpu``) meanwhile, with no dispatcher running; ``batch`` callbacks per batch; then
the dispatch phase alone over that backlog: ``disp cb/s``, ``dispatcher us`` (the dispatcher's own CPU),
``redis disp`` (redis-server's CPU); ``redis total`` = redis ack + redis disp; ``all CPU us`` = client +
dispatcher + redis total; ``mem B/cb``, ``AOF B/cb``: the ``used_memory`` and ``aof_current_size`` deltas once
everything is dispatched, per submission. ``--commandstats`` prints redis-server's time per command per
callback for each phase of the last repetition.

**Checked** (the run fails loudly otherwise): every distinct callback is ``accepted``; resubmitting a few gives
``duplicate``, the same tasks with other result URLs ``conflict``; afterwards the queue holds exactly the accepted
job ids, the events stream one entry per submission, the deliveries lists the right outcomes, the ingest stream
and its pending list are empty; one job hash equals, field for field (the timestamps aside), what the shipped
script writes (``JobTemplate.hset_args`` of the v2 ``envelope_json``, less RQ's empty fields), its delivery
record the shipped record byte for byte, and ``records.delivery.find`` gives that job its raw callback.

``--crash-check`` (default on): backlog of ``--crash-callbacks`` callbacks, dispatcher d1 (MULTI) SIGKILLed
mid-run, d2 claims d1's pending entries (``XAUTOCLAIM ... 0 0-0 COUNT 256`` until the cursor is 0-0) and drains
the rest; the queue must then hold exactly one job per accepted callback, the events stream one entry each,
and the pending list and the ingest stream be empty.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from benchlib import CODE_ROOT, machine_description

# the project: this checkout (or BENCH_REPO's: benchlib, imported above, put it first on sys.path)
from veo_archiver import jsontext
from veo_archiver import redis_keys as keys
from veo_archiver.group_commit import GroupCommit
from veo_archiver.intake import (
    DELIVERIES_PER_TASK,
    EVENTS_MAXLEN,
    Delivery,
    Intake,
    IntakeResult,
    envelope_json,
    record_prefix,
    urls_digest,
)
from veo_archiver.intake_script import TRIM_LOOP
from veo_archiver.job_template import JobTemplate, bulk, command
from veo_archiver.records import delivery as delivery_records
from veo_archiver.redact import redact_bytes
from veo_archiver.settings import Settings

log = logging.getLogger("veo_archiver.bench_ingest")

INGEST_STREAM = "veo:intake"
GROUP = "dispatch"
READ_COUNT = 256
ARGV_STRIDE = 8  # job id, provider, task id, status, urls digest, received_ts, event end, record
KEYS_STRIDE = 2  # dedupe key, job hash key

#: where the delivery id and the event's JSON start in a record (``record_prefix``'s own layout, probed once)
_PROBE_ID = "0" * 32
_PROBE = record_prefix(b"\x00", b"", _PROBE_ID, None)
DELIVERY_ID_AT = _PROBE.index(_PROBE_ID.encode())
EVENT_AT = _PROBE.index(b"\x00")

#: the ack path, one EVALSHA per batch (group commit). KEYS: 1 ingest stream, then 2 per callback (dedupe key,
#: job hash); ARGV: 8 per callback (ARGV_STRIDE); returns the outcomes in order
INGEST_LUA = """
-- one callback: the shipped script's dedupe decision, then the delivery on the ingest stream (one copy)
local function ingest(stream, dedupe, job, job_id, provider, task_id, status, urls, ts, event_end, record)
  local outcome = 'recorded'
  if job_id ~= '' then
    -- the value is "<job id>|<URL digest>": the same task and status with other URLs is a conflict
    local old = redis.call('SET', dedupe, job_id .. '|' .. urls, 'NX', 'GET', 'EX', '%(dedupe_ttl)d')
    if old then
      local bar = string.find(old, '|', 1, true)
      if bar and string.sub(old, bar + 1) ~= urls then
        outcome = 'conflict'
      else
        outcome = 'duplicate'
      end
    elseif redis.call('EXISTS', job) > 0 then
      redis.call('DEL', dedupe)  -- the shipped script sets no dedupe key in this case either
      outcome = 'duplicate'
    else
      outcome = 'accepted'
    end
  end
  redis.call('XADD', stream, '*', 'outcome', outcome, 'job_id', job_id, 'provider', provider,
             'task_id', task_id, 'status', status, 'ts', ts, 'event_end', event_end, 'record', record)
  return outcome
end

local out = {}
for i = 0, #ARGV / 8 - 1 do
  local a, k = i * 8, 1 + i * 2
  out[i + 1] = ingest(KEYS[1], KEYS[k + 1], KEYS[k + 2], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
                      ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8])
end
return out
"""


def fail(message: str) -> None:
    raise SystemExit(f"FAILED: {message}")


# ---------------------------------------------------------------------------------------------------------
# ingest: the ack path


class Ingest:
    """The ack path of "ingest, then dispatch", with the interface of ``Intake`` (``start``, ``submit``,
    counters) and the shipped intake's own batching: the same ``GroupCommit`` (one batch per loop turn or
    ``FLUSH_AT`` callbacks, ``MAX_BATCH`` per batch, ``MAX_BATCHES_IN_FLIGHT`` on the wire, held connections,
    WAITAOF after a batch where the shipped intake would use it), only the packed command differs."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._settings = settings
        self._redis = client
        self._lua = INGEST_LUA.replace("%(dedupe_ttl)d", str(int(settings.dedupe_ttl_s)))
        sha = hashlib.sha1(self._lua.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
        head: list[bytes] = []
        for part in ("EVALSHA", sha):
            bulk(head, part)
        self._evalsha_head = b"".join(head)
        stream: list[bytes] = []
        bulk(stream, INGEST_STREAM)
        self._stream = stream[0] + stream[1] + stream[2]
        self._wait_aof: bool | None = None
        self._writer = GroupCommit(
            client,
            pack=self._pack,
            batch_timeout_s=settings.enqueue_timeout_s * 2 + 1.0,
            script_load=command("SCRIPT", "LOAD", self._lua),
            waitaof=command("WAITAOF", 1, 0, int(settings.enqueue_timeout_s * 1000)),
            durability=lambda: self._wait_aof,
            before_batch=self._probe,
        )

    @property
    def batches(self) -> int:
        return self._writer.batches

    @property
    def batched(self) -> int:
        return self._writer.batched

    async def _probe(self) -> bool:
        """WAITAOF after each batch where the shipped intake would use it (Redis >= 7.2 with AOF on)."""
        server = await self._redis.info("server")
        persistence = await self._redis.info("persistence")
        version = tuple(int(p) for p in str(server.get("redis_version", "")).split(".")[:2] if p.isdigit())
        aof_on = str(persistence.get("aof_enabled", "0")) == "1"
        self._wait_aof = self._settings.redis_durability != "none" and version >= (7, 2) and aof_on
        return self._wait_aof

    async def start(self) -> None:
        await self._probe()
        await self._redis.script_load(self._lua)

    def _pack(self, items: list[tuple[bytes, bytes]]) -> bytes:
        n = len(items)
        numkeys = b"%d" % (1 + KEYS_STRIDE * n)
        return b"".join(
            [
                b"*%d\r\n" % (4 + (KEYS_STRIDE + ARGV_STRIDE) * n),  # EVALSHA sha numkeys stream
                self._evalsha_head,
                b"$%d\r\n%s\r\n" % (len(numkeys), numkeys),
                self._stream,
                *(packed_keys for packed_keys, _ in items),
                *(packed_args for _, packed_args in items),
            ]
        )

    async def submit(self, event: Any, delivery: Any) -> IntakeResult:
        """The shipped ``Intake.submit``'s encoding (compact JSON bytes, the event redacted once, the record
        prefix), then the dedupe check and one XADD; no job, no record, no event yet."""
        delivery_id = os.urandom(16).hex()
        provider, task_id, status = event.provider, event.task_id, event.status.value
        event_json = redact_bytes(jsontext.dumpb(event.to_json()))
        record = record_prefix(event_json, jsontext.dumpb(delivery.to_json()), delivery_id, None)
        terminal_job_id, dedupe_key, _, _ = keys.task_keys(provider, task_id, status)
        job_id = terminal_job_id if event.status.terminal else ""
        packed_keys: list[bytes] = []
        bulk(packed_keys, dedupe_key)
        bulk(packed_keys, keys.rq_job_key(job_id or "none"))
        packed_args: list[bytes] = []
        for arg in (job_id, provider, task_id, status, urls_digest(event.result_urls),
                    jsontext.dumpb(delivery.received_at), b"%d" % (EVENT_AT + len(event_json)), record):  # fmt: skip
            bulk(packed_args, arg)
        reply = await self._writer.commit((b"".join(packed_keys), b"".join(packed_args)))
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "callback " + outcome,
                extra={"provider": provider, "task_id": task_id, "job_id": job_id or None, "status": status},
            )
        return IntakeResult(outcome=outcome, job_id=job_id or None, delivery_id=delivery_id)


# ---------------------------------------------------------------------------------------------------------
# dispatch: a synchronous loop, run as its own process (``--dispatcher NAME``)


def envelope_from_entry(record: bytes, ts: bytes, event_end: bytes) -> tuple[str, bytes]:
    """(delivery id, the job's envelope): ``envelope_json`` itself, from the event's JSON sliced out of the
    record (the ingest entry says where it ends) and the received time the entry carries."""
    delivery_id = record[DELIVERY_ID_AT : DELIVERY_ID_AT + 32].decode()
    received = Delivery(body=b"", headers={}, received_at=float(ts))
    return delivery_id, envelope_json(record[EVENT_AT : int(event_end)], received, delivery_id)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _raw(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


#: the MULTI/EXEC dispatcher's trim of a list RPUSH reported too long, after the EXEC: KEYS[1] the list
_TRIM_LUA = "local kept = redis.call('LLEN', KEYS[1])\n" + TRIM_LOOP.replace("%(list)s", "KEYS[1]")

#: the dispatcher as one script per batch (``--dispatch-mode script``): KEYS 1 queue, 2 rq:queues, 3 events
#: stream, 4 ingest stream, then 3 per entry (job hash, byte counter, deliveries list); ARGV 11 per entry
#: (entry id, outcome, job id, provider, task id, status, record prefix, then for an accepted one the job
#: hash's varying fields in ``JobTemplate.values``' order: created_at = enqueued_at, data, description, meta);
#: the hash's constant fields are literals (``JobTemplate.lua_hset``, RQ's empty ones left out), as in the
#: shipped script
_DISPATCH_LUA = """
local ids = {}
local queued = false
for i = 0, (#KEYS - 4) / 3 - 1 do
  local a, k = i * 11, 4 + i * 3
  local outcome, job_id, record = ARGV[a + 2], ARGV[a + 3], ARGV[a + 7]
  if outcome == 'accepted' then
    %(job_hset)s
    redis.call('RPUSH', KEYS[1], job_id)
    queued = true
  end
  local jid = 'null'
  if job_id ~= '' then
    jid = '"' .. job_id .. '"'
  end
  local kept = redis.call('RPUSH', KEYS[k + 3], record .. ',"outcome":"' .. outcome .. '","job_id":' .. jid .. '}')
  %(trim_loop)s
  redis.call('EXPIRE', KEYS[k + 3], '%(record_ttl)d')
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '%(events_maxlen)d', '*', 'provider', ARGV[a + 4],
             'task_id', ARGV[a + 5], 'status', ARGV[a + 6], 'outcome', outcome, 'job_id', job_id)
  ids[i + 1] = ARGV[a + 1]
end
if queued then
  redis.call('SADD', KEYS[2], KEYS[1])
end
redis.call('XACK', KEYS[4], '%(group)s', unpack(ids))
redis.call('XDEL', KEYS[4], unpack(ids))
return #ids
"""


def _fill(lua: str, settings: Settings) -> str:
    return (
        lua.replace("%(per_task)d", str(DELIVERIES_PER_TASK))
        .replace("%(parked_prefix)s", keys.parked_delivery_key(""))
        .replace("%(record_ttl)d", str(int(settings.raw_callback_ttl_s)))
        .replace("%(events_maxlen)d", str(EVENTS_MAXLEN))
        .replace("%(group)s", GROUP)
    )


def dispatch_script(settings: Settings, template: JobTemplate) -> str:
    return _fill(
        _DISPATCH_LUA.replace("%(job_hset)s", template.lua_hset("KEYS[k + 1]", first_argv="a + 8")).replace(
            "%(trim_loop)s", TRIM_LOOP.replace("%(list)s", "KEYS[k + 3]")
        ),
        settings,
    )


class Dispatcher:
    """Reads the ingest stream as ``consumer`` of the group and writes each batch in one MULTI/EXEC
    (``mode="multi"``: every command and the whole job hash travel) or one EVALSHA (``mode="script"``)."""

    def __init__(self, settings: Settings, consumer: str, mode: str = "multi") -> None:
        self.consumer = consumer
        self.mode = mode
        self.template = JobTemplate(settings)
        self.queue = keys.rq_queue_key(settings.queue_name)
        self.conn = redis.Connection(**redis.connection.parse_url(settings.redis_url), protocol=2)
        self.conn.connect()
        self.read = command("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", READ_COUNT, "BLOCK", 100,
                            "STREAMS", INGEST_STREAM, ">")  # fmt: skip
        self.n = self.batches = self.claimed = self.trimmed = 0
        ttl = _bulk(str(int(settings.raw_callback_ttl_s)).encode())
        # constant RESP pieces, packed once
        self._rpush_queue = b"*3\r\n$5\r\nRPUSH\r\n" + _bulk(self.queue.encode())
        self._incrby, self._rpush = b"*3\r\n$6\r\nINCRBY\r\n", b"*3\r\n$5\r\nRPUSH\r\n"
        self._expire, self._ttl = b"*3\r\n$6\r\nEXPIRE\r\n", ttl
        self._xadd = b"*16\r\n$4\r\nXADD\r\n" + b"".join(
            _bulk(_raw(a)) for a in (keys.events_stream(), "MAXLEN", "~", str(EVENTS_MAXLEN), "*")
        )
        self._sadd = command("SADD", keys.RQ_QUEUES_SET, self.queue)
        self._trim_sha = self.call(command("SCRIPT", "LOAD", _fill(_TRIM_LUA, settings))).decode()
        # the job hash as the shipped script writes it: JobTemplate.hset_args' order, RQ's empty constant fields
        # left out (as lua_hset does); constant stretches packed once, the varying values (index into
        # JobTemplate.values) per job
        args = self.template.hset_args(b"{}", provider="p", task_id="t", status="s", delivery_id="d")
        at = {"created_at": 0, "enqueued_at": 0, "data": 1, "description": 2, "meta": 3}
        self._hset_plan: list[tuple[bytes, int]] = []
        chunk, count = b"", 0
        for name, value in zip(args[0::2], args[1::2], strict=True):
            if name in at:
                self._hset_plan.append((chunk + _bulk(_raw(name)), at[name]))
                chunk, count = b"", count + 2
            elif value not in ("", b""):
                chunk += _bulk(_raw(name)) + _bulk(_raw(value))
                count += 2
        self._hset_tail = chunk
        self._hset_head = b"*%d\r\n$4\r\nHSET\r\n" % (count + 2)
        if mode == "script":
            lua = dispatch_script(settings, self.template)
            self.sha = self.call(command("SCRIPT", "LOAD", lua)).decode()
            head = [_bulk(_raw(k)) for k in (self.queue, keys.RQ_QUEUES_SET, keys.events_stream(), INGEST_STREAM)]
            self._script_keys = b"".join(head)

    def call(self, packed: bytes, replies: int = 1) -> Any:
        self.conn.send_packed_command([packed])
        out = [self.conn.read_response() for _ in range(replies)]
        return out[-1]

    def run(self, *, claim: bool) -> float:
        """Claim a dead consumer's entries first (``claim``), then drain the stream; returns the wall time of
        the last batch."""
        process = self.process_script if self.mode == "script" else self.process_multi
        last = time.perf_counter()
        if claim:
            cursor: bytes = b"0-0"
            while True:
                cursor, entries, *_ = self.call(command("XAUTOCLAIM", INGEST_STREAM, GROUP, self.consumer, 0,
                                                        cursor, "COUNT", READ_COUNT))  # fmt: skip
                if entries:
                    self.claimed += len(entries)
                    self.batches += 1
                    process(entries)
                    last = time.perf_counter()
                if cursor == b"0-0":
                    break
        while True:
            reply = self.call(self.read)
            if not reply or not reply[0][1]:
                return last
            process(reply[0][1])
            self.n += len(reply[0][1])
            self.batches += 1
            last = time.perf_counter()

    def _job(self, rec: bytes, ts: bytes, event_end: bytes, provider: str, task_id: str,
             status: str) -> tuple[str, bytes, str, bytes]:  # fmt: skip
        """The job hash's varying fields (``JobTemplate.values``) for one accepted entry."""
        delivery_id, envelope = envelope_from_entry(rec, ts, event_end)
        return self.template.values(envelope, provider=provider, task_id=task_id, status=status,
                                    delivery_id=delivery_id)  # fmt: skip

    def process_multi(self, entries: list[Any]) -> None:
        parts = [b"*1\r\n$5\r\nMULTI\r\n"]
        queued = 0
        lists: list[tuple[int, str]] = []  # (index in EXEC's reply, deliveries key) of each RPUSH of a record
        ids = []
        accepted = False
        for entry_id, f in entries:
            ids.append(entry_id)
            outcome, job_id, provider_b, task_b, status_b = f[1], f[3], f[5], f[7], f[9]
            ts, event_end, rec = f[11], f[13], f[15]
            provider, task_id, status = provider_b.decode(), task_b.decode(), status_b.decode()
            _, _, deliveries_key, _ = keys.task_keys(provider, task_id, status)
            if outcome == b"accepted":
                values = self._job(rec, ts, event_end, provider, task_id, status)
                parts += (self._hset_head, _bulk(keys.rq_job_key(job_id.decode()).encode()))
                for chunk, i in self._hset_plan:
                    parts += (chunk, _bulk(_raw(values[i])))
                parts += (self._hset_tail, self._rpush_queue, _bulk(job_id))
                queued += 2
                accepted = True
            jid = b'"' + job_id + b'"' if job_id else b"null"
            deliveries = _bulk(deliveries_key.encode())
            lists.append((queued, deliveries_key))
            parts += (
                self._rpush, deliveries, _bulk(rec + b',"outcome":"' + outcome + b'","job_id":' + jid + b"}"),
                self._expire, deliveries, self._ttl,
                self._xadd, b"$8\r\nprovider\r\n", _bulk(provider_b), b"$7\r\ntask_id\r\n", _bulk(task_b),
                b"$6\r\nstatus\r\n", _bulk(status_b), b"$7\r\noutcome\r\n", _bulk(outcome),
                b"$6\r\njob_id\r\n", _bulk(job_id),
            )  # fmt: skip
            queued += 3
        if accepted:
            parts.append(self._sadd)
            queued += 1
        parts.append(command("XACK", INGEST_STREAM, GROUP, *ids))
        parts.append(command("XDEL", INGEST_STREAM, *ids))
        parts.append(b"*1\r\n$4\r\nEXEC\r\n")
        queued += 2
        results = self.call(b"".join(parts), queued + 2)
        if not isinstance(results, list) or len(results) != queued:
            raise RuntimeError(f"EXEC: {results!r}")
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise RuntimeError(f"EXEC: {errors[0]!r}")
        # bounding the lists needs no atomicity with the rest: trimmed (and job records parked, as the shipped
        # script does) after the fact, one script per list
        trims = sorted({key for at, key in lists if results[at] > DELIVERIES_PER_TASK})
        if trims:
            self.call(b"".join(command("EVALSHA", self._trim_sha, 1, key) for key in trims), len(trims))
            self.trimmed += len(trims)

    def process_script(self, entries: list[Any]) -> None:
        key_parts: list[bytes] = []
        arg_parts: list[bytes] = []
        for entry_id, f in entries:
            outcome, job_id, provider_b, task_b, status_b = f[1], f[3], f[5], f[7], f[9]
            ts, event_end, rec = f[11], f[13], f[15]
            provider, task_id, status = provider_b.decode(), task_b.decode(), status_b.decode()
            _, _, deliveries_key, bytes_key = keys.task_keys(provider, task_id, status)
            key_parts += (
                _bulk(keys.rq_job_key(job_id.decode() or "none").encode()),
                _bulk(bytes_key.encode()),
                _bulk(deliveries_key.encode()),
            )
            arg_parts += (_bulk(entry_id), _bulk(outcome), _bulk(job_id), _bulk(provider_b), _bulk(task_b),
                          _bulk(status_b), _bulk(rec))  # fmt: skip
            if outcome == b"accepted":
                arg_parts += tuple(_bulk(_raw(v)) for v in self._job(rec, ts, event_end, provider, task_id, status))
            else:
                arg_parts += (b"$0\r\n\r\n",) * 4
        n = len(entries)
        numkeys = b"%d" % (4 + 3 * n)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%s\r\n" % (
            3 + 4 + 14 * n, self.sha.encode(), len(numkeys), numkeys)  # fmt: skip
        done = self.call(b"".join([head, self._script_keys, *key_parts, *arg_parts]))
        if done != n:
            raise RuntimeError(f"dispatch script: {done!r} for {n} entries")


def dispatcher_main(consumer: str, redis_url: str, claim: bool, mode: str) -> None:
    """Child process: say ``ready``, wait for ``go`` on stdin, dispatch until the stream is drained, print a
    JSON line with the loop's own CPU and wall time."""
    dispatcher = Dispatcher(Settings(redis_url=redis_url), consumer, mode)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    wall0, cpu0 = time.perf_counter(), time.process_time()
    last = dispatcher.run(claim=claim)
    cpu = time.process_time() - cpu0
    print(json.dumps({"n": dispatcher.n + dispatcher.claimed, "batches": dispatcher.batches, "claimed":
                      dispatcher.claimed, "trimmed": dispatcher.trimmed, "cpu_s": cpu, "wall_s": last - wall0}),
          flush=True)  # fmt: skip


def spawn_dispatcher(redis_url: str, consumer: str, mode: str, *, claim: bool = False) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--dispatcher", consumer, "--redis-url", redis_url,
           "--dispatch-mode", mode]  # fmt: skip
    proc = subprocess.Popen(cmd + (["--claim"] if claim else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        fail(f"dispatcher {consumer} did not start (exit {proc.wait()})")
    return proc


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        fail("dispatcher did not finish within 120 s")
    if proc.returncode != 0:
        fail(f"dispatcher exited {proc.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------------------------------
# the run


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def footprint(client: redis.Redis) -> tuple[int, int]:
    return int(client.info("memory")["used_memory"]), int(client.info("persistence")["aof_current_size"])


def reset(client: redis.Redis, *, ingest: bool) -> None:
    """Empty Redis and compact its AOF, so that the deltas of the next run are that run's alone."""
    client.flushall()
    client.bgrewriteaof()
    deadline = time.monotonic() + 30
    while True:
        p = client.info("persistence")
        if not p["aof_rewrite_in_progress"] and not p["aof_rewrite_scheduled"]:
            break
        if time.monotonic() > deadline:
            fail("BGREWRITEAOF did not finish")
        time.sleep(0.02)
    if ingest:
        client.xgroup_create(INGEST_STREAM, GROUP, id="0", mkstream=True)


def signed_callback(settings: Settings, task_id: str, url: str) -> tuple[Any, Any]:
    """One verified kie.ai success callback (as ``intake_micro.make_callbacks`` builds them), with ``url``."""
    from intake_micro import KEY

    from receiver.verify import verify_provider
    from veo_archiver.intake import Delivery
    from veo_archiver.sim import kie as kie_sim

    now = time.time()
    body = json.dumps(kie_sim.success_body(task_id, [url]))
    headers = {k.lower(): v for k, v in kie_sim.signed_headers(KEY, task_id, int(now)).items()}
    headers |= {"host": "127.0.0.1:8000", "content-length": str(len(body)), "user-agent": "kie-callback/1.0"}
    event = verify_provider(settings, "kie", headers, body.encode(), now=now, query={})
    return event, Delivery(body=body.encode(), headers=headers, received_at=now, remote="127.0.0.1",
                           path="/callbacks/kie")  # fmt: skip


async def submit_all(
    cls: Any, settings: Settings, callbacks: list[tuple[Any, Any]], concurrency: int
) -> dict[str, int]:
    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=32, timeout=5.0, socket_timeout=5.0))  # fmt: skip
    try:
        intake = cls(settings, client)
        await intake.start()
        outcomes: collections.Counter[str] = collections.Counter()
        it = iter(callbacks)

        async def worker() -> None:
            for event, delivery in it:
                outcomes[(await intake.submit(event, delivery)).outcome] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return dict(outcomes)
    finally:
        await client.aclose()


def run_dispatch(client: redis.Redis, redis_url: str, mode: str) -> dict[str, Any]:
    proc = spawn_dispatcher(redis_url, "d1", mode)
    cpu0 = redis_cpu(client)
    go(proc)
    result = finish(proc)
    result["redis_s"] = redis_cpu(client) - cpu0
    return result


def outcomes_of(client: redis.Redis, provider: str, task_id: str) -> list[str]:
    return [json.loads(r)["outcome"] for r in client.lrange(keys.deliveries_key(provider, task_id), 0, -1)]


def verify(client: redis.Redis, settings: Settings, name: str, accepted: list[tuple[Any, Any]], submissions: int,
           dups: list[tuple[Any, Any]], conflicts: list[tuple[Any, Any]], ingest: bool) -> None:  # fmt: skip
    """What every design must leave behind; fails loudly."""
    queue = keys.rq_queue_key(settings.queue_name)
    queued = [j.decode() for j in client.lrange(queue, 0, -1)]
    expected = {keys.job_id(e.provider, e.task_id, e.status.value) for e, _ in accepted}
    if len(queued) != len(accepted) or set(queued) != expected:
        fail(f"{name}: {len(queued)} jobs queued ({len(set(queued))} distinct) for {len(accepted)} accepted")
    if client.xlen(keys.events_stream()) != submissions:
        fail(f"{name}: {client.xlen(keys.events_stream())} events for {submissions} submissions")
    if ingest:
        pending = client.xpending(INGEST_STREAM, GROUP)["pending"]
        if client.xlen(INGEST_STREAM) or pending:
            fail(f"{name}: ingest stream holds {client.xlen(INGEST_STREAM)} entries, {pending} pending")
    for group, want in ((dups, "duplicate"), (conflicts, "conflict")):
        for e, _ in group:
            got = outcomes_of(client, e.provider, e.task_id)
            if got != ["accepted", want]:
                fail(f"{name}: deliveries of {e.task_id}: {got}, expected ['accepted', '{want}']")
    # one job hash and one record, field for field against what the shipped intake writes
    event, delivery = accepted[-1]
    job_id = keys.job_id(event.provider, event.task_id, event.status.value)
    job = client.hgetall(keys.rq_job_key(job_id))
    delivery_id = json.loads(job[b"meta"])["delivery_id"]
    event_json = redact_bytes(jsontext.dumpb(event.to_json()))
    want_hash = JobTemplate(settings).hset_args(
        envelope_json(event_json, delivery, delivery_id), provider=event.provider, task_id=event.task_id,
        status=event.status.value, delivery_id=delivery_id)  # fmt: skip
    # the shipped script leaves RQ's empty constant fields out (JobTemplate.lua_hset)
    want = {_raw(f): _raw(v) for f, v in zip(want_hash[0::2], want_hash[1::2], strict=True)
            if f in JobTemplate.VARYING or v not in ("", b"")}  # fmt: skip
    if set(want) != set(job):
        fail(f"{name}: job hash fields {sorted(job)} != {sorted(want)}")
    for field, value in want.items():
        if field not in (b"created_at", b"enqueued_at") and job[field] != value:
            fail(f"{name}: job hash field {field.decode()}: {job[field][:80]!r} != {value[:80]!r}")
    if job[b"created_at"] != job[b"enqueued_at"]:
        fail(f"{name}: job created_at {job[b'created_at']!r} != enqueued_at {job[b'enqueued_at']!r}")
    (record,) = client.lrange(keys.deliveries_key(event.provider, event.task_id), 0, -1)
    want_record = record_prefix(event_json, jsontext.dumpb(delivery.to_json()), delivery_id, None)
    if record != want_record + b',"outcome":"accepted","job_id":"' + job_id.encode() + b'"}':
        fail(f"{name}: delivery record differs from the shipped one: {record[:120]!r}")
    # the v2 job carries no raw callback: it must find it in the delivery record, as the worker looks it up
    found = delivery_records.find(client, event.provider, event.task_id, delivery_id)
    if found is None or found.get("callback") != json.loads(jsontext.dumpb(delivery.to_json())):
        fail(f"{name}: the job's delivery record {delivery_id} was not found with its callback")
    # small bodies are not counted against the task's byte budget (the records' cap bounds them)
    counter = client.get(keys.delivery_bytes_key(event.provider, event.task_id))
    if counter is not None:
        fail(f"{name}: delivery byte counter {counter!r} for a small body, expected none")


def commandstats(client: redis.Redis, n: int) -> list[str]:
    rows = []
    for cmd, v in sorted(client.info("commandstats").items(), key=lambda kv: -kv[1]["usec"]):
        if v["usec"] / n >= 0.3:
            rows.append(f"      {cmd.removeprefix('cmdstat_'):<10} {v['calls'] / n:6.2f} calls/cb "
                        f"{v['usec'] / n:6.1f} us/cb  ({v['usec_per_call']:.1f} us/call)")  # fmt: skip
    return rows


def crash_check(client: redis.Redis, settings: Settings, pool: list[tuple[Any, Any]], count: int,
                concurrency: int, runner: Any) -> None:  # fmt: skip
    callbacks = pool[:count]
    reset(client, ingest=True)
    outcomes = runner(submit_all(Ingest, settings, callbacks, concurrency))
    if outcomes != {"accepted": len(callbacks)}:
        fail(f"crash check: ingest outcomes {outcomes}")
    queue = keys.rq_queue_key(settings.queue_name)
    d1 = spawn_dispatcher(settings.redis_url, "d1", "multi")
    go(d1)
    # kill it once a third is queued and a batch is read but not yet committed (entries in its pending list)
    while d1.poll() is None:
        if client.llen(queue) >= len(callbacks) // 3 and client.xpending(INGEST_STREAM, GROUP)["pending"]:
            break
        time.sleep(0.001)
    mid_run = d1.poll() is None
    os.kill(d1.pid, signal.SIGKILL)
    d1.wait()
    time.sleep(0.05)
    at_kill = client.llen(queue)
    pending_at_kill = client.xpending(INGEST_STREAM, GROUP)["pending"]
    unread_at_kill = client.xlen(INGEST_STREAM) - pending_at_kill
    d2 = spawn_dispatcher(settings.redis_url, "d2", "multi", claim=True)
    go(d2)
    result = finish(d2)
    queued = [j.decode() for j in client.lrange(queue, 0, -1)]
    expected = {keys.job_id(e.provider, e.task_id, e.status.value) for e, _ in callbacks}
    pending = client.xpending(INGEST_STREAM, GROUP)["pending"]
    left = client.xlen(INGEST_STREAM)
    events = client.xlen(keys.events_stream())  # a batch dispatched twice would add its events again
    ok = mid_run and len(queued) == len(expected) and set(queued) == expected and not pending and not left
    ok = ok and events == len(callbacks)
    print(f"crash check: {len(callbacks)} accepted; d1 SIGKILLed {'mid-run' if mid_run else 'AFTER it finished'} "
          f"with {at_kill} jobs queued, {pending_at_kill} entries read but not acked, {unread_at_kill} unread; "
          f"d2 claimed {result['claimed']} (XAUTOCLAIM) and dispatched {result['n']} in all")  # fmt: skip
    print(f"crash check: jobs expected {len(expected)}, found {len(queued)} ({len(set(queued))} distinct, "
          f"{len(set(queued) - expected)} unexpected), events {events}; pending left {pending}; "
          f"ingest stream left {left}: {'OK' if ok else 'FAILED'}")  # fmt: skip
    if not ok:
        fail("crash check")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="ack-path run length")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate-cap", type=int, default=10000, help="callbacks built per second of a run")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--commandstats", action="store_true", help="redis-server time per command, last repeat")
    parser.add_argument("--crash-check", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--dispatch-script",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also: the dispatcher as one script per batch (row 'ingest + disp script')",
    )
    parser.add_argument("--crash-callbacks", type=int, default=6000)
    parser.add_argument("--dispatcher", default="", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--claim", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dispatch-mode", default="multi", choices=("multi", "script"), help=argparse.SUPPRESS)
    opts = parser.parse_args()  # fmt: skip
    if opts.dispatcher:
        dispatcher_main(opts.dispatcher, opts.redis_url, opts.claim, opts.dispatch_mode)
        return
    logging.getLogger("veo_archiver").setLevel(logging.WARNING)

    from intake_micro import KEY, drive, make_callbacks

    from tests.servers import RedisServer
    from veo_archiver import intake as intake_module

    runner: Any = asyncio.run
    if opts.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    designs: list[tuple[str, Any, str]] = [
        ("shipped Intake", Intake, ""),
        ("ingest + disp MULTI", Ingest, "multi"),
    ]
    if opts.dispatch_script:
        designs.append(("ingest + disp script", Ingest, "script"))
    with tempfile.TemporaryDirectory(prefix="ingest-dispatch-") as tmp, \
            RedisServer(Path(tmp) / "redis", appendfsync="everysec") as server:  # fmt: skip
        client = server.client()
        client.config_set("auto-aof-rewrite-percentage", 0)  # a rewrite mid-run would spoil the AOF deltas
        settings = Settings(redis_url=server.url, kie_hmac_keys=(KEY,))
        print(machine_description(("redis", "hiredis", "rq", "uvloop"), [
            f"redis:    {client.info('server')['redis_version']} (AOF everysec, auto-rewrite off); "
            f"hiredis in redis-py: {redis.utils.HIREDIS_AVAILABLE}; loop {opts.loop}; "
            f"{opts.concurrency} concurrent submitters, {opts.seconds:g} s per run, repeat {opts.repeat}",
            f"code:     {CODE_ROOT} (intake: {intake_module.__file__})"]))  # fmt: skip
        if not str(intake_module.__file__).startswith(str(CODE_ROOT)):
            fail(f"veo_archiver.intake came from {intake_module.__file__}, not {CODE_ROOT}")
        per = int(opts.seconds * opts.rate_cap) + opts.concurrency
        t0 = time.perf_counter()
        pool = make_callbacks(settings, f"pool-{uuid.uuid4().hex[:6]}", max(per, opts.crash_callbacks))
        # resubmitted (duplicate) and other-URL (conflict) deliveries of tasks accepted in every run's warm-up
        dups = pool[:4]
        conflicts = [signed_callback(settings, e.task_id, f"https://tempfile.aiquickdraw.com/v/{e.task_id}-b.mp4")
                     for e, _ in pool[4:6]]  # fmt: skip
        print(f"          {len(pool)} signed callbacks built in {time.perf_counter() - t0:.1f} s")
        print()
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in designs}
        stats: dict[str, list[str]] = {}
        for rep in range(opts.repeat):
            for name, cls, mode in designs if rep % 2 == 0 else list(reversed(designs)):
                ingest = bool(mode)
                reset(client, ingest=ingest)
                mem0, aof0 = footprint(client)
                client.config_resetstat()
                r = runner(drive(cls, settings, pool[:per], opts.concurrency, opts.seconds, None))
                accepted = r["n"] + opts.concurrency
                if r["outcomes"] != {"accepted": r["n"]}:
                    fail(f"{name}: outcomes {r['outcomes']}")
                if accepted == per:
                    print(f"  !! {name}: used every callback built: the run ended early (raise --rate-cap)")
                ack_stats = commandstats(client, accepted)
                extra = runner(submit_all(cls, settings, dups + conflicts, len(dups) + len(conflicts)))
                if extra != {"duplicate": len(dups), "conflict": len(conflicts)}:
                    fail(f"{name}: resubmissions answered {extra}")
                submissions = accepted + len(dups) + len(conflicts)
                r |= {"disp_rate": math.nan, "disp_us": 0.0, "disp_redis_us": 0.0}
                if ingest:
                    if client.llen(keys.rq_queue_key(settings.queue_name)) or client.xlen(INGEST_STREAM) != submissions:
                        fail(f"{name}: before dispatch: {client.xlen(INGEST_STREAM)} ingested for {submissions}")
                    client.config_resetstat()
                    d = run_dispatch(client, settings.redis_url, mode)
                    if d["n"] != submissions:
                        fail(f"{name}: dispatched {d['n']} of {submissions}")
                    n = d["n"]
                    r |= {"disp_rate": n / d["wall_s"], "disp_us": d["cpu_s"] / n * 1e6,
                          "disp_redis_us": d["redis_s"] / n * 1e6, "disp_batch": n / d["batches"]}  # fmt: skip
                    stats[name] = ["    ack:", *ack_stats, "    dispatch:", *commandstats(client, submissions)]
                else:
                    stats[name] = ["    ack:", *ack_stats]
                mem1, aof1 = footprint(client)
                r |= {"mem_b": (mem1 - mem0) / submissions, "aof_b": (aof1 - aof0) / submissions}
                r["redis_total"] = r["redis_us"] + r["disp_redis_us"]
                r["all_us"] = r["cpu_us"] + r["disp_us"] + r["redis_total"]
                verify(client, settings, name, pool[:accepted], submissions, dups, conflicts, ingest)
                rows[name].append(r)
                print(f"  run {rep + 1} {name:<24} {r['n']:6d} cb {r['rate']:6.0f} cb/s  client {r['cpu_us']:5.1f}  "
                      f"redis ack {r['redis_us']:5.1f}  dispatcher {r['disp_us']:5.1f}  redis dispatch "
                      f"{r['disp_redis_us']:5.1f} us/cb  batch {r['batch']:5.1f}  checks ok", flush=True)  # fmt: skip
        print()
        cols = [("ack cb/s", "rate", 8, 0), ("client us", "cpu_us", 9, 1), ("redis ack", "redis_us", 9, 1),
                ("batch", "batch", 5, 1), ("disp cb/s", "disp_rate", 9, 0), ("dispatcher us", "disp_us", 13, 1),
                ("redis disp", "disp_redis_us", 10, 1), ("redis total", "redis_total", 11, 1),
                ("all CPU us", "all_us", 10, 1), ("mem B/cb", "mem_b", 8, 0), ("AOF B/cb", "aof_b", 8, 0)]  # fmt: skip
        print(f"{'design (medians, per callback)':<26} " + " ".join(f"{title:>{w}}" for title, _, w, _ in cols))
        for name, runs in rows.items():
            cells = []
            for _, key, width, digits in cols:
                value = statistics.median(run[key] for run in runs)
                cells.append(f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}")
            print(f"{name:<26} " + " ".join(cells))
        print("client = the ack path's process CPU; redis ack = redis-server CPU while acking (no dispatcher running);")
        print("dispatcher, redis disp = the dispatch phase alone over that backlog; all CPU = client + dispatcher")
        print("+ redis total; mem, AOF = used_memory, aof_current_size deltas once all is dispatched, per submission.")
        if opts.commandstats:
            print()
            print("redis-server time per callback by command (last repeat; commands run by a script are also counted")
            print("inside its EVALSHA; network, parsing and the AOF write are outside all of them):")
            for name, lines in stats.items():
                print(f"  {name}:")
                print("\n".join(lines))
        if opts.crash_check:
            print()
            crash_check(client, settings, pool, opts.crash_callbacks, opts.concurrency, runner)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
