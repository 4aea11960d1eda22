"""Every Redis key veo-archiver uses (RQ's included), on one screen. Object keys in the archive are in
:mod:`veo_archiver.archive_keys`.

RQ's own keys (``rq:job:<id>``, ``rq:queue:<name>``, ``rq:queues``) are written in RQ's format by
:mod:`veo_archiver.intake`; ours all start with ``veo:``.
"""

from __future__ import annotations

import hashlib
import json

#: the dotted paths of the job functions: the only code-level contract between receiver and workers
ARCHIVE_JOB = "workers.jobs.archive_task"
#: one tracked task polled now (the ops page's "sweep now"): :func:`workers.reconcile.sweep_task`
SWEEP_TASK_JOB = "workers.reconcile.sweep_task"
#: kie.ai's 1080p rendition of an archived task, polled until ready: :func:`workers.rendition_1080p.poll_1080p`
RENDITION_1080P_JOB = "workers.rendition_1080p.poll_1080p"

RQ_QUEUES_SET = "rq:queues"
_PREFIX = "veo:"


def rq_job_key(job_id: str) -> str:
    return f"rq:job:{job_id}"


def rq_queue_key(queue_name: str) -> str:
    return f"rq:queue:{queue_name}"


#: RQ's registries, by the name veo-archiver uses (the ``registry`` label of /metrics), and RQ's key prefix
RQ_REGISTRIES = {
    "started": "wip",
    "scheduled": "scheduled",
    "failed": "failed",
    "deferred": "deferred",
    "finished": "finished",
}


def rq_registry_key(registry: str, queue_name: str) -> str:
    """RQ's sorted set of one registry (``started``, ``scheduled``, ``failed``…) of one queue."""
    return f"rq:{RQ_REGISTRIES[registry]}:{queue_name}"


def rq_scheduled_key(queue_name: str) -> str:
    return rq_registry_key("scheduled", queue_name)


def rq_results_key(job_id: str) -> str:
    """RQ's stream of a job's results (the latest failure's ``exc_string`` is there)."""
    return f"rq:results:{job_id}"


RQ_WORKER_PREFIX = "rq:worker:"


def rq_workers_key(queue_name: str) -> str:
    """RQ's set of the worker hash keys (``rq:worker:<name>``) serving one queue."""
    return f"rq:workers:{queue_name}"


def rq_worker_name(worker_key: str) -> str:
    return worker_key.removeprefix(RQ_WORKER_PREFIX)


def rq_worker_executions_key(worker_key: str) -> str:
    """RQ 3's set of a worker's running executions (``<job id>:<execution id>``); RQ 2 names the running job
    in the worker hash's ``current_job`` field instead (RQ 3 no longer writes it)."""
    return f"{worker_key}:executions"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def job_id(provider: str, task_id: str, status: str) -> str:
    """Deterministic RQ job id for one (provider, task, terminal status): RQ allows only [A-Za-z0-9_-]."""
    return f"archive-{provider}-{status}-{_digest(provider, task_id, status)[:40]}"


def rendition_job_id(provider: str, task_id: str, rendition: str) -> str:
    """The one job polling for a task's other rendition (one per task: a second trigger finds it and stops)."""
    return f"rendition-{rendition}-{provider}-{_digest(provider, task_id, rendition)[:40]}"


def _task(provider: str, task_id: str) -> str:
    """The task's part of its keys (one hash serves all of them: :func:`task_keys`)."""
    return _digest(provider, task_id)[:40]


def _dedupe(provider: str, status: str, task: str) -> str:
    return f"{_PREFIX}dedupe:{provider}:{status}:{task}"


def _deliveries(provider: str, task: str) -> str:
    return f"{_PREFIX}deliveries:{provider}:{task}"


def _delivery_bytes(provider: str, task: str) -> str:
    return f"{_PREFIX}deliveries-bytes:{provider}:{task}"


def dedupe_key(provider: str, task_id: str, status: str) -> str:
    return _dedupe(provider, status, _task(provider, task_id))


def deliveries_key(provider: str, task_id: str) -> str:
    """List of every delivery we accepted for one task (raw body + non-secret headers), newest last."""
    return _deliveries(provider, _task(provider, task_id))


def delivery_record_key(delivery_id: str) -> str:
    """The record of a delivery that created a job, under its own key: the job reads its raw callback here
    (:mod:`veo_archiver.intake_format`). Version-2 jobs' records were parked here once their task's list was
    full."""
    return f"{_PREFIX}delivery:{delivery_id}"


def delivery_bytes_key(provider: str, task_id: str) -> str:
    """The bytes of large raw deliveries stored for one task (bounded by
    ``intake_script.DELIVERY_BYTES_PER_TASK``)."""
    return _delivery_bytes(provider, _task(provider, task_id))


