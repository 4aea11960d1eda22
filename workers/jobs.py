"""The archive job: an importable, idempotent function with one JSON argument (the intake envelope).

Flow: confirm with the provider's status API when its key is configured (the confirmed state and URLs
replace the callback's claim) → for each result URL, reuse the object if it is already in the archive,
else stream it in (a 403/404/410 asks the provider for a fresh URL) → write the manifest last.

Outcomes:
- ``archived`` / ``already_archived``: done.
- a :class:`TransientError` (network, 5xx, provider busy, task not ready): the job returns an RQ ``Retry``
  with exponential backoff and jitter, never scheduled past the URL's deadline (:mod:`workers.deadline`);
  the worker is free meanwhile.
- a :class:`PermanentError`, or a transient one with no time or attempts left: ``retries_left`` is set to 0
  and the error re-raised, so the job lands in RQ's failed registry, our dead-letter state, with
  ``job.meta["dead_letter"] = {"reason", "error", "at"}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from rq.job import Job, Retry, get_current_job

from veo_archiver import archive_keys, redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import (
    BadContent,
    DownloadFailed,
    DownloadRefused,
    DownloadTransient,
    PermanentError,
    StorageUnavailable,
    TransientError,
)
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.records import outcome as outcomes
from workers import manifest
from workers.context import WorkerContext, current
from workers.deadline import next_retry, url_deadline
from workers.fetch import VideoStream
from workers.manifest import FileRecord
from workers.mp4 import looks_like_video

log = logging.getLogger(__name__)

EXPIRED_REASONS = frozenset({"http_403", "http_404", "http_410"})
#: RQ counts retries itself; our own attempt limit (settings.download_attempts) is what decides
_RQ_RETRY_CEILING = 10_000


def archive_task(envelope: dict[str, Any]) -> dict[str, Any] | Retry:
    job = get_current_job()
    event = TaskEvent.from_json(envelope["event"])
    fields = {"provider": event.provider, "task_id": event.task_id, "job_id": job.id if job else None}
    ctx = current()
    started = time.monotonic()
    connection = job.connection if job is not None else None
    try:
        result = _archive(ctx, event, envelope, job)
    except TransientError as exc:
        if job is None:
            raise
        decision = next_retry(
            attempt=job.number_of_retries or 0,
            max_attempts=ctx.settings.download_attempts,
            now=time.time(),
            deadline=_deadline(ctx, event, envelope),
            base_s=ctx.settings.retry_base_s,
            cap_s=ctx.settings.retry_cap_s,
            retry_after_s=getattr(exc, "retry_after", None),
        )
        _record_attempt(job, exc, decision.delay_s)
        if decision.delay_s is None:
            final = PermanentError(f"{decision.reason}; last error: {exc.message}", reason=decision.reason)
            _dead_letter(job, final, fields)
            outcomes.publish(
                connection,
                outcome="dead_letter",
                provider=event.provider,
                task_id=event.task_id,
                status=event.status.value,
                reason=final.reason,
                duration_s=time.monotonic() - started,
            )
            raise final from exc
        log.warning(
            "transient failure, retry scheduled: %s",
            exc.message,
            extra={**fields, "reason": exc.reason, "retry_in_s": round(decision.delay_s, 1)},
        )
        return Retry(max=_RQ_RETRY_CEILING, interval=[math.ceil(decision.delay_s)])
    except PermanentError as exc:
        _dead_letter(job, exc, fields)
        outcomes.publish(
            connection,
            outcome="dead_letter",
            provider=event.provider,
            task_id=event.task_id,
            status=event.status.value,
            reason=exc.reason,
            duration_s=time.monotonic() - started,
        )
        raise
    log.info("task %s", result["outcome"], extra=fields)
    if result["outcome"] == "archived":
        outcomes.publish(
            connection,
            outcome="archived",
            provider=event.provider,
            task_id=event.task_id,
            status=result["status"],
            manifest_key=result["manifest"],
            location=ctx.archive.location(result["manifest"]),
            files=result["files"],
            duration_s=time.monotonic() - started,
            time_left_s=_deadline(ctx, event, envelope) - time.time() if result["files"] else None,
        )
    return result


def _deadline(ctx: WorkerContext, event: TaskEvent, envelope: dict[str, Any]) -> float:
    received = float(envelope.get("received_ts") or time.time())
    lifetime = (
        ctx.settings.providers[event.provider].url_lifetime_s if event.provider in ctx.settings.providers else 24 * 3600
    )
    urls = event.result_urls or ("",)
    return min(url_deadline(url, received, lifetime) for url in urls)


def _archive(ctx: WorkerContext, event: TaskEvent, envelope: dict[str, Any], job: Job | None) -> dict[str, Any]:
    archive = ctx.archive
    manifest_key = archive_keys.manifest_key(event.provider, event.task_id)
    existing = archive.get_json(manifest_key)
    if existing is not None and existing.get("status") in (TaskStatus.SUCCEEDED.value, event.status.value):
        return {"outcome": "already_archived", "manifest": manifest_key, "status": existing.get("status")}

    claimed = event
    confirmed_at: str | None = None
    if ctx.status.can_confirm(event.provider) and event.verification is not Verification.PROVIDER_API:
        event = _confirm(ctx, event)
        confirmed_at = iso(time.time())
        if event.status is not claimed.status and existing is not None:
            if existing.get("status") == event.status.value:
                return {"outcome": "already_archived", "manifest": manifest_key, "status": existing.get("status")}

    callback_key = archive_keys.callback_key(event.provider, event.task_id, claimed.status.value)
    archive.put_bytes(
        callback_key,
        json.dumps({**envelope["callback"], "delivery_id": envelope["delivery_id"]}, indent=2).encode(),
    )
    callback = {
        "key": callback_key,
        "location": archive.location(callback_key),
        "delivery_id": envelope["delivery_id"],
        "redis": redis_keys.deliveries_key(event.provider, event.task_id),
    }

    files: list[FileRecord] = []
    if event.status is TaskStatus.SUCCEEDED:
        if not event.result_urls:
            raise PermanentError("the task succeeded but carries no result URL", reason="no_results")
        done = _progress(job)
        for index, url in enumerate(event.result_urls):
            record = _reuse(ctx, event, index, url, done.get(index))
            if record is None:
                record, event = _download(ctx, event, index, url)
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
    body["confirmed"] = {"via": "provider_api", "at": confirmed_at} if confirmed_at else None
    if claimed.status is not event.status or claimed.result_urls != event.result_urls:
        body["claimed"] = {"status": claimed.status.value, "result_urls": list(claimed.result_urls)}
    if event.status is TaskStatus.SUCCEEDED:
        archive.put_bytes(manifest_key, manifest.encode(body))  # a success replaces an earlier failure manifest
    elif not archive.put_if_absent(manifest_key, manifest.encode(body)):
        return {"outcome": "already_archived", "manifest": manifest_key}
    return {
        "outcome": "archived",
        "manifest": manifest_key,
        "status": event.status.value,
        "files": [f.to_json() for f in files],
    }


def _confirm(ctx: WorkerContext, event: TaskEvent) -> TaskEvent:
    confirmed = ctx.status.fetch(event.provider, event.task_id)
    if confirmed.status in (TaskStatus.IN_PROGRESS, TaskStatus.UNKNOWN):
        raise DownloadTransient(
            f"provider reports the task as {confirmed.provider_status!r}, not finished yet", reason="not_ready"
        )
    if confirmed.status is not event.status or confirmed.result_urls != event.result_urls:
        log.warning(
            "provider status API disagrees with the callback; using the provider's answer",
            extra={
                "provider": event.provider,
                "task_id": event.task_id,
                "claimed": event.status.value,
                "confirmed": confirmed.status.value,
            },
        )
    return replace(
        confirmed,
        extra={**event.extra, **confirmed.extra},
        verification=event.verification,
        kind=event.kind or confirmed.kind,
    )


def _reuse(ctx: WorkerContext, event: TaskEvent, index: int, url: str, record: FileRecord | None) -> FileRecord | None:
    """An object already at the video's key is never rewritten: it is re-used, after checking it."""
    key = archive_keys.video_key(event.provider, event.task_id, index)
    stored = ctx.archive.head(key)
    if stored is None:
        return None
    if record is not None and record.key == key and record.size == stored.size:
        return record
    digest = hashlib.sha256()
    head = b""
    size = 0
    for chunk in ctx.archive.iter_bytes(key):
        if len(head) < 12:
            head += chunk[: 12 - len(head)]
        digest.update(chunk)
        size += len(chunk)
    if size != stored.size or not looks_like_video(head):
        raise BadContent(f"object at {key} is not the video it should be ({size} bytes)", reason="archive_conflict")
    log.info(
        "video already in the archive; reused", extra={"provider": event.provider, "task_id": event.task_id, "key": key}
    )
    return FileRecord(index=index, source_url=url, key=key, size=size, sha256=digest.hexdigest(), content_type=None)


