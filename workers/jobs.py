"""The archive job: an importable, idempotent function with one JSON argument (the intake envelope).

Flow: confirm with the provider's status API when its key is configured (the confirmed state and URLs
replace the callback's claim, :mod:`workers.confirm`) → for each result URL, reuse the object if it is
already in the archive, else stream it in (a 403/404/410 asks the provider for a fresh URL;
:mod:`workers.videos`) → write the raw callback and the manifest last.

:func:`archive_task` is the RQ entry point; it hands this process's collaborators (:mod:`workers.context`)
and the current RQ job to :func:`run_archive`, which tests call directly with in-memory ones. One run is an
:class:`workers.attempt.Attempt`, which its end (outcome published, dead letter marked) is reported with.

Outcomes (each end publishes one entry on ``veo:outcomes``, :mod:`veo_archiver.records.outcome`):
- ``archived`` (a video task) / ``provider_failed`` (the provider's failure, recorded in a failure manifest) /
  ``already_archived`` (the manifest was there: its outcome is published now if an earlier run could not).
  A failed publish raises a :class:`TransientError`: the job is retried, finds its manifest and publishes.
- a :class:`TransientError` (network, 5xx, provider busy, task not ready): the job returns an RQ ``Retry``
  with exponential backoff and jitter, never scheduled past the URL's deadline (:mod:`workers.deadline`);
  the worker is free meanwhile.
- a :class:`PermanentError`, or a transient one with no time or attempts left: ``retries_left`` is set to 0
  and the error re-raised, so the job lands in RQ's failed registry, our dead-letter state, with
  ``job.meta["dead_letter"] = {"reason", "error", "at"}``.

Every run starts by normalising the job's meta (:mod:`workers.job_meta`): meta another tool re-saved in
another format is rebuilt from the envelope, and a dead letter that runs again (requeued by any tool) gets
a fresh job's retry budget, its old verdict kept under ``previous_dead_letters``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import redis
from rq.job import Retry, get_current_job

from veo_archiver import archive_keys, redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import PermanentError, QueueUnavailable, TransientError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.records import dead_letter as dead_letters
from veo_archiver.records import delivery as delivery_records
from veo_archiver.records import outcome as outcomes
from workers import job_meta, lineage, manifest, rendition_1080p
from workers.attempt import Attempt, JobHandle
from workers.confirm import confirm
from workers.context import WorkerContext, current
from workers.deadline import next_retry, url_deadline
from workers.manifest import FileRecord
from workers.storage import read_json
from workers.videos import download, reuse

log = logging.getLogger(__name__)

#: RQ counts retries itself; our own attempt limit (settings.download_attempts) is what decides
_RQ_RETRY_CEILING = 10_000


def archive_task(envelope: dict[str, Any]) -> dict[str, Any] | Retry:
    """The RQ entry point (its dotted path is stored in every queued job): this process's collaborators."""
    return run_archive(envelope, current(), get_current_job())


