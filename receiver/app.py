"""The Starlette app factory: routes, bounded body reading, and the one place errors become HTTP answers.

The handler reads a bounded body, verifies, parses, and hands the event to :class:`veo_archiver.intake.Intake`;
it never downloads anything and never answers 200 before Redis has the job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import metrics, ops_page
from receiver.tracking import tasks_route
from receiver.verify import standard_keyrings, verify_provider, verify_standard
from veo_archiver.errors import ArchiverError, PayloadTooLarge, RequestError, TransientError
from veo_archiver.event import TaskEvent
from veo_archiver.intake import Delivery, Intake
from veo_archiver.logs import log_context
from veo_archiver.providers import REGISTRY
from veo_archiver.settings import Settings

log = logging.getLogger(__name__)

ACK = {"code": 200, "msg": "success"}
Clock = Callable[[], float]


async def read_bounded(request: Request, limit: int) -> bytes:
    """Read the body, refusing with 413 as soon as it passes ``limit`` bytes (never unbounded)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {int(declared)} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(exc: ArchiverError) -> Response:
    if isinstance(exc, RequestError):
        status = exc.status_code
    elif isinstance(exc, TransientError):
        status = 503
    else:
        status = 500
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"code": status, "msg": exc.message, "reason": exc.reason}, status_code=status, headers=headers)


def startup_warnings(settings: Settings) -> list[str]:
    """What an operator should know about the verification policy before the first callback arrives."""
    out: list[str] = []
    if not settings.kie_hmac_keys and not settings.kie_allow_unsigned and not settings.callback_signing_keys:
        out.append("no KIE_WEBHOOK_HMAC_KEYS nor CALLBACK_SIGNING_KEYS: every kie.ai callback will be refused (401)")
    for name, provider in settings.providers.items():
        if name == "kie":
            continue
        if provider.open:
            out.append(f"OPEN_PROVIDERS includes {name}: its callbacks are accepted without any proof")
        elif not settings.callback_signing_keys:
            out.append(f"no CALLBACK_SIGNING_KEYS: every {name} callback will be refused (401)")
    return out


def create_app(
    settings: Settings, *, clock: Clock = time.time, redis_client: aioredis.Redis | None = None
) -> Starlette:
    """Build the receiver. ``redis_client`` and ``clock`` are injectable for tests; defaults come from settings."""
    keyrings = standard_keyrings(settings)
    counters = metrics.ReceiverMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # A blocking pool: past max_connections in flight a callback waits (up to enqueue_timeout_s) for a
        # connection instead of failing with "Too many connections" (redis-py's default async pool caps at
        # 100 and raises at once, which turned half of a 200-callback burst into 503s)
        client = redis_client or aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=32,
                timeout=settings.enqueue_timeout_s,
                socket_timeout=settings.enqueue_timeout_s,
                socket_connect_timeout=2.0,
                health_check_interval=30,
            )
        )
        intake = Intake(settings, client)
        await intake.start()
        for warning in startup_warnings(settings):
            log.warning(warning)
        try:
            yield {"intake": intake, "redis": client}
        finally:
            if redis_client is None:
                await client.aclose()

    async def accept(request: Request, event: TaskEvent, body: bytes, received_at: float, provider: str) -> Response:
        intake: Intake = request.state.intake
        delivery = Delivery(
            body=body,
            headers=dict(request.headers),
            received_at=received_at,
            remote=request.client.host if request.client else None,
            path=request.url.path,
        )
        started = time.perf_counter()
        result = await intake.submit(event, delivery)
        counters.outcome(provider, result.outcome, time.perf_counter() - started)
        return JSONResponse(ACK, headers={"X-Archiver-Outcome": result.outcome})

    async def handle(request: Request, provider: str, verify: Callable[[bytes, float], TaskEvent]) -> Response:
        """Every callback goes through here: the one place that counts what was answered."""
        received_at = clock()
        counters.received.labels(provider).inc()
        event: TaskEvent | None = None
        try:
            body = await read_bounded(request, settings.max_body_bytes)
            event = verify(body, received_at)
            with log_context(provider=provider, task_id=event.task_id):
                return await accept(request, event, body, received_at, provider)
        except ArchiverError as exc:
            fields = {"provider": provider, "reason": exc.reason, "detail": exc.message}
            if event is not None:
                fields["task_id"] = event.task_id
            if isinstance(exc, RequestError):
                counters.rejected.labels(provider, exc.reason).inc()
                log.info("callback refused", extra=fields)
            else:
                (counters.unavailable if isinstance(exc, TransientError) else counters.errors).labels(
                    provider, exc.reason
                ).inc()
                log.warning("callback not taken", extra=fields)
            return error_response(exc)
        except ClientDisconnect:
            counters.rejected.labels(provider, "client_disconnect").inc()
            return Response(status_code=400)

    async def provider_callback(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in REGISTRY:
            return JSONResponse(
                {"code": 404, "msg": f"unknown provider {provider!r}", "reason": "unknown_provider"}, status_code=404
            )
        query = dict(request.query_params)
        return await handle(
            request,
            provider,
            lambda body, now: verify_provider(settings, provider, request.headers, body, now=now, query=query),
        )

    async def standard_callback(request: Request) -> Response:
        source = request.path_params["source"].lower()
        if source not in keyrings:
            return JSONResponse(
                {"code": 404, "msg": f"unknown Standard Webhooks source {source!r}", "reason": "unknown_source"},
                status_code=404,
            )
        return await handle(
            request,
            f"standard-{source}",
            lambda body, now: verify_standard(settings, source, request.headers, body, now=now, keyrings=keyrings),
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        intake: Intake = request.state.intake
        if await intake.ping():
            return JSONResponse({"status": "ready", "redis": "ok"})
        return JSONResponse({"status": "unavailable", "redis": "unreachable"}, status_code=503)

    return Starlette(
        routes=[
            Route("/callbacks/standard/{source}", standard_callback, methods=["POST"]),
            Route("/callbacks/{provider}", provider_callback, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            metrics.route(settings, counters),
            ops_page.route(settings),
            tasks_route(settings),
        ],
        lifespan=lifespan,
    )
