"""The archive worker's heartbeat TTL (a dead worker's job is noticed within about 20 s of its last heartbeat,
not RQ's 60), under RQ 2 (which calls ``get_heartbeat_ttl(job)``) and RQ 3 (which passes ``working_time``
and has no ``current_job_working_time``): the rule by itself, then a real forking worker heartbeating."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus, get_current_job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from tests.servers import RedisServer
from veo_archiver.settings import Settings
from workers.runner import HEARTBEAT_SLACK_S, ArchiveWorker, make_worker

pytestmark = pytest.mark.rq_facing
QUEUE = "veo-archiver"


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def worker(redis_server: RedisServer, rds: redis.Redis) -> Iterator[ArchiveWorker]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield make_worker(Settings(redis_url=redis_server.url, queue_name=QUEUE), rds)
    finally:  # RQ's work() installs its own
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def job_of(rds: redis.Redis, timeout: int) -> Job:
    return Job.create(heartbeat_ttl_seen, connection=rds, timeout=timeout, serializer=JSONSerializer, origin=QUEUE)


def test_the_ttl_is_the_next_heartbeat_or_the_time_left_plus_the_slack(worker: ArchiveWorker, rds: redis.Redis) -> None:
    interval = worker.job_monitoring_interval
    long, short = job_of(rds, timeout=600), job_of(rds, timeout=interval + 5)
    # RQ 3's call: the working time passed in
    assert worker.get_heartbeat_ttl(long, working_time=0.0) == interval + HEARTBEAT_SLACK_S
    assert worker.get_heartbeat_ttl(short, working_time=8.0) == interval + 5 - 8 + HEARTBEAT_SLACK_S
    # past its timeout the horse is killed within a minute: the entry must not expire before, never negative
    assert worker.get_heartbeat_ttl(short, working_time=10_000.0) == HEARTBEAT_SLACK_S
    # RQ 2's call: the job alone; the working time is the worker's own since execute_job began
    assert worker.get_heartbeat_ttl(long) == interval + HEARTBEAT_SLACK_S
    worker.job_clock_started = time.monotonic() - 8.0
    assert worker.get_heartbeat_ttl(short) in (
        interval + 5 - 8 + HEARTBEAT_SLACK_S,
        interval + 5 - 9 + HEARTBEAT_SLACK_S,
    )


def heartbeat_ttl_seen() -> float:
    """The job, in the forked horse: waits through a few of the parent's heartbeats, then reports how far
    ahead its entry in RQ's started registry expires."""
    job = get_current_job()
    assert job is not None and job.connection is not None
    time.sleep(2.5)
    scores = job.connection.zrange(
        StartedJobRegistry(job.origin, connection=job.connection).key, 0, -1, withscores=True
    )
    return max(float(score) for _, score in scores) - time.time()  # type: ignore[union-attr]


@pytest.mark.slow  # a forking worker: a work horse process per job
def test_a_forking_worker_heartbeats_with_our_ttl_and_finishes_the_job(worker: ArchiveWorker, rds: redis.Redis) -> None:
    worker.job_monitoring_interval = 1  # heartbeat every second while the job runs
    queue = Queue(QUEUE, connection=rds, serializer=JSONSerializer)
    job = queue.enqueue(heartbeat_ttl_seen, job_timeout=600)
    assert worker.work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.latest_result()
    ahead = job.return_value()
    assert isinstance(ahead, float) and 0 < ahead <= 1 + HEARTBEAT_SLACK_S + 1  # RQ's own rule gives 61
