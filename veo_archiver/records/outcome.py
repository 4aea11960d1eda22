"""What a finished job tells the rest of the system, through Redis (so it works across machines).

- an entry on the ``veo:outcomes`` stream (capped): provider, task id, status, manifest key and location,
  files, bytes; pipelines read it with a consumer group instead of polling storage (the manifest in
  storage stays the source of truth);
- counters in the ``veo:stats`` hash: outcomes by provider and reason, bytes archived, a job-duration
  histogram and a histogram of the time left before the URL's deadline at download, for ``/metrics``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from veo_archiver import redis_keys

log = logging.getLogger(__name__)

OUTCOMES_MAXLEN = 100_000
DURATION_BUCKETS_S = (1, 5, 15, 60, 300, 900, 1800, 3600)
TIME_LEFT_BUCKETS_S = (60, 600, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600)


def bucket(value: float, bounds: tuple[float, ...]) -> str:
    for bound in bounds:
        if value <= bound:
            return str(bound)
    return "+Inf"


def publish(
    connection: redis.Redis | None,
    *,
    outcome: str,
    provider: str,
    task_id: str,
    status: str,
    reason: str | None = None,
    manifest_key: str | None = None,
    location: str | None = None,
    files: list[dict[str, Any]] | None = None,
    duration_s: float | None = None,
    time_left_s: float | None = None,
) -> None:
    """Best effort: the archive is already written; a Redis hiccup here must not fail the job."""
    if connection is None:
        return
    total = sum(int(f.get("size", 0)) for f in files or [])
    entry = {
        "outcome": outcome,
        "provider": provider,
        "task_id": task_id,
        "status": status,
        "reason": reason or "",
        "manifest": manifest_key or "",
        "location": location or "",
        "files": json.dumps(files or []),
        "bytes": str(total),
    }
    try:
        pipe = connection.pipeline(transaction=False)
        pipe.xadd(redis_keys.outcomes_stream(), entry, maxlen=OUTCOMES_MAXLEN, approximate=True)  # type: ignore[arg-type]
        if outcome == "archived":
            pipe.zrem(redis_keys.tracked_zset(), redis_keys.tracked_member(provider, task_id))
        stats = redis_keys.stats_hash()
        pipe.hincrby(stats, f"outcome|{provider}|{outcome}|{reason or ''}", 1)
        if total:
            pipe.hincrby(stats, f"bytes|{provider}", total)
        if duration_s is not None:
            pipe.hincrby(stats, f"duration|{bucket(duration_s, DURATION_BUCKETS_S)}", 1)
            pipe.hincrbyfloat(stats, "duration_sum", duration_s)
            pipe.hincrby(stats, "duration_count", 1)
        if time_left_s is not None:
            pipe.hincrby(stats, f"time_left|{bucket(max(time_left_s, 0), TIME_LEFT_BUCKETS_S)}", 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not publish the outcome: %s", exc, extra={"provider": provider, "task_id": task_id})
