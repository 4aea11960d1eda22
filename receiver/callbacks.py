"""The callback endpoints, as one raw ASGI app: the hot path of the receiver.

``POST /callbacks/{provider}`` and ``POST /callbacks/standard/{source}``: read a bounded body
(:mod:`receiver.body`), verify and parse it (:mod:`receiver.verify`), hand the event to
:class:`veo_archiver.intake.Intake`, and answer only once Redis has the delivery (or, when Redis cannot take
it and ``SPOOL_DIR`` is on, once it is fsynced in the local spool: ``X-Archiver-Outcome: spooled``).

Why raw ASGI: a callback is the one request a receiver serves thousands of times a second, and Starlette's
per-request machinery (its middleware layers, ``Request``, ``Headers`` decoded on every read, ``JSONResponse``)
cost more CPU than everything this path does itself. :class:`CallbackRoutes` sits in front of the Starlette
app (:func:`receiver.app.create_app`) and takes the requests it recognises exactly (a ``POST`` to one of the
two paths); everything else, including a ``GET`` on a callback path (405), goes to Starlette, whose routes
for the same paths call the same :class:`CallbackEndpoint`. Errors become HTTP through
:func:`receiver.responses.error_response`, the one renderer; an unexpected exception is logged and answered
500 in the same JSON shape (never a bare traceback).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver import metrics
from receiver.body import read_body
from receiver.headers import RequestHeaders
from receiver.limits import BodyBudget
from receiver.refusal_log import RefusalLog
from receiver.responses import ack_message, error_response, error_status
from receiver.spool import Spool, encode_entry
from receiver.verify import verify_provider, verify_standard
from veo_archiver import standard_webhooks
from veo_archiver.errors import (
    ArchiverError,
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
from veo_archiver.records.refusals import UNKNOWN, Refusal
from veo_archiver.redact import redact_bytes, redact_event, redact_tokens
from veo_archiver.settings import Settings

log = logging.getLogger("receiver.app")

Clock = Callable[[], float]
Verify = Callable[[RequestHeaders, bytes, float], TaskEvent]

PREFIX = "/callbacks/"
STANDARD_PREFIX = "/callbacks/standard/"


class CallbackEndpoint:
    """The two callback routes' ASGI app (``scope["path_params"]`` names the provider or the source)."""

    def __init__(
        self,
        settings: Settings,
        counters: metrics.ReceiverMetrics,
        *,
        keyrings: Mapping[str, standard_webhooks.Keyring],
        clock: Clock = time.time,
        refusal_log: RefusalLog | None = None,
    ) -> None:
        self._settings = settings
        self._counters = counters
        self.refusal_log = refusal_log or RefusalLog()
        self._keyrings = keyrings
        self._clock = clock
        self._budget = BodyBudget(settings.max_body_bytes_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params") or {}
        if "source" in params:
            await self.standard(scope, receive, send, str(params["source"]))
        else:
            await self.provider(scope, receive, send, str(params.get("provider", "")))

    async def provider(self, scope: Scope, receive: Receive, send: Send, provider: str) -> None:
        if provider not in REGISTRY:
            unknown = NotFound(f"unknown provider {provider!r}", reason="unknown_provider")
            self._record_refusal(scope, unknown, UNKNOWN, None)
            await error_response(unknown)(scope, receive, send)
            return
        settings = self._settings
        raw_query = scope.get("query_string") or b""
        query: dict[str, str] = dict(QueryParams(raw_query)) if raw_query else {}

        def verify(headers: RequestHeaders, body: bytes, now: float) -> TaskEvent:
            return verify_provider(settings, provider, headers, body, now=now, query=query)

        await self._handle(scope, receive, send, provider, verify)

    async def standard(self, scope: Scope, receive: Receive, send: Send, source: str) -> None:
        source = source.lower()
        if source not in self._keyrings:
            unknown = NotFound(f"unknown Standard Webhooks source {source!r}", reason="unknown_source")
            self._record_refusal(scope, unknown, UNKNOWN, None)
            await error_response(unknown)(scope, receive, send)
            return
        settings, keyrings = self._settings, self._keyrings

        def verify(headers: RequestHeaders, body: bytes, now: float) -> TaskEvent:
            return verify_standard(settings, source, headers, body, now=now, keyrings=keyrings)

        await self._handle(scope, receive, send, f"standard-{source}", verify)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, provider: str, verify: Verify) -> None:
        """Every callback goes through here: the one place that counts what was answered."""
        received_at = self._clock()
        self._counters.count_received(provider)
        event: TaskEvent | None = None
        try:
            headers = RequestHeaders(scope["headers"])
            body = await read_body(
                receive,
                headers.get("content-length"),
                self._settings.max_body_bytes,
                timeout=self._settings.request_read_timeout_s,
                budget=self._budget,
            )
            event = verify(headers, body, received_at)
            with log_context(provider=provider, task_id=event.task_id):
                outcome = await self._accept(scope, event, headers, body, received_at, provider)
        except ArchiverError as exc:
            self._count_refusal(exc, provider, event)
            if isinstance(exc, RequestError):
                self._record_refusal(scope, exc, provider, event)
            await error_response(exc)(scope, receive, send)
            return
        except Exception as exc:  # a bug of ours: answered 500 in the one JSON shape, logged with its traceback
            log.exception("callback failed", extra={"provider": provider})
            failure = ArchiverError(f"{type(exc).__name__} while handling the callback", reason="internal_error")
            self._count_refusal(failure, provider, event)
            await error_response(failure)(scope, receive, send)
            return
        start, message = ack_message(outcome)
        await send(start)
        await send(message)

    async def _accept(
        self, scope: Scope, event: TaskEvent, headers: RequestHeaders, body: bytes, received_at: float, provider: str
    ) -> str:
        state: Mapping[str, Any] = scope["state"]
        intake: Intake = state["intake"]
        client = scope.get("client")
        # verified with its token; stored (Redis, spool, job, archive) without it: veo_archiver/redact.py (the
        # intake redacts the event's JSON itself)
        delivery = Delivery(
            body=redact_bytes(body),
            headers={name: redact_tokens(value) for name, value in headers.items()},
            received_at=received_at,
            remote=client[0] if client else None,
            path=scope["path"],
        )
        started = time.perf_counter()
        try:
            result = await intake.submit(event, delivery)
        except QueueUnavailable as exc:
            spool: Spool | None = state.get("spool")
            if spool is None:
                raise
            # full or unwritable: raises QueueUnavailable (spool_full / spool_unwritable), answered 503 as before
            await asyncio.to_thread(spool.append, encode_entry(redact_event(event), delivery))
            self._counters.spooled.labels(provider).inc()
            log.warning("callback spooled", extra={"provider": provider, "reason": exc.reason, "detail": exc.message})
            return "spooled"
        self._counters.outcome(provider, result.outcome, time.perf_counter() - started)
        if result.outcome == "conflict":  # recorded for operators (show, status, /metrics), never merged
            log.warning(
                "a delivery for an accepted task with other result URLs",
                extra={"provider": provider, "task_id": event.task_id, "verification": event.verification.value},
            )
        return result.outcome

    def _record_refusal(self, scope: Scope, exc: RequestError, provider: str, event: TaskEvent | None) -> None:
        """For operators (``status``, ``/ops``): who was refused, why, from where; best effort, never waited on
        (:mod:`receiver.refusal_log`). The path carries no secret (tokens are in the query string)."""
        client = scope.get("client")
        refusal = Refusal(
            at=self._clock(),
            provider=provider,
            reason=exc.reason,
            status=error_status(exc),
            remote=client[0] if client else None,
            path=scope.get("path"),
            task_id=event.task_id if event is not None else exc.claimed_task_id,
        )
        state = scope.get("state") or {}
        self.refusal_log.record(state.get("redis"), refusal)

    def _count_refusal(self, exc: ArchiverError, provider: str, event: TaskEvent | None) -> None:
        counters = self._counters
        fields = {"provider": provider, "reason": exc.reason, "detail": exc.message}
        if event is not None:
            fields["task_id"] = event.task_id
        elif isinstance(exc, RequestError) and exc.claimed_task_id is not None:
            fields["claimed_task_id"] = exc.claimed_task_id
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


class CallbackRoutes:
    """ASGI: ``POST /callbacks/{provider}`` and ``POST /callbacks/standard/{source}`` straight to the
    endpoint; every other request (and the lifespan) to ``app``, the Starlette app with the same routes."""

    def __init__(self, app: ASGIApp, endpoint: CallbackEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX):
                if path.startswith(STANDARD_PREFIX):
                    source = path[len(STANDARD_PREFIX) :]
                    if source and "/" not in source:
                        await self.endpoint.standard(scope, receive, send, source)
                        return
                else:
                    provider = path[len(PREFIX) :]
                    if provider and "/" not in provider:
                        await self.endpoint.provider(scope, receive, send, provider)
                        return
        await self.app(scope, receive, send)
