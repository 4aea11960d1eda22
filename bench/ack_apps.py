"""Reference apps for bench/ack_path.py, served with the receiver's own uvicorn settings.

    python bench/ack_apps.py bare    --port 8001   # POST handler that reads the body and answers the ACK
    python bench/ack_apps.py rq-sync --port 8002   # the receiver's checks, then a plain blocking rq enqueue

``bare`` is the ceiling of Starlette + uvicorn on this machine: same route shape, same JSON answer, no work.

``rq-sync`` is the naive receiver: the same body reading and kie.ai verification as ``veo-archiver serve``
(``receiver.app.read_bounded`` + ``receiver.verify.verify_provider``), then ``Queue.enqueue(..., unique=True)``
with the same job id, timeouts, TTLs, retry and JSON serializer, called *synchronously inside the async
handler*: every enqueue blocks the event loop for its Redis round trips (RQ-AND-STORAGE.md §6 measured this
at about 0.1x of a bare handler). The delivery record and events stream of the real intake are left out,
which only flatters it.

Settings come from the environment like the receiver's (REDIS_URL, KIE_WEBHOOK_HMAC_KEYS, LOG_LEVEL).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import benchlib  # noqa: F401  # puts the repo root on sys.path
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import server
from receiver.body import read_bounded
from receiver.responses import ACK, error_response
from receiver.verify import verify_provider
from veo_archiver import redis_keys
from veo_archiver.errors import ArchiverError
from veo_archiver.intake import Delivery, build_envelope
from veo_archiver.logs import configure as configure_logging
from veo_archiver.settings import Settings


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


HEALTHZ = Route("/healthz", _healthz, methods=["GET"])


def bare_app() -> Starlette:
    async def callback(request: Request) -> Response:
        await request.body()
        return JSONResponse(ACK)

    return Starlette(routes=[Route("/callbacks/{provider}", callback, methods=["POST"]), HEALTHZ])


def rq_sync_app(settings: Settings) -> Starlette:
    import uuid

    import redis
    from rq import Queue
    from rq.exceptions import DuplicateJobError
    from rq.job import Retry
    from rq.serializers import JSONSerializer

    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.enqueue_timeout_s)
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)

    async def callback(request: Request) -> Response:
        received_at = time.time()
        try:
            body = await read_bounded(request, settings.max_body_bytes)
            event = verify_provider(settings, "kie", request.headers, body, now=received_at, query={})
        except ArchiverError as exc:
            return error_response(exc)
        delivery = Delivery(
            body=body,
            headers=dict(request.headers),
            received_at=received_at,
            remote=request.client.host if request.client else None,
            path=request.url.path,
        )
        envelope = build_envelope(event, delivery, uuid.uuid4().hex)
        job_id = redis_keys.job_id(event.provider, event.task_id, event.status.value)
        outcome = "accepted"
        try:
            queue.enqueue(  # blocking: the whole event loop waits for Redis here
                redis_keys.ARCHIVE_JOB,
                kwargs={"envelope": envelope},
                job_id=job_id,
                unique=True,
                job_timeout=settings.job_timeout_s,
                result_ttl=settings.result_ttl_s,
                failure_ttl=settings.failure_ttl_s,
                retry=Retry(max=len(settings.retry_intervals_s), interval=list(settings.retry_intervals_s)),
                description=f"archive {event.provider}:{event.task_id} ({event.status.value})",
                meta={"provider": event.provider, "task_id": event.task_id},
            )
        except DuplicateJobError:
            outcome = "duplicate"
        return JSONResponse(ACK, headers={"X-Archiver-Outcome": outcome})

    return Starlette(routes=[Route("/callbacks/{provider}", callback, methods=["POST"]), HEALTHZ])


def serve(app: Any, host: str, port: int) -> None:
    """uvicorn exactly as ``veo-archiver serve`` configures it (``receiver.server.config``)."""
    uvicorn.Server(server.config(app, host, port, header_timeout_s=10.0)).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", choices=("bare", "rq-sync"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), json_lines=True)
    app = bare_app() if args.app == "bare" else rq_sync_app(Settings.from_env(os.environ))
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
