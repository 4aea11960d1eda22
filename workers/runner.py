"""Run RQ workers for the archive queue: JSON serializer, scheduler on, short abandoned-job detection.

``--count N`` supervises N worker processes (restarting any that die) so a host can be sized by
bandwidth; each process forks a work horse per job, as RQ does.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import redis
from rq import Queue
from rq.exceptions import StopRequested
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import HerokuWorker

from veo_archiver.clock import epoch
from veo_archiver.errors import ArchiverError, ConfigError, TransientError
from veo_archiver.logs import log_context
from veo_archiver.records import dead_letter
from veo_archiver.redis_client import RETRY_LONGEST_S, connect, wait_until_up
from veo_archiver.settings import Settings
from workers import context, job_meta, reconcile

log = logging.getLogger(__name__)

# A dead worker's job is noticed once its heartbeat lapses (monitoring interval + slack) and some live worker
# runs maintenance (every MAINTENANCE_INTERVAL_S, or when its blocking dequeue of WORKER_TTL_S - 15 s ends):
# about a minute here, instead of RQ's default 90 s + up to 10 min (RQ-AND-STORAGE §1.1).
WORKER_TTL_S = 40
MAINTENANCE_INTERVAL_S = 20
JOB_MONITORING_INTERVAL_S = 10
HEARTBEAT_SLACK_S = 20


#: what ends the wait for Redis before the first worker exists (a worker's own handlers take over after)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: how many times a job abandoned by a dead worker is put back after RQ's own retries ran out
MAX_CRASH_REQUEUES = 5


class ArchiveWorker(HerokuWorker):
    """RQ worker with the two behaviours an archiver needs on top of RQ's.

    - SIGTERM: the current download gets ``imminent_shutdown_delay`` seconds (``WORKER_SHUTDOWN_GRACE``) to
      finish; then the job is interrupted and, as an ordinary failure, retried at once by another worker,
      instead of being SIGKILLed by the orchestrator and waiting for abandoned-job detection.
    - Abandoned jobs: RQ retries a job whose worker died only while ``retries_left`` > 0 and otherwise moves
      it to the failed registry for good. Maintenance here puts such jobs back (``MAX_CRASH_REQUEUES``
      times), so a crash never turns into a lost video.
    - A stop that was asked for (SIGTERM/SIGINT) is remembered in :attr:`stop_wanted`: RQ's loop also quits
      on errors (Redis unreachable), and :func:`run_one` starts again after those, not after a stop.
    """

    #: set by :func:`make_worker`; the reconciliation sweep needs the provider keys and intervals
    settings: Settings | None = None
    stop_wanted = False
    #: ``time.monotonic()`` when the current job began (:meth:`execute_job`); None between jobs
    job_clock_started: float | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_wanted = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    @property
    def dequeue_timeout(self) -> int:
        # RQ blocks in BLPOP for worker_ttl - 15 s and runs maintenance only between two: cap the wait so
        # maintenance (and the reconciliation sweep) runs every ``maintenance_interval`` when idle too
        return max(1, min(self.worker_ttl - 15, int(self.maintenance_interval)))

    def get_heartbeat_ttl(self, job: Job, working_time: float | None = None) -> int:
        """RQ's rule (the next heartbeat, or the job's remaining timeout if sooner) with our slack: RQ adds a
        fixed 60 s; the parent heartbeats every JOB_MONITORING_INTERVAL_S, so 20 s is plenty.

        RQ 3 passes ``working_time`` to this hook; RQ 2 calls it with the job alone (and kept the time in
        ``current_job_working_time``, which RQ 3 removed): then it is the time since :meth:`execute_job` began."""
        if working_time is None:
            started = self.job_clock_started
            working_time = 0.0 if started is None else time.monotonic() - started
        interval = float(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            # past the timeout RQ kills the horse within 60 s: keep heartbeating until then, never in the past
            interval = min(max(job.timeout - working_time, 0.0), interval)
        return int(interval) + HEARTBEAT_SLACK_S

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        for queue in self.queues:
            requeue_abandoned(queue)
        if self.settings is not None:
            try:
                reconcile.run_scheduled(self.connection, self.settings, owner=self.name)
            except (redis.RedisError, ArchiverError) as exc:
                log.warning("reconciliation sweep failed; the next interval retries: %s", exc)

    def execute_job(self, job: Job, queue: Queue) -> None:
        # every line logged for this job, RQ's own included, in this process and in the forked horse
        meta = job.meta or {}
        self.job_clock_started = time.monotonic()
        try:
            with log_context(job_id=job.id, provider=meta.get("provider"), task_id=meta.get("task_id")):
                super().execute_job(job, queue)
        finally:
            self.job_clock_started = None


def requeue_abandoned(queue: Queue) -> list[str]:
    registry = FailedJobRegistry(queue=queue)
    requeued: list[str] = []
    for job_id in registry.get_job_ids():
        job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer) if queue.connection else None
        if job is None:
            continue
        readable = dead_letter.readable_meta(job.meta)  # `rq requeue` (pickle) then a crash: the meta read back
        if readable is not None:
            job.meta = readable
        if verdict_stands(job):  # a permanent failure the job itself decided: stays a dead letter
            try:
                job_meta.republish_dead_letter(job)  # its outcome, if its own publish failed
            except TransientError as exc:
                log.warning("dead letter's outcome still not published: %s", exc.message, extra={"job_id": job_id})
            continue
        latest = job.latest_result()  # RQ's failure text (``job.exc_info`` is deprecated: it reads the same)
        exc_info = (latest.exc_string if latest is not None else None) or ""
        if "AbandonedJobError" not in exc_info and "abandoned" not in exc_info.lower():
            continue
        count = int(job.meta.get("crash_requeues", 0))
        if count >= MAX_CRASH_REQUEUES:
            continue
        job.meta["crash_requeues"] = count + 1
        job.save_meta()
        registry.requeue(job_id)
        requeued.append(job_id)
        log.warning(
            "requeued a job abandoned by a dead worker",
            extra={
                "job_id": job_id,
                "provider": job.meta.get("provider"),
                "task_id": job.meta.get("task_id"),
                "requeues": count + 1,
            },
        )
    return requeued


def verdict_stands(job: Job) -> bool:
    """The job's dead-letter mark is its latest word: not stale. A mark older than the job's last enqueue was
    carried over by a tool that requeued it (``rq requeue -S JSON``, rq-dashboard), and a job that crashed
    after such a requeue is abandoned, not dead."""
    verdict = job.meta.get("dead_letter") if isinstance(job.meta, dict) else None
    if not isinstance(verdict, dict):
        return False
    marked, enqueued = epoch(verdict.get("at")), epoch(job.enqueued_at)
    return marked is None or enqueued is None or marked >= enqueued


def maintenance_interval() -> int:
    """``WORKER_MAINTENANCE_INTERVAL`` (seconds, for tests and drills), else ``MAINTENANCE_INTERVAL_S``."""
    raw = os.environ.get("WORKER_MAINTENANCE_INTERVAL", "").strip()
    if not raw:
        return MAINTENANCE_INTERVAL_S
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"WORKER_MAINTENANCE_INTERVAL={raw!r}: expected a whole number of seconds >= 1")
    return int(raw)


def make_worker(settings: Settings, connection: redis.Redis, name: str | None = None) -> ArchiveWorker:
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    worker = ArchiveWorker(
        [queue],
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        worker_ttl=WORKER_TTL_S,
        maintenance_interval=maintenance_interval(),
        job_monitoring_interval=JOB_MONITORING_INTERVAL_S,
        log_job_description=True,
    )
    worker.imminent_shutdown_delay = settings.worker_shutdown_grace_s
    worker.settings = settings
    return worker


def run_one(settings: Settings, *, burst: bool = False) -> int:
    """One worker until it is asked to stop. It waits for Redis at start (``REDIS_START_TIMEOUT`` bounds that
    wait; 0 waits for ever), as it does after an outage: a worker started during a Redis failover is not a
    crash loop. RQ's loop quits on an error it did not expect (a Redis outage that outlasts its own retries,
    or one that breaks its maintenance) and then cannot even record its own death: the worker waits for Redis
    and starts again, so an outage never leaves the queue without workers (under ``up`` nothing would restart
    the process)."""
    context.install(settings)
    connection = connect(settings.redis_url, check=False, socket_timeout=None)
    if not wait_at_start(connection, settings):
        return 0
    while True:
        worker = make_worker(settings, connection)
        log.info("worker starting", extra={"queue": settings.queue_name, "worker": worker.name})
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=logging.getLevelName(logging.getLogger().level))
        except redis.RedisError as exc:  # raised by RQ's own teardown once Redis is gone
            log.warning("the worker lost Redis: %s", exc)
        if burst or worker.stop_wanted:
            return 0
        log.warning("the worker stopped on an error; it starts again once Redis answers")
        if not wait_for_redis(connection, worker, url=settings.redis_url):
            return 0


def wait_at_start(connection: redis.Redis, settings: Settings) -> bool:
    """Wait for Redis before the first worker is made (True once it answers; False on SIGTERM/SIGINT meanwhile).
    No RQ worker exists yet to catch a stop: a handler of our own ends the wait, then the default comes back."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _StopWaiting

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        return wait_until_up(
            connection, settings.redis_url, why="worker starting", timeout_s=settings.redis_start_timeout_s
        )
    except _StopWaiting:
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StopWaiting(Exception):
    """SIGTERM/SIGINT while waiting for Redis at start."""


