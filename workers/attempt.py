"""One run of the archive job, as the modules around it see it: :class:`JobHandle`, what a run reads and writes
on its RQ job, and :class:`Attempt`, the run itself (its job, its event, when it started), which every end of
the run (an outcome published, a dead letter marked) is reported with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import redis

from veo_archiver.event import TaskEvent


class JobHandle(Protocol):
    """What the job reads and writes on its RQ job (``rq.job.Job`` is one): progress and retry attempts in
    ``meta``, the dead-letter mark, and the Redis connection that outcomes are published on."""

    meta: dict[str, Any]
    number_of_retries: int | None
    retries_left: int | None

    @property
    def id(self) -> str: ...
    @property
    def connection(self) -> redis.Redis | None: ...
    def save_meta(self) -> None: ...


@dataclass(frozen=True)
class Attempt:
    """One run of the job: ``job`` is None outside RQ (tests, direct calls); ``started`` is
    ``time.monotonic()`` when the run began (the outcome's duration counts from it)."""

    job: JobHandle | None
    event: TaskEvent
    started: float

    @property
    def connection(self) -> redis.Redis | None:
        return self.job.connection if self.job is not None else None

    @property
    def log_fields(self) -> dict[str, Any]:
        """The structured fields of every log line about this run."""
        return {
            "provider": self.event.provider,
            "task_id": self.event.task_id,
            "job_id": self.job.id if self.job is not None else None,
        }
