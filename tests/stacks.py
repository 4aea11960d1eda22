"""What a test builds around the code under test, in one place: the Settings of an in-process app, and a Stack
of real processes over one Redis and one archive.

    settings = settings_for(redis_server, kie_hmac_keys=(KEY,))          # create_app(settings), Intake(settings, …)
    with Stack(tmp_path, redis_server.url, S3Archive(seaweed, bucket), KIE_WEBHOOK_HMAC_KEYS=KEY) as stack:
        stack.start_receiver()                    # uvicorn in a child process; stack.base is its URL
        stack.start_worker()                      # `veo-archiver worker`; or stack.run_burst() for a burst worker
        manifest = stack.manifest("kie", task_id) # waits (bounded) until the archive holds it
    with stack.in_process() as client: …          # the same environment's app in this process (TestClient)

The archive is a local directory (:class:`DirArchive`) or a bucket of the session's SeaweedFS
(:class:`S3Archive`); either way ``stack.read(key)`` and ``stack.object_keys()`` see keys relative to the archive
prefix. Free ports come from :func:`tests.servers.free_port`, processes from :mod:`tests.procs`. Every wait is
bounded, and :meth:`Stack.close` stops (or kills) everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import redis
from starlette.testclient import TestClient

from tests.procs import REPO, Service, start_receiver, start_worker, wait_for
from tests.servers import SeaweedS3
from veo_archiver import archive_keys, redis_keys
from veo_archiver.settings import Settings
from veo_archiver.text import text


class HasUrl(Protocol):
    @property
    def url(self) -> str: ...


def settings_for(redis_server: HasUrl, *, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings for an app in the test's process: this test's Redis and ``overrides`` on top of the code's
    defaults (no keys, no spool: see ``Settings.spool_dir``), or on top of ``env`` read as the processes read it
    (``Settings.from_env``) when the test shares one environment with a process. A module with a common base
    binds it once with ``functools.partial(settings_for, kie_hmac_keys=(KEY,))``; a call's overrides still win."""
    if env is not None:
        return Settings.from_env({**env, "REDIS_URL": redis_server.url}, **overrides)
    return Settings(redis_url=redis_server.url, **overrides)


# ---------------------------------------------------------------------------------------------- archives


class Archive(Protocol):
    def env(self) -> dict[str, str]:
        """``ARCHIVE_URL`` and whatever else the processes need to reach it."""
        ...

    def read(self, key: str) -> bytes | None: ...

    def keys(self) -> list[str]: ...


