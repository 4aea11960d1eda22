"""Registering tasks to track over HTTP: ``POST /tasks`` (the CLI twin is ``veo-archiver track``).

A tracked task is one whose callback we expect; the reconciliation sweep (:mod:`workers.reconcile`) polls
its provider's status API if no terminal callback came ``RECONCILE_AFTER`` seconds after registration.
The record itself (checks, ``ZADD NX`` registration that keeps the first time) is
:mod:`veo_archiver.records.tracked`; this module parses the request and answers.

``POST /tasks`` takes ``{"provider": "kie", "task_id": "..."}`` or a list of them, with
``Authorization: Bearer <ADMIN_TOKEN>``. Answers: 200 with every task and its registration time; 401 without
the right token; 404 (``disabled``) when no ``ADMIN_TOKEN`` is configured; 400 with a reason for bad input,
including a provider whose status API key is not configured (the sweep could never poll it). The whole
batch is refused when one item is bad, so a retry never half-applies.

The endpoint uses a synchronous Redis client in Starlette's thread pool: it is one ``ZADD`` per request,
and a sync client is not tied to an event loop, so the route needs nothing from the app's lifespan.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.auth import require_admin
from receiver.body import read_bounded
from veo_archiver.errors import InvalidPayload, QueueUnavailable
from veo_archiver.records.tracked import Registration, TaskRef, check_provider, check_task_id, register
from veo_archiver.settings import Settings

MAX_BODY_BYTES = 256 * 1024
MAX_TASKS = 1000


def parse_tasks(settings: Settings, body: bytes) -> list[TaskRef]:
    """The request body as task references, in order, without duplicates; InvalidPayload names the item."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPayload("body: expected JSON", reason="invalid_json") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise InvalidPayload("body: the list is empty", reason="no_tasks")
    if len(items) > MAX_TASKS:
        raise InvalidPayload(f"body: at most {MAX_TASKS} tasks per request", reason="too_many_tasks")
    out: dict[TaskRef, None] = {}
    for n, item in enumerate(items):
        where = f"[{n}]" if isinstance(data, list) else "body"
        if not isinstance(item, dict):
            raise InvalidPayload(f"{where}: expected an object with provider and task_id", reason="invalid_task")
        unknown = set(item) - {"provider", "task_id"}
        if unknown:
            raise InvalidPayload(f"{where}: unknown field(s) {', '.join(sorted(unknown))}", reason="invalid_task")
        provider = item.get("provider")
        if not isinstance(provider, str):
            raise InvalidPayload(f"{where}.provider: expected a string", reason="unknown_provider")
        try:
            check_provider(settings, provider)
        except InvalidPayload as exc:
            raise InvalidPayload(f"{where}.provider: {exc.message}", reason=exc.reason) from None
        out[TaskRef(provider, check_task_id(item.get("task_id"), f"{where}.task_id"))] = None
    return list(out)


class TasksEndpoint:
    """``POST /tasks``; ``connection`` and ``clock`` (the registration time) are injectable for tests; the
    connection is otherwise built on first use from REDIS_URL."""

    def __init__(
        self, settings: Settings, connection: redis.Redis | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._clock = clock

    def _redis(self) -> redis.Redis:
        if self._connection is None:
            self._connection = redis.Redis.from_url(
                self._settings.redis_url,
                socket_timeout=self._settings.enqueue_timeout_s,
                socket_connect_timeout=2.0,
            )
        return self._connection

    async def post(self, request: Request) -> Response:
        """Refusals are raised; the app answers them in :mod:`receiver.responses` (its exception handlers)."""
        require_admin(self._settings, request, feature="Task registration")
        body = await read_bounded(request, MAX_BODY_BYTES, timeout=self._settings.request_read_timeout_s)
        tasks = parse_tasks(self._settings, body)
        try:
            registrations = await run_in_threadpool(self._register, tasks)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"redis could not record the tasks: {exc}") from exc
        return JSONResponse({"tracked": [r.to_json() for r in registrations]})

    def _register(self, tasks: list[TaskRef]) -> list[Registration]:
        return register(self._redis(), tasks, now=self._clock())


def tasks_route(
    settings: Settings, connection: redis.Redis | None = None, *, clock: Callable[[], float] = time.time
) -> Route:
    # a bound method: Starlette would take a callable instance for a raw ASGI app
    return Route("/tasks", TasksEndpoint(settings, connection, clock=clock).post, methods=["POST"])
