"""One task as Redis knows it, as a plan (:mod:`.plan`) for either client: the ops page's task page.

The same story as ``veo-archiver show`` (deliveries, jobs, attempts, next retry, dead letter, progress), read
from the same records (:mod:`veo_archiver.records`), in two round trips and without ``rq.Job`` (the receiver's
client is async): the job hashes and RQ's results stream (``return_value`` is JSON in base64, decoded with RQ's
own :class:`~rq.serializers.JSONSerializer`). The archive itself is not read here: what the task's outcome
(``veo:outcomes``, the newest :data:`OUTCOME_SCAN` entries searched) and its jobs' results say about the
manifest and its files (object keys, sizes, SHA-256) is what the page shows.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from rq.serializers import JSONSerializer

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.event import TaskStatus
from veo_archiver.queue_view.model import JsonRecord
from veo_archiver.queue_view.plan import Plan, command, run, run_async
from veo_archiver.records import dead_letter, delivery, refusals
from veo_archiver.records.progress import Progress
from veo_archiver.records.refusals import Refusal
from veo_archiver.text import optional_text, text

#: newest entries of ``veo:outcomes`` searched for the task's outcome
OUTCOME_SCAN = 2000
JOB_FIELDS = ("status", "enqueued_at", "started_at", "ended_at", "meta")


@dataclass(frozen=True)
class DeliveryInfo(JsonRecord):
    number: int  # 1 = the oldest delivery still kept
    delivery_id: str | None
    received_at: str | None
    remote: str | None
    path: str | None
    outcome: str | None
    verification: str | None
    status: str | None
    job_id: str | None
    replayed_at: str | None
    headers: dict[str, str]
    body: str


def delivery_info(number: int, record: dict[str, Any]) -> DeliveryInfo:
    callback = record.get("callback") or {}
    event = record.get("event") or {}
    return DeliveryInfo(
        number=number,
        delivery_id=record.get("delivery_id"),
        received_at=callback.get("received_at"),
        remote=callback.get("remote"),
        path=callback.get("path"),
        outcome=record.get("outcome"),
        verification=event.get("verification"),
        status=event.get("status"),
        job_id=record.get("job_id"),
        replayed_at=record.get("replayed_at"),
        headers=dict(callback.get("headers") or {}),
        body=str(callback.get("body") or ""),
    )


@dataclass(frozen=True)
class TaskJob(JsonRecord):
    job_id: str
    status: str | None  # the task's terminal status this job archives
    state: str  # RQ's state, or "gone" once the job's record expired
    replay: bool = False  # an operator's replay (``veo-archiver replay``), not the callback's own job
    enqueued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    next_run_at: str | None = None
    dead_letter: dict[str, Any] | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    progress: Progress | None = None


@dataclass(frozen=True)
class TaskFile(JsonRecord):
    key: str
    size: int | None
    sha256: str | None
    content_type: str | None = None


@dataclass
class TaskView:
    provider: str
    task_id: str
    tracked_since: str | None = None
    deliveries: list[DeliveryInfo] = field(default_factory=list)
    jobs: list[TaskJob] = field(default_factory=list)
    #: the task's newest entry on ``veo:outcomes`` (stream id under ``_id``), when among the scanned ones
    outcome: dict[str, str] | None = None
    manifest_key: str | None = None
    manifest_location: str | None = None
    files: list[TaskFile] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return bool(self.deliveries or self.jobs or self.outcome or self.tracked_since or self.refusals)


def _json_list(raw: str | None) -> list[Any]:
    try:
        value = json.loads(raw or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _files(entries: list[Any]) -> list[TaskFile]:
    out = []
    for f in entries:
        if isinstance(f, dict) and f.get("key"):
            size = f.get("size")
            out.append(
                TaskFile(
                    key=str(f["key"]),
                    size=size if isinstance(size, int) else None,
                    sha256=optional_text(f.get("sha256")),
                    content_type=optional_text(f.get("content_type")),
                )
            )
    return out


def _return_value(entries: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The latest result of a job (``rq:results:<id>``): its return value (a dict) and its failure's last line."""
    if not entries:
        return None, None
    fields = entries[0][1] or {}
    raw = fields.get(b"return_value", fields.get("return_value"))
    value: Any = None
    if raw:
        try:
            value = JSONSerializer.loads(base64.b64decode(raw))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            value = None
    error = dead_letter.last_line(dead_letter.result_exc_text(fields)) or None
    return (value if isinstance(value, dict) else None), error


def is_replay(job_id: str) -> bool:
    """An operator's replay job (``<job id>-replay-<random>``, veo_archiver/intake.py), not the callback's own."""
    return "-replay-" in job_id


