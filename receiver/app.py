"""The receiver's app factory: lifespan, routes, and the order of the layers every request goes through.

The callback endpoints live in :mod:`receiver.callbacks` (read a bounded body, verify, parse, hand the event
to :class:`veo_archiver.intake.Intake`, never answer 200 before Redis has the delivery); the other routes
(health, readiness, metrics, the ops page, tracking) are Starlette's. Errors become HTTP in
:mod:`receiver.responses`, registered here for every route.

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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from receiver import metrics, ops_page, redis_wait
from receiver.callbacks import CallbackEndpoint, CallbackRoutes
from receiver.limits import ConcurrencyLimit
from receiver.proxy import ProxyHeaders
from receiver.responses import EXCEPTION_HANDLERS
from receiver.spool import Spool
from receiver.spool_drain import SpoolDrainer
from receiver.submission import submit_route
from receiver.tracking import tasks_route
from receiver.verify import standard_keyrings
from veo_archiver.errors import ConfigError
from veo_archiver.intake import Intake
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
    settings: Settings,
    *,
    clock: Clock = time.time,
    redis_client: aioredis.Redis | None = None,
    counters: metrics.ReceiverMetrics | None = None,
) -> ASGIApp:
    """Build the receiver. ``redis_client`` and ``clock`` are injectable for tests; defaults come from settings.
    ``counters``: the registry ``/metrics`` shows, when the server counts into it too (``veo-archiver serve``).

    The ASGI app, outermost first: :class:`~receiver.proxy.ProxyHeaders` (who the client is),
    :class:`~receiver.limits.ConcurrencyLimit`, :class:`~receiver.callbacks.CallbackRoutes` (the callback
    POSTs, straight to their endpoint), then the Starlette app with every route and the lifespan."""
    keyrings = standard_keyrings(settings)
    counters = counters or metrics.ReceiverMetrics()

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
        # Redis down at start: the receiver serves (spooling) and says where it waits, never blocks here
        watching = asyncio.create_task(
            redis_wait.watch(intake, settings.redis_url, spooling=spool is not None), name="veo-archiver-redis-wait"
        )
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
                drainer.run(intake, client, interval_s=SPOOL_DRAIN_INTERVAL_S), name="veo-archiver-spool-drain"
            )
        try:
            yield {"intake": intake, "redis": client, "spool": spool, "spool_drainer": drainer}
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            if draining is not None:
                draining.cancel()  # an entry whose submit was cut short stays; its replay is deduplicated
                with contextlib.suppress(asyncio.CancelledError):
                    await draining
            await endpoint.refusal_log.drain()
            if redis_client is None:
                await client.aclose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        intake: Intake = request.state.intake
        if await intake.ping():
            return JSONResponse({"status": "ready", "redis": "ok"})
        # ready means "a callback sent here is kept": with room in a writable spool it is, so the orchestrator
        # keeps this receiver in service during a Redis outage (taking it out would send the providers' retries
        # nowhere); a full or unwritable spool (full disk, read-only remount) is not ready
        spool: Spool | None = request.state.spool
        down = {"status": "unavailable", "redis": "unreachable"}
        if spool is None:
            return JSONResponse({**down, "reason": "queue_unavailable", "spool": "off"}, status_code=503)
        count, _ = spool.depth()
        if not spool.has_room():
            return JSONResponse({**down, "reason": "spool_full", "spooled": count}, status_code=503)
        # the latest write's result when recent (WRITE_CHECK_TTL_S), else a probe: a few syscalls off the loop
        writable, why = await asyncio.to_thread(spool.writable)
        if not writable:
            return JSONResponse({**down, "reason": "spool_unwritable", "error": why}, status_code=503)
        return JSONResponse({"status": "ready", "redis": "unreachable", "spool": "accepting", "spooled": count})

    endpoint = CallbackEndpoint(settings, counters, keyrings=keyrings, clock=clock)
    starlette = Starlette(
        routes=[
            # the same endpoint as CallbackRoutes' fast path: here for what it does not take (405 for a GET...)
            Route("/callbacks/standard/{source}", endpoint, methods=["POST"]),
            Route("/callbacks/{provider}", endpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            metrics.route(settings, counters),
            *ops_page.routes(settings),
            tasks_route(settings, clock=clock),
            submit_route(settings),
        ],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    limited = ConcurrencyLimit(
        CallbackRoutes(starlette, endpoint),
        limit=settings.max_concurrent_requests,
        per_client=settings.max_requests_per_client or max(1, settings.max_concurrent_requests // 4),
        on_shed=lambda reason: counters.shed.labels(reason).inc(),
    )
    return ProxyHeaders(limited, trusted=settings.forwarded_allow_ips)
