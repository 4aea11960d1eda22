"""What a finished job tells the rest of the system, through Redis (so it works across machines).

- one entry per end of each run of a job on the ``veo:outcomes`` stream (capped): ``outcome`` (``archived``,
  ``provider_failed``, ``dead_letter``; ``rendition_archived`` / ``rendition_unavailable`` for kie.ai's 1080p
  of an archived task), ``outcome_id`` (stable across the retries of one run: consumers dedupe
  on it; a dead letter requeued by an operator starts the job's next run, whose end has an id of its own),
  ``run`` (1, 2… :func:`veo_archiver.records.dead_letter.run_of`), provider, task id, status, job id, ``at``,
  ``reason``/``error``, ``manifest`` (the full object key, archive prefix included) and its ``location``, files,
  bytes. Added at most once per ``outcome_id`` (a marker set in the same Lua step as the XADD); pipelines read
  it with a consumer group instead of polling storage (the manifest in storage stays the source of truth);
- counters in the ``veo:stats`` hash: outcomes by provider and reason, bytes archived, a job-duration
  histogram and a histogram of the time left before the URL's deadline at download, for ``/metrics``.

A task that reached the archive has its outcome read from its manifest by :func:`of_manifest`, the one
mapping that the worker's publish and ``veo-archiver manifests`` (which reads storage itself) both use, so a
consumer merging the two sources sees the same outcome, reason and ``outcome_id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import TransientError
from veo_archiver.event import TaskStatus
from veo_archiver.records import tracked
from veo_archiver.records.dead_letter import run_of
from veo_archiver.text import optional_text

log = logging.getLogger(__name__)

OUTCOMES_MAXLEN = 100_000
DURATION_BUCKETS_S = (1, 5, 15, 60, 300, 900, 1800, 3600)
TIME_LEFT_BUCKETS_S = (60, 600, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600)


def bucket(value: float, bounds: tuple[float, ...]) -> str:
    for bound in bounds:
        if value <= bound:
            return str(bound)
    return "+Inf"


def _count(value: str) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def bucketed(stats: Mapping[str, str], prefix: str, bounds: Iterable[float]) -> list[tuple[str, float]]:
    """The reader of the per-bucket counters ``{prefix}|{bound}`` that :func:`publish` writes (``stats`` is
    the decoded ``veo:stats`` hash): cumulative ``(le, count)`` pairs, ``+Inf`` included."""
    per_bound: dict[float, int] = {float(b): 0 for b in bounds}
    overflow = 0
    for name, value in stats.items():
        head, sep, label = name.partition("|")
        if head != prefix or not sep:
            continue
        if label == "+Inf":
            overflow += _count(value)
            continue
        try:
            bound = float(label)
        except ValueError:
            continue
        per_bound[bound] = per_bound.get(bound, 0) + _count(value)
    out: list[tuple[str, float]] = []
    running = 0
    for upper in sorted(per_bound):
        running += per_bound[upper]
        out.append((repr(float(upper)), float(running)))
    out.append(("+Inf", float(running + overflow)))
    return out


ARCHIVED = "archived"
PROVIDER_FAILED = "provider_failed"
DEAD_LETTER = "dead_letter"
#: a later rendition of an archived task (kie.ai's 1080p, :mod:`workers.rendition_1080p`): added to its
#: manifest (``files`` = the new files), or recorded there as never coming (``reason`` says why)
RENDITION_ARCHIVED = "rendition_archived"
RENDITION_UNAVAILABLE = "rendition_unavailable"


@dataclass(frozen=True)
class ManifestOutcome:
    """The end a manifest records, as ``veo:outcomes`` reports it."""

    outcome: str  # ARCHIVED (the task succeeded) or PROVIDER_FAILED
    status: str
    reason: str  # the provider's failure code; "" when archived
    error: str  # the provider's failure message; "" when archived
    job_id: str | None
    #: the manifest's files, each ``key`` made the full object key (archive prefix included)
    files: list[dict[str, Any]]
    #: the run of the job that wrote the manifest (1 for a manifest that names none)
    run: int = 1


def of_manifest(manifest: Mapping[str, Any], *, object_key: Callable[[str], str], status: str = "") -> ManifestOutcome:
    """The outcome a manifest records; ``status`` is used when the manifest names none."""
    status = str(manifest.get("status") or status)
    outcome = ARCHIVED if status == TaskStatus.SUCCEEDED.value else PROVIDER_FAILED
    failure = manifest.get("failure")
    failure = failure if isinstance(failure, dict) and outcome == PROVIDER_FAILED else {}
    # ``object_key`` (a newer manifest's own copy of the full key) is what ``key`` becomes here: not repeated
    files = [
        {**{k: v for k, v in f.items() if k != "object_key"}, "key": object_key(f["key"])}
        for f in manifest.get("files") or []
        if isinstance(f, dict) and f.get("key")
    ]
    return ManifestOutcome(
        outcome=outcome,
        status=status,
        reason=optional_text(failure.get("code")) or "",
        error=optional_text(failure.get("message")) or "",
        job_id=optional_text(manifest.get("job_id") or None),
        files=files,
        run=run_of(manifest),
    )


#: how long the "published" marker of an outcome id is kept: longer than any job's retries
PUBLISHED_TTL_S = 30 * 24 * 3600

# SET NX the marker and XADD the entry in one atomic step: a connection lost in between cannot leave a marker
# without its entry (which would lose the entry) nor an entry without its marker (which would repeat it)
_PUBLISH_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""


def published_marker(outcome_id: str) -> str:
    """``veo:outcome-published:<outcome_id>``: set, with a TTL, when that outcome's entry was added."""
    return redis_keys.outcome_published_key(outcome_id)