def _job(job_id: str, status: str | None, values: list[Any], results: Any, progress: Any, run_at: Any) -> TaskJob:
    row = dict(zip(JOB_FIELDS, (optional_text(v) for v in values), strict=True))
    if row["status"] is None and row["enqueued_at"] is None:
        return TaskJob(job_id=job_id, status=status, state="gone", replay=is_replay(job_id))
    meta = dead_letter.job_meta(row["meta"])
    state = row["status"] or "?"
    result, error = _return_value(results)
    letter = None
    if state == "failed" or dead_letter.marked(meta):
        verdict = dead_letter.classify(meta, exc_text=error or "")
        letter = {"reason": verdict.reason, "error": verdict.error, "at": verdict.at}
    return TaskJob(
        job_id=job_id,
        status=status,
        state=state,
        replay=is_replay(job_id),
        enqueued_at=row["enqueued_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        attempts=dead_letter.attempts_of(meta),
        next_run_at=iso(float(run_at)) if run_at is not None and state == "scheduled" else None,
        dead_letter=letter,
        error=error,
        result=result,
        progress=Progress.from_fields(job_id, progress),
    )


def _outcome_of(entries: Any, provider: str, task_id: str) -> dict[str, str] | None:
    for entry_id, values in entries or []:
        row = {text(k): text(v) for k, v in (values or {}).items()}
        if row.get("provider") == provider and row.get("task_id") == task_id:
            row["_id"] = text(entry_id)
            return row
    return None


def task_plan(queue: str, provider: str, task_id: str) -> Plan[TaskView]:
    """Everything Redis holds about one task; unreadable records are skipped, never fatal."""
    view = TaskView(provider=provider, task_id=task_id)
    raw_deliveries, since, outcomes, recent = yield [
        command("lrange", redis_keys.deliveries_key(provider, task_id), 0, -1),
        command("zscore", redis_keys.tracked_zset(), redis_keys.tracked_member(provider, task_id)),
        command("xrevrange", redis_keys.outcomes_stream(), count=OUTCOME_SCAN),
        command("lrange", redis_keys.REFUSALS_RECENT_LIST, 0, refusals.RECENT_MAX - 1),
    ]
    records = [r for r in (delivery.decode(item) for item in raw_deliveries or []) if r is not None]
    view.deliveries = [delivery_info(n, record) for n, record in enumerate(records, start=1)]
    view.tracked_since = iso(float(since)) if since is not None else None
    view.outcome = _outcome_of(outcomes, provider, task_id)
    view.refusals = refusals.of_task(recent or [], provider, task_id)

    wanted: dict[str, str | None] = {}
    for record in records:
        if record.get("job_id"):
            wanted.setdefault(str(record["job_id"]), delivery.status_of(record))
    for terminal in (TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value):
        wanted.setdefault(redis_keys.job_id(provider, task_id, terminal), terminal)
    ids = list(wanted)
    scheduled = redis_keys.rq_scheduled_key(queue)
    replies = yield [
        cmd
        for job_id in ids
        for cmd in (
            command("hmget", redis_keys.rq_job_key(job_id), list(JOB_FIELDS)),
            command("xrevrange", redis_keys.rq_results_key(job_id), count=1),
            command("hgetall", redis_keys.progress_key(job_id)),
            command("zscore", scheduled, job_id),
        )
    ]
    referenced = {str(r["job_id"]) for r in records if r.get("job_id")}
    for n, job_id in enumerate(ids):
        job = _job(job_id, wanted[job_id], *replies[4 * n : 4 * n + 4])
        if job.state != "gone" or job_id in referenced:
            view.jobs.append(job)
    _manifest(view)
    return view


def _manifest(view: TaskView) -> None:
    """The manifest's key, location and files: from the outcome entry, else from the latest job's result."""
    if view.outcome is not None:
        view.manifest_key = view.outcome.get("manifest") or None
        view.manifest_location = view.outcome.get("location") or None
        view.files = _files(_json_list(view.outcome.get("files")))
    for job in reversed(view.jobs):
        if job.result is None:
            continue
        view.manifest_key = view.manifest_key or optional_text(job.result.get("manifest"))
        if not view.files:
            files = job.result.get("files")
            view.files = _files(files if isinstance(files, list) else [])
        break


async def read_task(client: aioredis.Redis, queue: str, provider: str, task_id: str) -> TaskView:
    """The task page's read (async client); Redis errors propagate."""
    return await run_async(client, task_plan(queue, provider, task_id))


def task_view(connection: redis.Redis, queue: str, provider: str, task_id: str) -> TaskView:
    """The same read with the synchronous client (the command line)."""
    return run(connection, task_plan(queue, provider, task_id))