def run_archive(envelope: dict[str, Any], ctx: WorkerContext, job: JobHandle | None) -> dict[str, Any] | Retry:
    """The job with its collaborators passed in: ``ctx`` (archive, download client, status API, clock,
    settings) and ``job`` (None outside RQ: a transient error is then raised instead of scheduled)."""
    event = TaskEvent.from_json(envelope["event"])
    attempt = Attempt(job=job, event=event, started=time.monotonic())
    fields = attempt.log_fields
    if job is not None:
        job_meta.normalise(job, envelope, event, fresh_retries=len(ctx.settings.retry_intervals_s), now=ctx.clock())
    try:
        result = _archive(ctx, event, envelope, job)
        _publish_end(ctx, attempt, envelope, result)
        # KIE_FETCH_1080P: kie.ai's 1080p is polled for by a job of its own, never failing this one
        rendition_1080p.follow(ctx, job, result["body"], url_deadline=_deadline(ctx, event, envelope))
    except TransientError as exc:
        if job is None:
            raise
        decision = next_retry(
            attempt=job.number_of_retries or 0,
            max_attempts=ctx.settings.download_attempts,
            now=ctx.clock(),
            deadline=_deadline(ctx, event, envelope),
            base_s=ctx.settings.retry_base_s,
            cap_s=ctx.settings.retry_cap_s,
            retry_after_s=getattr(exc, "retry_after", None),
        )
        job_meta.record_attempt(ctx, job, exc, decision.delay_s)
        if decision.delay_s is None:
            final = PermanentError(f"{decision.reason}; last error: {exc.message}", reason=decision.reason)
            job_meta.mark_dead_letter(ctx, attempt, final)
            raise final from exc
        log.warning(
            "transient failure, retry scheduled: %s",
            exc.message,
            extra={**fields, "reason": exc.reason, "retry_in_s": round(decision.delay_s, 1)},
        )
        return Retry(max=_RQ_RETRY_CEILING, interval=[math.ceil(decision.delay_s)])
    except PermanentError as exc:
        job_meta.mark_dead_letter(ctx, attempt, exc)
        raise
    log.info("task %s", result["outcome"], extra=fields)
    result.pop("body", None)
    return result


def _publish_end(ctx: WorkerContext, attempt: Attempt, envelope: dict[str, Any], result: dict[str, Any]) -> None:
    """The end's entry on ``veo:outcomes``, from the manifest (this run's, or the one an earlier run wrote,
    mapped by :func:`veo_archiver.records.outcome.of_manifest`): at most once per outcome id, and a Redis
    failure raises a TransientError (retried: the job is not done)."""
    job, event = attempt.job, attempt.event
    if job is None:
        return
    end = outcomes.of_manifest(result["body"], object_key=ctx.archive.object_key, status=event.status.value)
    manifest_key = result["manifest"]
    published = outcomes.publish(
        job.connection,
        outcome=end.outcome,
        provider=event.provider,
        task_id=event.task_id,
        status=end.status,
        job_id=end.job_id or job.id,
        run=end.run if end.job_id else dead_letters.run_of(job.meta),
        at=iso(ctx.clock()),
        reason=end.reason,
        error=end.error,
        manifest_key=ctx.archive.object_key(manifest_key),
        location=ctx.archive.location(manifest_key),
        files=end.files,
        duration_s=time.monotonic() - attempt.started,
        time_left_s=_deadline(ctx, event, envelope) - ctx.clock() if end.files else None,
        extends=lineage.for_outcome(result["body"].get("extends"), ctx.archive.object_key),
        strict=True,
    )
    if published and result["outcome"] == "already_archived":
        log.info("outcome published by a later run", extra={"provider": event.provider, "task_id": event.task_id})


def _deadline(ctx: WorkerContext, event: TaskEvent, envelope: dict[str, Any]) -> float:
    received = float(envelope.get("received_ts") or ctx.clock())
    lifetime = (
        ctx.settings.providers[event.provider].url_lifetime_s if event.provider in ctx.settings.providers else 24 * 3600
    )
    urls = event.result_urls or ("",)
    return min(url_deadline(url, received, lifetime) for url in urls)


def _raw_callback(envelope: dict[str, Any], event: TaskEvent, job: JobHandle | None) -> dict[str, Any]:
    """The delivery as received (headers, body), archived next to the manifest: carried by a version-1 job,
    read from its one stored copy, the task's delivery record, for a version-2 job
    (:mod:`veo_archiver.intake`). A record that expired before the job ran (a dead letter requeued after
    ``RAW_CALLBACK_TTL``) leaves a note in its place; the event itself is in the manifest either way."""
    carried = envelope.get("callback")
    if isinstance(carried, dict):
        return carried
    connection = job.connection if job is not None else None
    record = None
    if connection is not None:
        try:
            record = delivery_records.for_job(connection, envelope)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"redis: reading the delivery record: {exc}") from exc
    callback = record.get("callback") if record is not None else None
    if isinstance(callback, dict):
        return callback
    log.warning(
        "the delivery record of this job is no longer in Redis: its raw callback is not archived",
        extra={"provider": event.provider, "task_id": event.task_id, "delivery_id": envelope["delivery_id"]},
    )
    return {
        "received_at": envelope.get("received_at"),
        "body": None,
        "missing": "the delivery record had expired from Redis when the job ran",
    }


