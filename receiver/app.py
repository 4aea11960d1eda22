"""The Starlette app factory: lifespan, routes, and the callback path that counts what it answered.

The handler reads a bounded body (:mod:`receiver.body`), verifies, parses, and hands the event to
:class:`veo_archiver.intake.Intake`; it never downloads anything and never answers 200 before Redis has the
job. Errors become HTTP in :mod:`receiver.responses`, registered here for every route.

When Redis cannot take a verified callback and ``SPOOL_DIR`` is on, the callback is written to the local
spool (:mod:`receiver.spool`) and answered 200 (``X-Archiver-Outcome: spooled``) once it is fsynced; a task
started in the lifespan replays the spool into the intake, at startup and whenever Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import metrics, ops_page
from receiver.body import read_bounded
from receiver.limits import BodyBudget, ConcurrencyLimit
from receiver.proxy import ProxyHeaders
from receiver.responses import EXCEPTION_HANDLERS, ack, error_response
from receiver.spool import Spool, SpoolDrainer, encode_entry
from receiver.tracking import tasks_route
from receiver.verify import standard_keyrings, verify_provider, verify_standard
from veo_archiver.errors import (
    ArchiverError,
    ConfigError,
    NotFound,
    Overloaded,
    QueueUnavailable,
    RequestError,
    RequestTimeout,
    TransientError,
)
from veo_archiver.event import TaskEvent
from veo_archiver.intake import Delivery, Intake
from veo_archiver.logs import log_context
from veo_archiver.providers import REGISTRY
from veo_archiver.redact import redact_bytes, redact_event, redact_tokens
from veo_archiver.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: seconds between two looks at the spool while it holds anything
SPOOL_DRAIN_INTERVAL_S = 1.0


def open_spool(settings: Settings) -> Spool | None:
    """The spool ``SPOOL_DIR`` names (created if missing), or None when it is off. Blocking."""
    if settings.spool_dir is None:
        return None
    try:
        return Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes, max_files=settings.spool_max_files)
    except OSError as exc:
        raise ConfigError(
            f"SPOOL_DIR={settings.spool_dir}: cannot use it as the callback spool ({exc}); "
            "mount a writable volume there, or set SPOOL_DIR=off to answer 503 while Redis is down"
        ) from exc


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
    if settings.kie_hmac_keys and settings.providers["kie"].api_key is None:
        out.append(
            "KIE_WEBHOOK_HMAC_KEYS without KIE_API_KEY: kie.ai signs the task id and time, not the body, so the "
            "result URLs of a signed callback are not verified (manifest: urls_verified false); set KIE_API_KEY"
        )
    return out


def create_app(
    settings: Settings, *, clock: Clock = time.time, redis_client: aioredis.Redis | None = None
) -> Starlette:
    """Build the receiver. ``redis_client`` and ``clock`` are injectable for tests; defaults come from settings."""
    keyrings = standard_keyrings(settings)
    counters = metrics.ReceiverMetrics()
    budget = BodyBudget(settings.max_body_bytes_in_flight)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        spool = await asyncio.to_thread(open_spool, settings)
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
        drainer = SpoolDrainer(spool) if spool else None
        draining: asyncio.Task[None] | None = None
        if drainer is not None:
            waiting, size = drainer.spool.depth()
            log.info(
                "spool ready" + ("; draining what an earlier run left" if waiting else ""),
                extra={"spool_dir": str(drainer.spool.directory), "waiting": waiting, "waiting_bytes": size},
            )
            # its first turn drains what is waiting, without holding up the startup behind a long backlog
            draining = asyncio.create_task(
                drainer.run(intake, interval_s=SPOOL_DRAIN_INTERVAL_S), name="veo-archiver-spool-drain"
            )
        try:
            yield {"intake": intake, "redis": client, "spool": spool, "spool_drainer": drainer}
        finally:
            if draining is not None:
                draining.cancel()  # an entry whose submit was cut short stays; its replay is deduplicated
                with contextlib.suppress(asyncio.CancelledError):
                    await draining
            if redis_client is None:
                await client.aclose()

    async def accept(request: Request, event: TaskEvent, body: bytes, received_at: float, provider: str) -> Response:
        intake: Intake = request.state.intake
        # verified with its token; stored (Redis, spool, job, archive) without it: veo_archiver/redact.py
        event = redact_event(event)
        delivery = Delivery(
            body=redact_bytes(body),
            # the first value of a repeated header, as Starlette's own lookups (and so verification) read it
            headers={name: redact_tokens(value) for name, value in reversed(request.headers.items())},
            received_at=received_at,
            remote=request.client.host if request.client else None,
            path=request.url.path,
        )
        started = time.perf_counter()
        try:
            result = await intake.submit(event, delivery)
        except QueueUnavailable as exc:
            spool: Spool | None = request.state.spool
            if spool is None:
                raise
            # full or unwritable: raises QueueUnavailable (spool_full / spool_unwritable), answered 503 as before
            await asyncio.to_thread(spool.append, encode_entry(event, delivery))
            counters.spooled.labels(provider).inc()
            log.warning("callback spooled", extra={"provider": provider, "reason": exc.reason, "detail": exc.message})
            return ack("spooled")
        counters.outcome(provider, result.outcome, time.perf_counter() - started)
        if result.outcome == "conflict":  # recorded for operators (show, status, /metrics), never merged
            log.warning(
                "a delivery for an accepted task with other result URLs",
                extra={"provider": provider, "task_id": event.task_id, "verification": event.verification.value},
            )
        return ack(result.outcome)

    async def handle(request: Request, provider: str, verify: Callable[[bytes, float], TaskEvent]) -> Response:
        """Every callback goes through here: the one place that counts what was answered."""
        received_at = clock()
        counters.received.labels(provider).inc()
        event: TaskEvent | None = None
        try:
            body = await read_bounded(
                request, settings.max_body_bytes, timeout=settings.request_read_timeout_s, budget=budget
            )
            event = verify(body, received_at)
            with log_context(provider=provider, task_id=event.task_id):
                return await accept(request, event, body, received_at, provider)
        except ArchiverError as exc:
            fields = {"provider": provider, "reason": exc.reason, "detail": exc.message}
            if event is not None:
                fields["task_id"] = event.task_id
            if isinstance(exc, Overloaded | RequestTimeout):
                counters.shed.labels(exc.reason).inc()
            if isinstance(exc, RequestError):
                counters.rejected.labels(provider, exc.reason).inc()
                log.info("callback refused", extra=fields)
            else:
                (counters.unavailable if isinstance(exc, TransientError) else counters.errors).labels(
                    provider, exc.reason
                ).inc()
                log.warning("callback not taken", extra=fields)
            return error_response(exc)

    async def provider_callback(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in REGISTRY:
            raise NotFound(f"unknown provider {provider!r}", reason="unknown_provider")
        query = dict(request.query_params)
        return await handle(
            request,
            provider,
            lambda body, now: verify_provider(settings, provider, request.headers, body, now=now, query=query),
        )

    async def standard_callback(request: Request) -> Response:
        source = request.path_params["source"].lower()
        if source not in keyrings:
            raise NotFound(f"unknown Standard Webhooks source {source!r}", reason="unknown_source")
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
        # ready means "a callback sent here is kept": with room in the spool it is, so the orchestrator keeps
        # this receiver in service during a Redis outage (taking it out would send the providers' retries nowhere)
        spool: Spool | None = request.state.spool
        if spool is not None and spool.has_room():
            count, _ = spool.depth()
            return JSONResponse({"status": "ready", "redis": "unreachable", "spool": "accepting", "spooled": count})
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
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            Middleware(ProxyHeaders, trusted=settings.forwarded_allow_ips),
            Middleware(
                ConcurrencyLimit,
                limit=settings.max_concurrent_requests,
                on_shed=lambda reason: counters.shed.labels(reason).inc(),
            ),
        ],
    )
