"""Ask the workers to poll one tracked task now: the ops page's "sweep now" (the receiver cannot poll a
provider itself: the status clients live in the workers).

:func:`request_sweep` enqueues :data:`veo_archiver.redis_keys.SWEEP_TASK_JOB` (by its dotted path, the only
contract between receiver and workers, like the archive job's) on the archive queue through RQ's own API;
the job runs the same :func:`workers.reconcile.sweep` as ``veo-archiver sweep``, restricted to that task and
whatever its age, and returns the sweep's report as its result.
"""

from __future__ import annotations

import hashlib

import redis

from veo_archiver import queue_view, redis_keys
from veo_archiver.settings import Settings

#: a sweep of one task polls one status API: well under a minute, or something is wrong
SWEEP_JOB_TIMEOUT_S = 120
SWEEP_RESULT_TTL_S = 24 * 3600


def sweep_job_id(provider: str, task_id: str, now: float) -> str:
    digest = hashlib.sha256(f"{provider}\x1f{task_id}".encode()).hexdigest()[:32]
    return f"sweep-{provider}-{digest}-{int(now)}"


def request_sweep(connection: redis.Redis, settings: Settings, provider: str, task_id: str, *, now: float) -> str:
    """Enqueue the sweep of one task; its job id. Redis errors propagate."""
    job = queue_view.queue_of(connection, settings.queue_name).enqueue_call(
        redis_keys.SWEEP_TASK_JOB,
        kwargs={"provider": provider, "task_id": task_id},
        job_id=sweep_job_id(provider, task_id, now),
        timeout=SWEEP_JOB_TIMEOUT_S,
        result_ttl=SWEEP_RESULT_TTL_S,
        failure_ttl=settings.failure_ttl_s,
        description=f"sweep {provider}/{task_id[:200]}",
    )
    return str(job.id)