class DirArchive:
    """``ARCHIVE_URL=<directory>``: the local-directory store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def env(self) -> dict[str, str]:
        return {"ARCHIVE_URL": str(self.root)}

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


class S3Archive:
    """``ARCHIVE_URL=s3://<bucket>/<prefix>`` in SeaweedFS, read back with the test's own boto3 client."""

    def __init__(self, seaweed: SeaweedS3, bucket: str, prefix: str = "archive") -> None:
        self.seaweed, self.bucket, self.prefix = seaweed, bucket, prefix.strip("/")
        self.s3: Any = seaweed.boto3_client()

    def env(self) -> dict[str, str]:
        return self.seaweed.env(self.bucket, self.prefix)

    def read(self, key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body

    def keys(self) -> list[str]:
        """Every object of the bucket (each test has its own), the prefix taken off."""
        out: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            out += [o["Key"].removeprefix(self.prefix + "/") for o in page.get("Contents", [])]
        return sorted(out)


# ---------------------------------------------------------------------------------------------- the stack


class Stack:
    """Receiver(s) under uvicorn and RQ worker processes sharing one environment: this Redis, this archive,
    ``env`` on top (a value of None leaves the variable out). ``rds`` is the test's own Redis client."""

    def __init__(self, tmp: Path, redis_url: str, archive: Archive, **env: str | None) -> None:
        self.tmp = tmp
        self.archive = archive
        self.env = _merged({"REDIS_URL": redis_url, **archive.env()}, env)
        self.rds = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.receivers: dict[str, Service] = {}  # base URL -> process
        self.workers: list[Service] = []
        self.base = ""

    @property
    def receiver(self) -> Service:
        """The first receiver started: the one ``base`` points at."""
        assert self.base, "no receiver started"
        return self.receivers[self.base]

    # -- processes ---------------------------------------------------------------------------------------

    def start_receiver(self, **env: str | None) -> str:
        """A receiver process with ``env`` on top of the stack's; its base URL (the first is also ``base``)."""
        service, base = start_receiver(_merged(self.env, env), self.tmp)
        self.receivers[base] = service
        self.base = self.base or base
        return base

    def start_worker(self, count: int = 1, **env: str | None) -> Service:
        """``veo-archiver worker --count N``, kept running until :meth:`close`."""
        service = start_worker(_merged(self.env, env), self.tmp, count=count)
        self.workers.append(service)
        return service

    def run_burst(self, timeout: float = 120, **env: str | None) -> None:
        """A real ``veo-archiver worker --burst`` process: archives what is queued, then exits 0.

        A separate process, not ``work(burst=True)`` in pytest's: RQ forks a work horse per job, and a horse
        forked from a process whose obstore runtime already ran (any earlier storage test) hangs on its threads.
        """
        worker = Service(["worker", "--burst"], _merged(self.env, env), self.tmp / "worker-burst.log").start()
        assert worker.process is not None
        try:
            code = worker.process.wait(timeout=timeout)
        finally:
            worker.kill_group()
        assert code == 0, worker.log()[-3000:]

    @contextlib.contextmanager
    def in_process(self, **overrides: Any) -> Iterator[TestClient]:
        """The receiver app of this environment in the test's process, through Starlette's TestClient."""
        from receiver.app import create_app  # here: core tests use settings_for without importing the receiver

        with TestClient(create_app(Settings.from_env(self.env, **overrides))) as client:
            yield client

    def cli(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``veo-archiver <argv>`` with the stack's environment (text logs)."""
        return subprocess.run(
            [sys.executable, "-m", "veo_archiver", "--log-format", "text", *argv],
            env={**os.environ, **self.env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def logs(self, chars: int = 3000) -> str:
        parts = [f"--- receiver {r.pid}\n{r.log()[-chars:]}" for r in self.receivers.values()]
        parts += [f"--- worker {w.pid}\n{w.log()[-chars:]}" for w in self.workers]
        return "\n".join(parts)

    def close(self) -> None:
        """Warm-stop every process; kill the whole process group of anything that lingers."""
        for service in [*self.workers, *self.receivers.values()]:
            try:
                service.stop(timeout=30)
            except Exception:
                with contextlib.suppress(Exception):
                    service.kill_group()
        with contextlib.suppress(Exception):
            self.rds.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- what the stack produced -------------------------------------------------------------------------

    def read(self, key: str) -> bytes | None:
        return self.archive.read(key)

    def object_keys(self) -> list[str]:
        return self.archive.keys()

    def manifest(self, provider: str, task_id: str, timeout: float = 60) -> dict[str, Any]:
        """The task's manifest, once the archive holds it."""
        key = archive_keys.manifest_key(provider, task_id)
        raw = wait_for(lambda: self.read(key), timeout, what=f"{key}\n{self.logs(4000)}")
        return json.loads(raw)  # type: ignore[no-any-return]

    def outcomes(self) -> list[dict[str, str]]:
        return _entries(self.rds, redis_keys.outcomes_stream())

    def events(self) -> list[dict[str, str]]:
        return _entries(self.rds, redis_keys.events_stream())


def _merged(base: dict[str, str], extra: dict[str, str | None]) -> dict[str, str]:
    out = {**base, **{k: v for k, v in extra.items() if v is not None}}
    for name in (k for k, v in extra.items() if v is None):
        out.pop(name, None)
    return out


def _entries(rds: redis.Redis, stream: str) -> list[dict[str, str]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = rds.xrange(stream)  # type: ignore[assignment]
    return [{text(k): text(v) for k, v in entry.items()} for _, entry in entries]


#: what the receiver keeps of a refused request: counters and the latest refusals (time, provider, reason, client
#: address, path; never its body or headers): see veo_archiver/records/refusals.py
REFUSAL_RECORDS = "veo:refusals:"


def stored_keys(rds: Any, pattern: str = "*") -> list[str]:
    """Redis keys matching ``pattern``, the refusal records left out: what a refused request must not leave."""
    keys = (k.decode() if isinstance(k, bytes) else str(k) for k in rds.keys(pattern))
    return sorted(k for k in keys if not k.startswith(REFUSAL_RECORDS))
