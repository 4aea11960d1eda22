"""Download progress of running jobs: one small hash per job, ``veo:progress:<job_id>``.

Written by :mod:`workers.progress` while a video streams into the archive, at most every :data:`INTERVAL_S`
(never per chunk), with a TTL of :data:`TTL_S` refreshed on each write, so the entry of a worker that died
vanishes within a minute; deleted when the file ends. It is kept off the job's meta on purpose: RQ saves
meta whole, and a per-write meta save grows with everything else the meta holds.

Fields (all strings): ``provider``, ``task_id``, ``file`` (index of the video being downloaded), ``files``
(videos in the task), ``bytes`` (so far), ``total`` (Content-Length; empty when the server sent none),
``rate`` (bytes/s over the last write's window), ``eta_s`` (empty when unknown), ``started_at`` and
``updated_at`` (ISO-8601 UTC). Read here for ``status``, ``show``, ``/ops`` and ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.text import text

#: at most one write per running download this often
INTERVAL_S = 2.0
#: an entry not refreshed for this long is gone (its worker died, or the download stalled that long)
TTL_S = 60


@dataclass(frozen=True)
class Progress:
    job_id: str
    provider: str
    task_id: str
    file: int
    files: int
    bytes: int
    total: int | None
    rate: float
    eta_s: float | None
    started_at: str | None
    updated_at: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fields(self) -> dict[str, str]:
        """The hash as the writer stores it."""
        return {
            "provider": self.provider,
            "task_id": self.task_id,
            "file": str(self.file),
            "files": str(self.files),
            "bytes": str(self.bytes),
            "total": "" if self.total is None else str(self.total),
            "rate": f"{self.rate:.1f}",
            "eta_s": "" if self.eta_s is None else f"{self.eta_s:.1f}",
            "started_at": self.started_at or "",
            "updated_at": self.updated_at or "",
        }

    @classmethod
    def from_fields(cls, job_id: str, raw: Mapping[Any, Any] | None) -> Progress | None:
        """The entry of one job from its hash (bytes or str keys); None for an empty (expired) hash."""
        if not raw:
            return None
        row = {text(k): text(v) for k, v in raw.items()}
        return cls(
            job_id=job_id,
            provider=row.get("provider") or "?",
            task_id=row.get("task_id") or "?",
            file=_int(row.get("file")) or 0,
            files=_int(row.get("files")) or 1,
            bytes=_int(row.get("bytes")) or 0,
            total=_int(row.get("total")),
            rate=_float(row.get("rate")) or 0.0,
            eta_s=_float(row.get("eta_s")),
            started_at=row.get("started_at") or None,
            updated_at=row.get("updated_at") or None,
        )

    def describe(self) -> str:
        """``3.1 GiB of 4.0 GiB, 42 MB/s, ETA 21 s``, for people."""
        done = size_text(self.bytes)
        head = f"{done} of {size_text(self.total)}" if self.total is not None else f"{done} (size unknown)"
        parts = [head, rate_text(self.rate)]
        if self.total is not None:
            parts.append(f"ETA {eta_text(self.eta_s)}")
        return ", ".join(parts)


def eta(done: int, total: int | None, rate: float) -> float | None:
    """Seconds left at ``rate``; None when the total is unknown or nothing moved in the window."""
    if total is None or rate <= 0:
        return None
    return max(total - done, 0) / rate


def read(connection: redis.Redis, job_ids: Iterable[str]) -> dict[str, Progress]:
    """The entries of these jobs (one pipelined round trip); jobs without one are left out."""
    ids = list(job_ids)
    if not ids:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hgetall(redis_keys.progress_key(job_id))
        replies = pipe.execute()
    found = (Progress.from_fields(job_id, raw) for job_id, raw in zip(ids, replies, strict=True))
    return {p.job_id: p for p in found if p is not None}


# ------------------------------------------------------------------------------------------- text


def size_text(n: int | None) -> str:
    """Binary units, as storage consoles show object sizes: ``512 B``, ``3.1 GiB``."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def rate_text(rate: float) -> str:
    """Decimal units, as network rates are quoted: ``42 MB/s``, ``3.5 kB/s``."""
    value = max(rate, 0.0)
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if value < 1000 or unit == "GB/s":
            return f"{value:.0f} {unit}" if value >= 10 or unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB/s"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s / 3600:.1f} h"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