def _download(ctx: WorkerContext, event: TaskEvent, index: int, url: str) -> tuple[FileRecord, TaskEvent]:
    try:
        return _stream(ctx, event, index, url), event
    except DownloadFailed as exc:
        if exc.reason not in EXPIRED_REASONS or not ctx.status.can_confirm(event.provider):
            raise
        fresh = _confirm(ctx, event)
        if len(fresh.result_urls) <= index or fresh.result_urls[index] == url:
            raise DownloadFailed(f"{exc.message}; the provider has no fresher URL", reason=exc.reason) from exc
        new_url = fresh.result_urls[index]
        log.info(
            "link expired; provider gave a fresh URL",
            extra={"provider": event.provider, "task_id": event.task_id, "index": index},
        )
        return _stream(ctx, fresh, index, new_url), fresh


def _stream(ctx: WorkerContext, event: TaskEvent, index: int, url: str) -> FileRecord:
    host = urlsplit(url).hostname or ""
    provider = ctx.settings.providers.get(event.provider)
    if provider is not None and not provider.host_allowed(host):
        raise DownloadRefused(f"{host} is not in DOWNLOAD_HOSTS_{event.provider.upper()}", reason="host_not_allowed")
    key = archive_keys.video_key(event.provider, event.task_id, index)
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
        index=index, source_url=url, key=key, size=stream.size, sha256=stream.sha256, content_type=stream.content_type
    )


def _dead_letter(job: Job | None, exc: PermanentError, fields: dict[str, Any]) -> None:
    if job is not None:
        job.retries_left = 0
        job.meta["dead_letter"] = {"reason": exc.reason, "error": exc.message, "at": iso(time.time())}
        job.save_meta()
    log.error("permanent failure: %s", exc.message, extra={**fields, "reason": exc.reason})


def _record_attempt(job: Job, exc: TransientError, delay: float | None) -> None:
    attempts = job.meta.setdefault("attempts", [])
    attempts.append(
        {
            "at": iso(time.time()),
            "reason": exc.reason,
            "error": exc.message[:500],
            "retry_in_s": None if delay is None else round(delay, 1),
        }
    )
    del attempts[:-20]
    job.save_meta()


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
