"""kie.ai's 1080p rendition of an archived task, polled for and archived beside the original (``KIE_FETCH_1080P``).

get-1080p-video has no callback (:mod:`veo_archiver.providers.kie_1080p`), so after a kie.ai generate or
extend task is archived, :func:`follow` (called by the archive job) schedules one RQ job per task,
:func:`poll_1080p`, ``KIE_1080P_POLL_INTERVAL`` seconds later (``enqueue_in``: the workers run RQ's scheduler).
Each run asks for every video of the task still missing its 1080p:

- ready: the file is streamed into ``{task}/{index}-1080p.mp4`` (:func:`workers.videos.stream`: the same
  egress guard, size cap and checks as the original) and added to the task's manifest as one more ``files[]``
  entry with ``"rendition": "1080p"``; the original entries are left as they are;
- not ready: the job returns an RQ ``Retry`` for the next poll, under the same job id, until its deadline:
  ``KIE_1080P_MAX_WAIT`` after the task was archived, never past the task's own URL deadline;
- then the manifest gets ``renditions: {"1080p": {"status": "archived" | "partial" | "unavailable", "at",
  "polls", "reason", "message", "missing": [indexes]}}`` and one ``veo:outcomes`` entry is published,
  ``rendition_archived`` (with the new files) or ``rendition_unavailable``.

A 1080p that never comes is recorded, never a dead letter: the original stays archived as it was. A fallback
task (its videos "can't be upscaled") is recorded ``unavailable`` (reason ``fallback``) without a request;
4K tasks are not followed. The job id is :func:`veo_archiver.redis_keys.rendition_job_id`: a second archive
run of the task (``already_archived``) finds the poll job alive and schedules nothing.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

import httpx
import redis
from rq.job import JobStatus, Retry, get_current_job

from veo_archiver import archive_keys, queue_view, redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import PermanentError, QueueUnavailable, TransientError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.providers import kie_1080p
from veo_archiver.providers.kie_1080p import RENDITION, Kind, Verdict
from veo_archiver.records import outcome as outcomes
from veo_archiver.settings import ProviderSettings
from workers import manifest
from workers.attempt import JobHandle
from workers.context import WorkerContext, current, ssl_context
from workers.storage import read_json
from workers.videos import EXPIRED_REASONS, reuse, stream

log = logging.getLogger(__name__)

PROVIDER = "kie"
#: RQ counts the polls itself; the deadline is what ends them
_RQ_RETRY_CEILING = 100_000
#: statuses of a poll job that is still going: a second :func:`follow` leaves it alone
_LIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED})
#: how long past its deadline a poll job keeps retrying a Redis or storage failure to record its end
_RECORD_GRACE_S = 3600


class RenditionApi(Protocol):
    """get-1080p-video (:class:`HttpRenditionApi` is the real one; tests may pass their own)."""

    def get(self, task_id: str, index: int) -> Verdict: ...


class HttpRenditionApi:
    """``GET {KIE_API_BASE}/api/v1/veo/get-1080p-video`` with ``KIE_API_KEY``, like the status client: the
    base is configured (trusted), so no egress guard; the file it names is fetched through the guarded one."""

    def __init__(
        self, provider: ProviderSettings, client: httpx.Client | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self._provider = provider
        self._client = client or httpx.Client(timeout=httpx.Timeout(20.0, connect=10.0), verify=tls or True)

    def get(self, task_id: str, index: int) -> Verdict:
        if self._provider.api_key is None:
            return Verdict(Kind.UNAVAILABLE, reason="no_api_key", message="KIE_API_KEY is not set")
        url, headers = kie_1080p.request(self._provider.api_base, task_id, index, self._provider.api_key)
        try:
            response = self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            return Verdict(Kind.PENDING, reason="unreachable", message=repr(exc)[:200])
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        return kie_1080p.parse(response.status_code, body)

    def close(self) -> None:
        self._client.close()


def follow(ctx: WorkerContext, job: JobHandle | None, body: dict[str, Any], *, url_deadline: float) -> str | None:
    """After the archive job archived (or found archived) a task: schedule the polls of its 1080p, when
    ``KIE_FETCH_1080P`` is on and the task is a kie.ai generate/extend with no 1080p recorded yet. The poll
    job's id, or None. A Redis failure raises :class:`QueueUnavailable` (the archive job is retried)."""
    settings = ctx.settings
    if not settings.kie_fetch_1080p or job is None or job.connection is None:
        return None
    if body.get("provider") != PROVIDER or body.get("status") != TaskStatus.SUCCEEDED.value:
        return None
    if body.get("kind") == "4k" or _recorded(body) is not None:
        return None
    task_id = str(body["task_id"])
    indexes = sorted({int(f["index"]) for f in body.get("files") or [] if not f.get("rendition")})
    if not indexes:
        return None
    job_id = redis_keys.rendition_job_id(PROVIDER, task_id, RENDITION)
    deadline = min(ctx.clock() + settings.kie_1080p_max_wait_s, url_deadline)
    try:
        queue = queue_view.queue_of(job.connection, settings.queue_name)
        existing = queue.fetch_job(job_id)
        if existing is not None and existing.get_status(refresh=False) in _LIVE:
            return None
        queue.enqueue_in(
            timedelta(seconds=settings.kie_1080p_poll_interval_s),
            redis_keys.RENDITION_1080P_JOB,
            kwargs={"task_id": task_id, "indexes": indexes, "deadline": deadline},
            job_id=job_id,
            job_timeout=settings.job_timeout_s,  # a poll may download a video, as the archive job does
            result_ttl=settings.result_ttl_s,
            failure_ttl=settings.failure_ttl_s,
            description=f"1080p of {PROVIDER}/{task_id[:200]}",
            meta={"provider": PROVIDER, "task_id": task_id, "rendition": RENDITION},
        )
    except redis.RedisError as exc:
        raise QueueUnavailable(f"redis: scheduling the 1080p polls: {exc}") from exc
    log.info("1080p polls scheduled", extra={"provider": PROVIDER, "task_id": task_id, "job_id": job_id})
    return job_id


