"""What a job needs from its process: settings, the archive and an HTTP client, built once per process.

RQ forks a work horse per job; clients that own sockets or threads (httpx, obstore's runtime) must not
cross a fork, so they are built lazily in the process that uses them. The settings are installed by the
``veo-archiver worker`` entry point before it forks; a worker started another way reads the environment.

A :class:`WorkerContext` is also the job's whole set of collaborators: a test builds one by hand, with a
:class:`~workers.storage_memory.MemoryArchive`, an in-memory :class:`TaskStatusSource` and a fixed clock, and
hands it to :func:`workers.jobs.run_archive`.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from veo_archiver.event import TaskEvent
from veo_archiver.settings import Settings
from workers.egress import EgressPolicy
from workers.fetch import FetchPolicy, build_client
from workers.status_client import StatusClient
from workers.storage import Archive, open_archive


class TaskStatusSource(Protocol):
    """A provider's view of a task (:class:`~workers.status_client.StatusClient` is the real one)."""

    def can_confirm(self, provider: str) -> bool: ...
    def fetch(self, provider: str, task_id: str) -> TaskEvent: ...


@dataclass
class WorkerContext:
    settings: Settings
    archive: Archive
    #: the download client (egress-guarded in production); VideoStream streams through it
    client: httpx.Client
    fetch_policy: FetchPolicy
    status: TaskStatusSource
    #: wall clock, epoch seconds: timestamps, URL deadlines and retry scheduling
    clock: Callable[[], float] = field(default=time.time)


_settings: Settings | None = None
_context: WorkerContext | None = None
_context_pid: int | None = None


#: built once, before RQ forks: loading the CA bundle costs ~40 ms of CPU per client, and an SSLContext holds
#: no socket or thread, so every work horse can share the parent's
_ssl_context: ssl.SSLContext | None = None


def install(settings: Settings) -> None:
    global _settings, _context, _context_pid, _ssl_context
    _settings = settings
    _context = None
    _context_pid = None
    _ssl_context = httpx.create_ssl_context()


def ssl_context() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=settings.download_max_bytes,
        chunk_bytes=settings.download_chunk_bytes,
        connect_timeout_s=settings.download_connect_timeout_s,
        read_timeout_s=settings.download_read_timeout_s,
        deadline_s=max(60.0, settings.job_timeout_s - 60.0),
    )


def current() -> WorkerContext:
    global _context, _context_pid
    if _context is None or _context_pid != os.getpid():
        settings = _settings or Settings.from_env(os.environ)
        policy = fetch_policy(settings)
        _context = WorkerContext(
            settings=settings,
            archive=open_archive(settings.storage),
            client=build_client(policy, EgressPolicy(settings.download_allow_hosts), ssl_context()),
            fetch_policy=policy,
            status=StatusClient(settings.providers, ssl_context=ssl_context()),
        )
        _context_pid = os.getpid()
    return _context
