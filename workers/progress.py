"""The progress of one download, written to Redis while the video streams (read by
:mod:`veo_archiver.records.progress`, which describes the hash).

:class:`ProgressWriter` is told the byte count after every chunk and writes at most once every
:data:`~veo_archiver.records.progress.INTERVAL_S` seconds (plus once at the first chunk, so a download shows
as soon as it starts): a 4 GiB video in 1 MiB chunks costs a few hundred small writes, not four thousand.
Each write is ``HSET`` + ``EXPIRE`` in one ``MULTI``, so the hash never lives without its TTL. Writing is best
effort: a Redis error is logged once and never reaches the download (an exception raised from the chunk
iterator would abort the upload). The clock is injected (the job passes its context's), so the throttle is
tested without waiting; a clock that steps back starts a new window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.records.progress import INTERVAL_S, TTL_S, Progress, eta

log = logging.getLogger(__name__)


class Measured(Protocol):
    """What the writer reads after each chunk (:class:`workers.fetch.VideoStream` is one)."""

    @property
    def size(self) -> int: ...
    @property
    def declared_length(self) -> int | None: ...


class RunningJob(Protocol):
    """The RQ job the download belongs to (:class:`workers.attempt.JobHandle` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def connection(self) -> redis.Redis | None: ...


class ProgressWriter:
    """``ProgressWriter(connection, job_id, provider=…, task_id=…, file=0, files=1)``; ``connection`` None
    (a job run outside RQ) writes nothing."""

    @classmethod
    def of_job(
        cls,
        job: RunningJob | None,
        *,
        provider: str,
        task_id: str,
        file: int,
        files: int,
        clock: Callable[[], float] = time.time,
    ) -> ProgressWriter:
        connection, job_id = (job.connection, job.id) if job is not None else (None, "")
        return cls(connection, job_id, provider=provider, task_id=task_id, file=file, files=files, clock=clock)

    def __init__(
        self,
        connection: redis.Redis | None,
        job_id: str,
        *,
        provider: str,
        task_id: str,
        file: int,
        files: int,
        clock: Callable[[], float] = time.time,
        interval_s: float = INTERVAL_S,
        ttl_s: int = TTL_S,
    ) -> None:
        self.connection = connection
        self.key = redis_keys.progress_key(job_id)
        self.job_id, self.provider, self.task_id, self.file, self.files = job_id, provider, task_id, file, files
        self.clock = clock
        self.interval_s, self.ttl_s = interval_s, ttl_s
        started = clock()
        self.started_at = iso(started)
        self.writes = 0
        self.last: Progress | None = None
        self._window_start = (started, 0)  # (time, bytes) at the last write, or at the start
        self._warned = False

    def update(self, done: int, total: int | None) -> bool:
        """Record ``done`` bytes of ``total``; True when this call wrote (the first one, then one per interval)."""
        now = self.clock()
        since, before = self._window_start
        elapsed = now - since
        if self.writes and 0 <= elapsed < self.interval_s:
            return False
        rate = max(done - before, 0) / elapsed if elapsed > 0 else 0.0
        self.last = Progress(
            job_id=self.job_id,
            provider=self.provider,
            task_id=self.task_id,
            file=self.file,
            files=self.files,
            bytes=done,
            total=total,
            rate=rate,
            eta_s=eta(done, total, rate),
            started_at=self.started_at,
            updated_at=iso(now),
        )
        self._window_start = (now, done)
        self.writes += 1
        self._write(self.last)
        return True

    def track(self, chunks: Iterable[bytes], source: Measured) -> Iterator[bytes]:
        """``chunks`` unchanged, with an :meth:`update` from ``source``'s counts after each one."""
        for chunk in chunks:
            self.update(source.size, source.declared_length)
            yield chunk

    def close(self) -> None:
        """The file ended (archived or failed): its entry goes."""
        if self.connection is None or not self.writes:
            return
        try:
            self.connection.delete(self.key)
        except redis.RedisError as exc:
            self._warn(exc)

    def _write(self, progress: Progress) -> None:
        if self.connection is None:
            return
        try:
            with self.connection.pipeline(transaction=True) as pipe:
                pipe.hset(self.key, mapping=progress.fields())  # type: ignore[arg-type]
                pipe.expire(self.key, self.ttl_s)
                pipe.execute()
        except redis.RedisError as exc:
            self._warn(exc)

    def _warn(self, exc: redis.RedisError) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "download progress not recorded: %s",
                exc,
                extra={"job_id": self.job_id, "provider": self.provider, "task_id": self.task_id},
            )
