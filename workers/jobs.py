"""The archive job: an importable, idempotent function with one JSON argument (the intake envelope).

Outcomes: the manifest is written (``archived``), it already was (``already_archived``), a transient
failure raises :class:`TransientError` and RQ retries on its schedule, or a permanent failure raises
:class:`PermanentError` after setting ``retries_left = 0`` so the job lands in RQ's failed registry,
our dead-letter state, with the reason in ``job.meta["dead_letter"]``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from rq.job import Job, get_current_job

from receiver import keys
from receiver.errors import PermanentError, StorageUnavailable
from receiver.event import TaskEvent, TaskStatus
from receiver.intake import iso
from workers import manifest
from workers.context import WorkerContext, current
from workers.fetch import VideoStream
from workers.manifest import FileRecord

log = logging.getLogger(__name__)


def archive_task(envelope: dict[str, Any]) -> dict[str, Any]:
    job = get_current_job()
    event = TaskEvent.from_json(envelope["event"])
    fields = {"provider": event.provider, "task_id": event.task_id, "job_id": job.id if job else None}
    try:
        result = _archive(current(), event, envelope, job)
    except PermanentError as exc:
        if job is not None:
            job.retries_left = 0
            job.meta["dead_letter"] = {"reason": exc.reason, "error": exc.message, "at": iso(time.time())}
            job.save_meta()
        log.error("permanent failure: %s", exc.message, extra={**fields, "reason": exc.reason})
        raise
    log.info("task %s", result["outcome"], extra=fields)
    return result


def _archive(ctx: WorkerContext, event: TaskEvent, envelope: dict[str, Any], job: Job | None) -> dict[str, Any]:
    archive = ctx.archive
    manifest_key = keys.manifest_key(event.provider, event.task_id)
    existing = archive.get_json(manifest_key)
    if existing is not None and existing.get("status") in (TaskStatus.SUCCEEDED.value, event.status.value):
        return {"outcome": "already_archived", "manifest": manifest_key, "status": existing.get("status")}

    callback_key = keys.callback_key(event.provider, event.task_id, event.status.value)
    archive.put_bytes(callback_key, json.dumps({**envelope["callback"], "delivery_id": envelope["delivery_id"]},
                                               indent=2).encode())
    callback = {
        "key": callback_key,
        "location": archive.location(callback_key),
        "delivery_id": envelope["delivery_id"],
        "redis": keys.deliveries_key(event.provider, event.task_id),
    }

    files: list[FileRecord] = []
    if event.status is TaskStatus.SUCCEEDED:
        if not event.result_urls:
            raise PermanentError("success callback carries no result URL", reason="no_results")
        done = _progress(job)
        for index, url in enumerate(event.result_urls):
            record = done.get(index)
            if record is not None and record.source_url == url:
                stored = archive.head(record.key)
                if stored is not None and stored.size == record.size:
                    files.append(record)
                    continue
            record = _archive_video(ctx, event, index, url)
            files.append(record)
            _save_progress(job, record)

    body = manifest.build(
        event,
        files,
        received_at=envelope["callback"]["received_at"],
        archived_at=iso(time.time()),
        callback=callback,
        job_id=job.id if job else None,
    )
    if event.status is TaskStatus.SUCCEEDED:
        archive.put_bytes(manifest_key, manifest.encode(body))  # a success replaces an earlier failure manifest
    elif not archive.put_if_absent(manifest_key, manifest.encode(body)):
        return {"outcome": "already_archived", "manifest": manifest_key}
    return {"outcome": "archived", "manifest": manifest_key, "files": [f.to_json() for f in files]}


def _archive_video(ctx: WorkerContext, event: TaskEvent, index: int, url: str) -> FileRecord:
    key = keys.video_key(event.provider, event.task_id, index)
    stream = VideoStream(ctx.client, url, ctx.fetch_policy)
    started = time.monotonic()
    try:
        ctx.archive.put_stream(key, stream)
    except StorageUnavailable as exc:
        if stream.error is not None:  # the download failed inside the upload: report the download's error
            raise stream.error from exc
        raise
    if stream.error is not None:
        raise stream.error
    elapsed = time.monotonic() - started
    log.info(
        "video archived",
        extra={
            "provider": event.provider,
            "task_id": event.task_id,
            "key": key,
            "bytes": stream.size,
            "seconds": round(elapsed, 3),
            "resumes": stream.resumes,
        },
    )
    return FileRecord(
        index=index,
        source_url=url,
        key=key,
        size=stream.size,
        sha256=stream.sha256,
        content_type=stream.content_type,
    )


def _progress(job: Job | None) -> dict[int, FileRecord]:
    if job is None:
        return {}
    saved = job.meta.get("files") or {}
    return {int(i): FileRecord(**rec) for i, rec in saved.items()}


def _save_progress(job: Job | None, record: FileRecord) -> None:
    if job is None:
        return
    job.meta.setdefault("files", {})[str(record.index)] = record.to_json()
    job.save_meta()
