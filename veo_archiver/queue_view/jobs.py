"""Jobs through RQ's own API, for the commands that list, explain or requeue them (``failed``, ``retry``,
``show``): RQ decodes the job hash (envelope, meta, times, latest result). Registries are read with
``cleanup=False``: looking must never move a job (RQ's own cleanup fails abandoned jobs as a side effect).

A *dead letter* is any job in RQ's failed registry; why it is there is read by
:mod:`veo_archiver.records.dead_letter` (the job's own verdict, or ``abandoned`` / ``crashed``), the same
classification the snapshot (:mod:`.reads`) gives ``status``, ``/ops`` and ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from veo_archiver.clock import epoch
from veo_archiver.records.dead_letter import DeadLetter, dead_letter_of

#: jobs fetched per Redis round trip when walking a registry
BATCH = 500


def queue_of(connection: redis.Redis, queue_name: str) -> Queue:
    return Queue(queue_name, connection=connection, serializer=JSONSerializer)


def fetch_jobs(connection: redis.Redis, job_ids: Iterable[str]) -> Iterator[tuple[str, Job | None]]:
    ids = list(job_ids)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        jobs = Job.fetch_many(chunk, connection=connection, serializer=JSONSerializer)
        yield from zip(chunk, jobs, strict=True)


def state_of(job: Job) -> str:
    """RQ's state of the job as stored (``queued``, ``scheduled``, ``failed``…), without a refresh."""
    status = job.get_status(refresh=False)
    return str(getattr(status, "value", status) or "?")


def dead_letters(
    connection: redis.Redis,
    queue_name: str,
    *,
    reason: str | None = None,
    provider: str | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Jobs in the failed registry, newest failure first, filtered by reason and provider."""
    registry = FailedJobRegistry(queue=queue_of(connection, queue_name))
    ids = registry.get_job_ids(desc=True, cleanup=False)
    out: list[DeadLetter] = []
    for _job_id, job in fetch_jobs(connection, ids):
        if job is None:  # the registry entry outlived the job's hash
            continue
        letter = dead_letter_of(job)
        if reason is not None and letter.reason != reason:
            continue
        if provider is not None and letter.provider != provider:
            continue
        out.append(letter)
    out.sort(key=lambda d: epoch(d.at) or 0.0, reverse=True)
    return out[:limit] if limit is not None else out