def outcome_id_of(provider: str, task_id: str, status: str, outcome: str, job_id: str | None, run: int = 1) -> str:
    """The id consumers dedupe on: the same for every attempt (retry, re-publish) of one end of one run of a
    job; another run (a requeued dead letter) ends under another id. Run 1 hashes as ids did before runs were
    counted, so an end published then is not published again."""
    parts = (provider, task_id, status, outcome, job_id or "") + ((str(run),) if run > 1 else ())
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def publish(
    connection: redis.Redis | None,
    *,
    outcome: str,
    provider: str,
    task_id: str,
    status: str,
    reason: str | None = None,
    error: str | None = None,
    job_id: str | None = None,
    run: int = 1,
    at: str | None = None,
    manifest_key: str | None = None,
    location: str | None = None,
    files: list[dict[str, Any]] | None = None,
    duration_s: float | None = None,
    time_left_s: float | None = None,
    extends: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> bool:
    """Add one entry to ``veo:outcomes``, at most once per ``outcome_id`` (True when this call added it).

    ``strict``: a Redis failure raises :class:`TransientError` (the job is then retried and publishes on its
    next run); otherwise it is logged. The counters follow the entry, best effort."""
    if connection is None:
        return False
    total = sum(int(f.get("size", 0)) for f in files or [])
    outcome_id = outcome_id_of(provider, task_id, status, outcome, job_id, run)
    entry = {
        "outcome": outcome,
        "outcome_id": outcome_id,
        "provider": provider,
        "task_id": task_id,
        "status": status,
        "job_id": job_id or "",
        "run": str(run),
        "at": at or iso(time.time()),
        "reason": reason or "",
        "error": error or "",
        "manifest": manifest_key or "",
        "location": location or "",
        "files": json.dumps(files or []),
        "bytes": str(total),
        # the task this one extends (submitted through the archiver): JSON {provider, task_id[, manifest]}
        "extends": json.dumps(dict(extends)) if extends else "",
    }
    flat = [str(v) for pair in entry.items() for v in pair]
    try:
        added = connection.eval(
            _PUBLISH_ONCE,
            2,
            published_marker(outcome_id),
            redis_keys.outcomes_stream(),
            PUBLISHED_TTL_S,
            OUTCOMES_MAXLEN,
            *flat,
        )
    except redis.RedisError as exc:
        if strict:
            raise TransientError(f"could not publish the outcome: {exc}", reason="outcome_unpublished") from exc
        log.warning("could not publish the outcome: %s", exc, extra={"provider": provider, "task_id": task_id})
        return False
    if not added:
        return False
    try:
        pipe = connection.pipeline(transaction=False)
        if outcome in ("archived", "provider_failed"):
            tracked.remove(pipe, redis_keys.tracked_member(provider, task_id))
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
        log.warning("outcome published; counters not updated: %s", exc, extra={"provider": provider})
    return True