def poll_1080p(task_id: str, indexes: list[int], deadline: float) -> dict[str, Any] | Retry:
    """The RQ entry point (:data:`veo_archiver.redis_keys.RENDITION_1080P_JOB`): this process's collaborators."""
    ctx = current()
    api = HttpRenditionApi(ctx.settings.providers[PROVIDER], tls=ssl_context())
    try:
        return run_poll(ctx, api, get_current_job(), task_id=task_id, indexes=indexes, deadline=deadline)
    finally:
        api.close()


def run_poll(
    ctx: WorkerContext, api: RenditionApi, job: JobHandle | None, *, task_id: str, indexes: list[int], deadline: float
) -> dict[str, Any] | Retry:
    """One poll; ``job`` None (a direct call) raises a transient failure instead of returning a Retry."""
    fields = {"provider": PROVIDER, "task_id": task_id, "job_id": job.id if job is not None else None}
    interval = ctx.settings.kie_1080p_poll_interval_s
    try:
        return _poll(ctx, api, job, task_id, indexes, deadline)
    except _NotYet as wait:
        log.info("1080p not ready: %s", wait.reason, extra={**fields, "next_poll_s": interval})
        return _retry(job, min(interval, max(deadline - ctx.clock(), 0.0)))
    except TransientError as exc:
        if job is None or ctx.clock() > deadline + _RECORD_GRACE_S:
            raise
        log.warning("1080p poll failed, retried: %s", exc.message, extra={**fields, "reason": exc.reason})
        return _retry(job, interval)


