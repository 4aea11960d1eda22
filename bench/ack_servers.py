"""Servers for bench/ack_path.py and bench/ack_stack.py: the receiver and its references, 1..N processes.

    PYTHONPATH=. python bench/ack_servers.py bare     --port 8001                      # as `serve` runs
    PYTHONPATH=. python bench/ack_servers.py receiver --port 8002 --stack uvloop+httptools --processes 2

The code served is the checkout PYTHONPATH names first (the benchmarks set it: this checkout, or
``--baseline``'s). Settings come from the environment like the receiver's (``Settings.from_env``: REDIS_URL,
KIE_WEBHOOK_HMAC_KEYS...), logs are JSON lines at LOG_LEVEL. Apps:

  bare      THE REFERENCE: a Starlette POST handler that reads the body and answers the receiver's ACK
            (same route shape, same JSON answer, no work)
  receiver  ``receiver.app.create_app(settings)``, what ``veo-archiver serve`` serves
  rq-sync   the naive receiver: kie.ai's signature checked and the callback parsed with the provider's public
            functions, then rq's blocking ``Queue.enqueue(..., unique=True)`` (same timeouts, TTLs, retry and
            JSON serializer as the archiver's jobs) called *inside the async handler*, so every enqueue blocks
            the event loop for its Redis round trips. No delivery record, no events stream: that flatters it.

``--stack serve`` (the default) is uvicorn exactly as ``veo-archiver serve`` configures it
(``receiver.server.config``). ``--stack LOOP+HTTP`` takes that configuration and names uvicorn's ``loop`` and
``http`` instead (e.g. ``asyncio+h11``, what uvicorn gives without uvloop/httptools): uvicorn's own protocol
then, without ``serve``'s header-read timer. With ``--processes N`` (or any ``--stack`` but ``serve``) the
process binds its socket itself: N children, each with its own listening socket on the same port
(``SO_REUSEPORT``: the kernel spreads connections) and its own event loop; the parent only waits.
``--ready-dir DIR``: each child touches ``DIR/<pid>`` once its app has started (ASGI lifespan).
``--no-hiredis`` hides ``hiredis`` from redis-py (its pure-Python parser is used even when installed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

if "--no-hiredis" in sys.argv:
    sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py then reports HIREDIS_AVAILABLE False

ACK = {"code": 200, "msg": "success"}  # what the receiver answers an accepted callback
ARCHIVE_JOB = "workers.jobs.archive_task"  # the job's documented dotted path
HEADER_TIMEOUT_S = 10.0


def starlette_app(callback: Any) -> Any:
    """``callback`` on ``POST /callbacks/{provider}``, and ``GET /healthz``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/callbacks/{provider}", callback, methods=["POST"]), Route("/healthz", healthz)])


def bare_app() -> Any:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    async def callback(request: Request) -> Response:
        await request.body()
        return JSONResponse(ACK)

    return starlette_app(callback)


def rq_sync_app(settings: Any) -> Any:
    import redis
    from rq import Queue
    from rq.exceptions import DuplicateJobError
    from rq.job import Retry
    from rq.serializers import JSONSerializer
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from veo_archiver.errors import ArchiverError
    from veo_archiver.event import Verification
    from veo_archiver.intake import Delivery
    from veo_archiver.providers import kie

    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.enqueue_timeout_s)
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    retry = Retry(max=len(settings.retry_intervals_s), interval=list(settings.retry_intervals_s))

    async def callback(request: Request) -> Response:
        received_at = time.time()
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            decoded = json.loads(body)
            task_id = kie.task_id_of(decoded)
            kie.verify_signature(
                request.headers,
                task_id,
                settings.kie_hmac_keys,
                now=received_at,
                tolerance_s=settings.timestamp_tolerance_s,
            )
            event = kie.event_from(decoded, task_id, verification=Verification.SIGNATURE)
        except (ArchiverError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        delivery = Delivery(body=body, headers=dict(request.headers), received_at=received_at, path=request.url.path)
        outcome = "accepted"
        try:
            queue.enqueue(  # blocking: the whole event loop waits for Redis here
                ARCHIVE_JOB,
                kwargs={"envelope": {"event": event.to_json(), "callback": delivery.to_json()}},
                job_id=f"bench-{event.provider}-{event.task_id}-{event.status.value}",
                unique=True,
                job_timeout=settings.job_timeout_s,
                result_ttl=settings.result_ttl_s,
                failure_ttl=settings.failure_ttl_s,
                retry=retry,
                description=f"archive {event.provider}:{event.task_id} ({event.status.value})",
                meta={"provider": event.provider, "task_id": event.task_id},
            )
        except DuplicateJobError:
            outcome = "duplicate"
        return JSONResponse(ACK, headers={"X-Archiver-Outcome": outcome})

    return starlette_app(callback)


def build_app(kind: str) -> Any:
    from veo_archiver.logs import configure as configure_logging
    from veo_archiver.settings import Settings

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), json_lines=True)
    if kind == "bare":
        return bare_app()
    settings = Settings.from_env(os.environ)
    if kind == "rq-sync":
        return rq_sync_app(settings)
    from receiver.app import create_app

    return create_app(settings)


def mark_ready(app: Any, ready_dir: str) -> Any:
    """``app``, touching ``ready_dir/<pid>`` when its lifespan startup is complete."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)

        async def sending(message: Any) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                Path(ready_dir, str(os.getpid())).touch()

        return await app(scope, receive, sending)

    return wrapped


def serve_one(args: argparse.Namespace, sock: socket.socket | None) -> None:
    import uvicorn

    from receiver import server

    app = build_app(args.app)
    if args.ready_dir:
        app = mark_ready(app, args.ready_dir)
    config = server.config(app, args.host, args.port, header_timeout_s=HEADER_TIMEOUT_S)
    if args.stack != "serve":
        config.loop, config.http = args.stack.split("+")
    uvicorn.Server(config).run(sockets=[sock] if sock else None)


def listening_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening socket
    # says so (proto 0 means Nagle + delayed ACKs: 40 ms per answer); uvicorn binding itself gets it right
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", choices=("bare", "receiver", "rq-sync"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--stack",
        default="serve",
        choices=("serve", "asyncio+h11", "asyncio+httptools", "uvloop+h11", "uvloop+httptools"),
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--ready-dir", default=None)
    parser.add_argument("--no-hiredis", action="store_true")
    args = parser.parse_args()
    if args.processes == 1 and args.stack == "serve":
        serve_one(args, None)  # uvicorn binds the port itself, as `serve` does
        return
    children: list[int] = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            try:
                serve_one(args, listening_socket(args.host, args.port))
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main()
