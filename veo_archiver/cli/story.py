"""The whole story of one task, for ``veo-archiver show``: deliveries, verification, jobs, attempts, next
retry, dead letter, and what is in the archive. Read-only, like :mod:`veo_archiver.queue_view`, whose job helpers
it uses; records are read through :mod:`veo_archiver.records` (deliveries, tracked tasks, dead letters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis
from rq.job import Job

from veo_archiver import archive_keys, redis_keys
from veo_archiver.clock import epoch, iso
from veo_archiver.errors import StorageUnavailable
from veo_archiver.event import TaskStatus
from veo_archiver.queue_view import JsonRecord, fetch_jobs, state_of
from veo_archiver.queue_view.task import DeliveryInfo, TaskJob, delivery_info, is_replay
from veo_archiver.records import delivery, progress, refusals, tracked
from veo_archiver.records.dead_letter import last_line, marked, task_status_of, verdict_of
from veo_archiver.records.refusals import Refusal
from workers.storage import ObjectArchive


@dataclass(frozen=True)
class ArchivedFile(JsonRecord):
    key: str
    size: int | None
    sha256: str | None
    stored_size: int | None  # None: the object is missing from the archive


@dataclass(frozen=True)
class TaskStory(JsonRecord):
    provider: str
    task_id: str
    tracked_since: str | None
    deliveries: list[DeliveryInfo]
    jobs: list[TaskJob]
    manifest_key: str
    archive_location: str | None
    manifest: dict[str, Any] | None
    files: list[ArchivedFile]
    archive_error: str | None
    #: refused deliveries that named this task (the receiver's last RECENT_MAX refusals; kie.ai's signature
    #: failures: a wrong key or a skewed clock refuses real tasks)
    refusals: list[Refusal] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- jobs


def job_info(connection: redis.Redis, queue_name: str, job_id: str, job: Job | None, status: str | None) -> TaskJob:
    replay = is_replay(job_id)
    if job is None:
        return TaskJob(job_id=job_id, status=status, state="gone", replay=replay)
    meta = job.meta or {}
    state = state_of(job)
    next_run = None
    if state == "scheduled":
        next_run = iso(connection.zscore(redis_keys.rq_scheduled_key(queue_name), job_id))
    error = None
    result = None
    latest = job.latest_result()
    if latest is not None:
        if latest.exc_string:
            error = last_line(latest.exc_string)
        if isinstance(latest.return_value, dict):
            result = latest.return_value
    letter = asdict(verdict_of(job)) if state == "failed" or marked(meta) else None
    return TaskJob(
        job_id=job_id,
        status=task_status_of(job) or status,
        state=state,
        replay=replay,
        enqueued_at=iso(epoch(job.enqueued_at)),
        started_at=iso(epoch(job.started_at)),
        ended_at=iso(epoch(job.ended_at)),
        attempts=list(meta.get("attempts") or []),
        next_run_at=next_run,
        dead_letter=letter,
        error=error,
        result=result,
    )


def task_jobs(
    connection: redis.Redis, queue_name: str, provider: str, task_id: str, records: list[dict[str, Any]]
) -> list[TaskJob]:
    """One entry per terminal status the task reached, plus every operator replay, in order of appearance."""
    wanted: dict[str, str | None] = {}
    for record in records:
        if record.get("job_id"):
            wanted.setdefault(str(record["job_id"]), (record.get("event") or {}).get("status"))
    for terminal in (TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value):
        job_id = redis_keys.job_id(provider, task_id, terminal)
        if job_id not in wanted and connection.exists(redis_keys.rq_job_key(job_id)):
            wanted[job_id] = terminal
    running = progress.read(connection, wanted)
    return [
        replace(job_info(connection, queue_name, job_id, job, wanted[job_id]), progress=running.get(job_id))
        for job_id, job in fetch_jobs(connection, list(wanted))
    ]


def archived(archive: ObjectArchive, provider: str, task_id: str) -> tuple[dict[str, Any] | None, list[ArchivedFile]]:
    """The task's manifest and, for each file it lists, whether the object is really there."""
    manifest = archive.get_json(archive_keys.manifest_key(provider, task_id))
    files = []
    for entry in (manifest or {}).get("files") or []:
        stored = archive.head(str(entry.get("key")))
        files.append(
            ArchivedFile(
                key=str(entry.get("key")),
                size=entry.get("size"),
                sha256=entry.get("sha256"),
                stored_size=stored.size if stored else None,
            )
        )
    return manifest, files


def task_story(
    connection: redis.Redis, queue_name: str, provider: str, task_id: str, archive: ObjectArchive | None
) -> TaskStory:
    records = delivery.stored(connection, provider, task_id)
    manifest_key = archive_keys.manifest_key(provider, task_id)
    manifest: dict[str, Any] | None = None
    files: list[ArchivedFile] = []
    archive_error = None
    if archive is not None:
        try:
            manifest, files = archived(archive, provider, task_id)
        except (StorageUnavailable, ValueError) as exc:
            archive_error = str(exc)
    return TaskStory(
        provider=provider,
        task_id=task_id,
        tracked_since=iso(tracked.since(connection, provider, task_id)),
        deliveries=[delivery_info(n, record) for n, record in enumerate(records, start=1)],
        jobs=task_jobs(connection, queue_name, provider, task_id, records),
        manifest_key=manifest_key,
        archive_location=archive.location(manifest_key) if archive is not None else None,
        manifest=manifest,
        files=files,
        archive_error=archive_error,
        refusals=refusals.of_task(
            connection.lrange(redis_keys.REFUSALS_RECENT_LIST, 0, refusals.RECENT_MAX - 1), provider, task_id
        ),
    )