def _archive(ctx: WorkerContext, event: TaskEvent, envelope: dict[str, Any], job: JobHandle | None) -> dict[str, Any]:
    archive = ctx.archive
    manifest_key = archive_keys.manifest_key(event.provider, event.task_id)
    existing = read_json(archive, manifest_key)
    if existing is not None and existing.get("status") in (TaskStatus.SUCCEEDED.value, event.status.value):
        return _already(manifest_key, existing)

    claimed = event
    confirmed_at: str | None = None
    if ctx.status.can_confirm(event.provider) and event.verification is not Verification.PROVIDER_API:
        event = confirm(ctx, event)
        confirmed_at = iso(ctx.clock())
        if event.status is not claimed.status and existing is not None:
            if existing.get("status") == event.status.value:
                return _already(manifest_key, existing)

    files: list[FileRecord] = []
    if event.status is TaskStatus.SUCCEEDED:
        if not event.result_urls:
            raise PermanentError("the task succeeded but carries no result URL", reason="no_results")
        done = job_meta.progress(job)
        for index, url in enumerate(event.result_urls):
            record = reuse(ctx, event, index, url, done.get(index))
            if record is None:
                record, event = download(ctx, event, index, url, job)
            files.append(record)
            job_meta.save_progress(job, record)

    # the raw callback is written with the manifest, after the videos: a dead letter leaves no half task
    callback_key = archive_keys.callback_key(event.provider, event.task_id, claimed.status.value)
    raw_callback = _raw_callback(envelope, claimed, job)
    archive.put_bytes(
        callback_key,
        json.dumps({**raw_callback, "delivery_id": envelope["delivery_id"]}, indent=2).encode(),
    )
    callback = {
        "key": callback_key,
        "location": archive.location(callback_key),
        "delivery_id": envelope["delivery_id"],
        "redis": redis_keys.deliveries_key(event.provider, event.task_id),
    }
    body = manifest.build(
        event,
        files,
        received_at=raw_callback.get("received_at") or envelope.get("received_at") or iso(envelope["received_ts"]),
        archived_at=iso(ctx.clock()),
        callback=callback,
        job_id=job.id if job else None,
        object_key=archive.object_key,
        archive=archive.where(),
        run=dead_letters.run_of(job.meta) if job else 1,
    )
    body["confirmed"] = {"via": "provider_api", "at": confirmed_at} if confirmed_at else None
    extends = lineage.extends(archive, job.connection if job is not None else None, event.provider, event.task_id)
    if extends is not None:
        body["extends"] = extends
    body["urls_verified"] = manifest.urls_verified(event, confirmed=confirmed_at is not None)
    if claimed.status is not event.status or claimed.result_urls != event.result_urls:
        body["claimed"] = {"status": claimed.status.value, "result_urls": list(claimed.result_urls)}
    if event.status is TaskStatus.SUCCEEDED:
        archive.put_bytes(manifest_key, manifest.encode(body))  # a success replaces an earlier failure manifest
    elif not archive.put_if_absent(manifest_key, manifest.encode(body)):
        return _already(manifest_key, read_json(archive, manifest_key) or body)
    return {
        "outcome": "archived" if event.status is TaskStatus.SUCCEEDED else "provider_failed",
        "manifest": manifest_key,
        "status": event.status.value,
        "files": [f.to_json() for f in files],
        "body": body,
    }


def _already(manifest_key: str, existing: dict[str, Any]) -> dict[str, Any]:
    return {"outcome": "already_archived", "manifest": manifest_key, "status": existing.get("status"), "body": existing}