def wait_for_redis(
    connection: redis.Redis, worker: ArchiveWorker, *, url: str = "", longest_s: float = RETRY_LONGEST_S
) -> bool:
    """Ping with backoff until Redis answers (True) or a stop is asked for meanwhile (False): the same wait,
    pace and log lines as at start (:func:`veo_archiver.redis_client.wait_until_up`), without a bound."""
    try:
        return wait_until_up(
            connection, url, why="worker restarting", stopped=lambda: worker.stop_wanted, longest_s=longest_s
        )
    except StopRequested:  # the previous worker's SIGTERM handler, still installed
        return False


def run_many(count: int, argv: list[str]) -> int:
    """Supervise ``count`` single workers; SIGTERM/SIGINT are forwarded (warm shutdown), deaths restarted."""
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def spawn(slot: int) -> None:
        children[slot] = subprocess.Popen([sys.executable, "-m", "veo_archiver", "worker", "--count", "1", *argv])

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(count):
        spawn(slot)
    while True:
        alive = False
        for slot, child in list(children.items()):
            code = child.poll()
            if code is None:
                alive = True
            elif not stopping:
                log.warning("worker process exited; restarting", extra={"slot": slot, "code": code})
                time.sleep(1)
                spawn(slot)
                alive = True
        if not alive:
            return 0
        time.sleep(0.5)