class _NotYet(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _retry(job: JobHandle | None, delay_s: float) -> Retry:
    if job is None:
        raise QueueUnavailable("1080p not ready and no RQ job to schedule the next poll", reason="rendition_pending")
    return Retry(max=_RQ_RETRY_CEILING, interval=[max(1, math.ceil(delay_s))])


def _poll(
    ctx: WorkerContext, api: RenditionApi, job: JobHandle | None, task_id: str, indexes: list[int], deadline: float
) -> dict[str, Any]:
    archive = ctx.archive
    key = archive_keys.manifest_key(PROVIDER, task_id)
    body = read_json(archive, key)
    if body is None or body.get("status") != TaskStatus.SUCCEEDED.value:
        log.warning("no archived task to add a 1080p to", extra={"provider": PROVIDER, "task_id": task_id})
        return {"outcome": "skipped", "manifest": key}
    record = _recorded(body)
    if record is None:
        record = _resolve(ctx, api, job, body, key, indexes, deadline)
    _publish(ctx, job, body, key, record)
    return {"outcome": record["status"], "manifest": key, "rendition": RENDITION}


def _resolve(
    ctx: WorkerContext,
    api: RenditionApi,
    job: JobHandle | None,
    body: dict[str, Any],
    key: str,
    indexes: list[int],
    deadline: float,
) -> dict[str, Any]:
    """Poll every missing index; raise :class:`_NotYet` while one is pending before the deadline, else write
    and return the manifest's final ``renditions`` record."""
    task_id = str(body["task_id"])
    meta = job.meta if job is not None else {}
    polls = int(meta.get("polls", 0)) + 1
    gone: dict[str, dict[str, str]] = dict(meta.get("unavailable") or {})  # index → verdict, across polls
    why_not = kie_1080p.upscalable(body)
    pending: list[Verdict] = []
    for index in indexes:
        if why_not is not None:
            gone[str(index)] = {"reason": why_not, "message": "kie.ai cannot upscale this task"}
        if str(index) in gone or _file(body, index) is not None:
            continue
        verdict = _fetch(ctx, api, job, body, key, index)
        if verdict.kind is Kind.UNAVAILABLE:
            gone[str(index)] = {"reason": verdict.reason, "message": verdict.message}
        elif verdict.kind is Kind.PENDING:
            pending.append(verdict)
    if job is not None:
        job.meta.update(polls=polls, unavailable=gone)
        job.save_meta()
    now = ctx.clock()
    if pending and now < deadline:
        raise _NotYet(pending[0].reason)
    missing = [i for i in indexes if _file(body, i) is None]
    last = next(iter(gone.values()), None)
    reason, message = (last["reason"], last["message"]) if last else ("", "")
    if pending:
        reason, message = "not_ready_in_time", f"still {pending[0].reason} at the deadline ({pending[0].message})"
    status = "archived" if not missing else ("partial" if len(missing) < len(indexes) else "unavailable")
    record: dict[str, Any] = {"status": status, "at": iso(now), "polls": polls, "missing": missing}
    if missing:
        record |= {"reason": reason, "message": message[:300]}
    body.setdefault("renditions", {})[RENDITION] = record
    ctx.archive.put_bytes(key, manifest.encode(body))
    log.info("1080p %s", status, extra={"provider": PROVIDER, "task_id": task_id, "reason": record.get("reason")})
    return record


def _fetch(
    ctx: WorkerContext, api: RenditionApi, job: JobHandle | None, body: dict[str, Any], key: str, index: int
) -> Verdict:
    """Ask for one index; when ready, archive the file and add it to the manifest (written at once)."""
    task_id = str(body["task_id"])
    verdict = api.get(task_id, index)
    if verdict.kind is not Kind.READY or verdict.url is None:
        return verdict
    event = TaskEvent(
        provider=PROVIDER,
        task_id=task_id,
        status=TaskStatus.SUCCEEDED,
        result_urls=(verdict.url,),
        verification=Verification.PROVIDER_API,
    )
    try:
        record = reuse(ctx, event, index, verdict.url, None, rendition=RENDITION)
        if record is None:
            record = stream(ctx, event, index, verdict.url, job, rendition=RENDITION)
    except PermanentError as exc:
        if exc.reason in EXPIRED_REASONS:  # the link lapsed before we fetched it: the next poll gives a fresh one
            return Verdict(Kind.PENDING, reason=f"link_{exc.reason}", message=exc.message[:200])
        return Verdict(Kind.UNAVAILABLE, reason=exc.reason, message=exc.message[:200])
    entry = {**record.to_json(), "object_key": ctx.archive.object_key(record.key), "rendition": RENDITION}
    body["files"] = [*(body.get("files") or []), entry]
    ctx.archive.put_bytes(key, manifest.encode(body))
    return verdict


def _publish(ctx: WorkerContext, job: JobHandle | None, body: dict[str, Any], key: str, record: dict[str, Any]) -> None:
    """The end's entry on ``veo:outcomes``, once per poll job (a failed publish is retried by the next run,
    which finds the record in the manifest)."""
    if job is None:
        return
    object_key: Callable[[str], str] = ctx.archive.object_key
    files = [
        {**{k: v for k, v in f.items() if k != "object_key"}, "key": object_key(f["key"])}
        for f in body.get("files") or []
        if f.get("rendition") == RENDITION
    ]
    outcomes.publish(
        job.connection,
        outcome=outcomes.RENDITION_ARCHIVED if files else outcomes.RENDITION_UNAVAILABLE,
        provider=PROVIDER,
        task_id=str(body["task_id"]),
        status=TaskStatus.SUCCEEDED.value,
        reason=record.get("reason") or "",
        error=record.get("message") or "",
        job_id=job.id,
        at=record.get("at"),
        manifest_key=object_key(key),
        location=ctx.archive.location(key),
        files=files,
        strict=True,
    )


def _recorded(body: dict[str, Any]) -> dict[str, Any] | None:
    renditions = body.get("renditions")
    record = renditions.get(RENDITION) if isinstance(renditions, dict) else None
    return record if isinstance(record, dict) else None


def _file(body: dict[str, Any], index: int) -> dict[str, Any] | None:
    for entry in body.get("files") or []:
        if isinstance(entry, dict) and entry.get("rendition") == RENDITION and entry.get("index") == index:
            return entry
    return None