def task_keys(provider: str, task_id: str, status: str) -> tuple[str, str, str, str]:
    """``(job_id, dedupe_key, deliveries_key, delivery_bytes_key)`` of one delivery, hashing the task once
    (the intake needs all four for every callback)."""
    task = _task(provider, task_id)
    return (
        job_id(provider, task_id, status),
        _dedupe(provider, status, task),
        _deliveries(provider, task),
        _delivery_bytes(provider, task),
    )


def events_stream() -> str:
    """A capped stream of every accepted delivery, for operators (``status``, ``show``)."""
    return f"{_PREFIX}events"


def outcomes_stream() -> str:
    """One entry per finished task (archived, failed, dead letter): what downstream pipelines consume."""
    return f"{_PREFIX}outcomes"


def outcome_published_key(outcome_id: str) -> str:
    """Set (with a TTL) once the outcome entry of ``outcome_id`` is on :func:`outcomes_stream`: at most once."""
    return f"{_PREFIX}outcome-published:{outcome_id}"


def progress_key(job_id: str) -> str:
    """Hash (TTL, refreshed every write) with the download progress of a running job:
    :mod:`veo_archiver.records.progress`."""
    return f"{_PREFIX}progress:{job_id}"


def stats_hash() -> str:
    """Counters the workers increment (outcomes, bytes, duration buckets); read by /metrics."""
    return f"{_PREFIX}stats"


def tracked_zset() -> str:
    """Tasks users registered (``track``, ``POST /tasks``), scored by registration time; a member is the JSON
    array ``[provider, task_id]``. Removed once the task is archived or failed; the sweep polls the rest."""
    return f"{_PREFIX}tracked"


def tracked_member(provider: str, task_id: str) -> str:
    return json.dumps([provider, task_id], separators=(",", ":"))


def tracked_task(member: bytes | str) -> tuple[str, str] | None:
    """The (provider, task id) of a :func:`tracked_member`; None for a member this version did not write."""
    try:
        value = json.loads(member)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    return None


def submission_key(provider: str, task_id: str) -> str:
    """JSON of a task submitted through the archiver (``/submit``, ``veo-archiver submit``): its operation,
    when, and the task it extends: :mod:`veo_archiver.records.submission`; TTL ``SUBMISSION_TTL_S``."""
    return f"{_PREFIX}submission:{provider}:{_task(provider, task_id)}"


def submit_idempotency_key(provider: str, operation: str, key: str) -> str:
    """The first answer to a submission made with an ``Idempotency-Key`` (a day): :mod:`veo_archiver.submit`."""
    return f"{_PREFIX}submit-idem:{_digest(provider, operation, key)[:40]}"


#: the reconciliation sweep: its lock (one sweeper per interval across machines), its last report, when each
#: tracked task was last polled, and the tasks the provider did not know (dropped from the tracked set)
RECONCILE_LOCK = f"{_PREFIX}reconcile:lock"
RECONCILE_LAST_REPORT = f"{_PREFIX}reconcile:last"
TRACKED_POLLED_ZSET = f"{_PREFIX}tracked:polled"
TRACKED_DROPPED_LIST = f"{_PREFIX}tracked:dropped"

#: downstream notifications: the retry schedule, the dead letters, and one state hash per outcome entry
NOTIFY_RETRY_ZSET = f"{_PREFIX}notify:retry"
NOTIFY_DEAD_LIST = f"{_PREFIX}notify:dead"
#: the notifier's consumer group on :func:`outcomes_stream`
NOTIFY_GROUP = "notifier"
#: a receiver's spool drain writes here (a timestamp, 60 s TTL) to tell "Redis refuses writes" from
#: "this entry fails" (receiver/spool_drain.py)
SPOOL_WRITE_PROBE = f"{_PREFIX}spool:write-probe"


def notify_entry_key(entry_id: str) -> str:
    return f"{_PREFIX}notify:entry:{entry_id}"


#: refused callbacks (:mod:`veo_archiver.records.refusals`): counters by ``provider|reason`` per minute and per
#: hour (hashes with a TTL), and the latest refusals (a capped list, newest first)
REFUSALS_RECENT_LIST = f"{_PREFIX}refusals:recent"


def refusals_minute_key(minute: int) -> str:
    """Hash ``provider|reason`` -> refusals in one minute (``minute`` = epoch seconds // 60)."""
    return f"{_PREFIX}refusals:m:{minute}"


def refusals_hour_key(hour: int) -> str:
    """Hash ``provider|reason`` -> refusals in one hour (``hour`` = epoch seconds // 3600)."""
    return f"{_PREFIX}refusals:h:{hour}"


#: what operators did from the ops page (:mod:`veo_archiver.records.ops_actions`): a capped list, newest first
OPS_ACTIONS_LIST = f"{_PREFIX}ops:actions"
