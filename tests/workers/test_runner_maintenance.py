"""Worker maintenance over the failed registry, against a real redis-server: a dead letter whose outcome never
reached the stream is published there, once, and the job stays a dead letter (abandoned jobs:
tests/e2e/test_crash_safety.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from veo_archiver import redis_keys
from workers.runner import requeue_abandoned

pytestmark = pytest.mark.rq_facing
QUEUE = "veo-archiver"


@pytest.fixture
def queue(redis_server) -> Iterator[Queue]:  # type: ignore[no-untyped-def]
    yield Queue(QUEUE, connection=redis.Redis.from_url(redis_server.url), serializer=JSONSerializer)


def failed_job(queue: Queue, job_id: str, meta: dict[str, object], exc_string: str) -> Job:
    job = Job.create("workers.jobs.archive_task", kwargs={"envelope": {}}, connection=queue.connection,
                     id=job_id, serializer=JSONSerializer, origin=QUEUE, meta=meta)  # fmt: skip
    job.save()
    FailedJobRegistry(queue=queue).add(job, ttl=3600, exc_string=exc_string)
    return job


def stream(queue: Queue) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in queue.connection.xrange(redis_keys.outcomes_stream())]


def test_an_unpublished_dead_letter_is_published_by_maintenance_and_stays_dead(queue: Queue) -> None:
    verdict = {"reason": "http_404", "error": "HTTP 404 from cdn", "at": "2030-01-01T00:00:00.000Z",
               "status": "succeeded", "published": False}  # fmt: skip
    failed_job(queue, "dead-1", {"provider": "kie", "task_id": "veo_1", "dead_letter": verdict}, "DownloadFailed")
    assert requeue_abandoned(queue) == []  # a dead letter is not requeued...
    (entry,) = stream(queue)  # ...but its outcome is published
    assert (entry[b"outcome"], entry[b"job_id"], entry[b"reason"]) == (b"dead_letter", b"dead-1", b"http_404")
    job = Job.fetch("dead-1", connection=queue.connection, serializer=JSONSerializer)
    assert job.meta["dead_letter"]["published"] is True
    requeue_abandoned(queue)
    assert len(stream(queue)) == 1
    assert "dead-1" in FailedJobRegistry(queue=queue).get_job_ids()
