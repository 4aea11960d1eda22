"""Registering tasks to track: ``POST /tasks`` and ``veo-archiver track``.

A tracked task is one whose callback we expect; the reconciliation sweep (:mod:`workers.reconcile`) polls
its provider's status API if no terminal callback came ``RECONCILE_AFTER`` seconds after registration.
Registration is idempotent: ``ZADD NX`` on the tracked zset keeps the first registration time.

``POST /tasks`` takes ``{"provider": "kie", "task_id": "..."}`` or a list of them, with
``Authorization: Bearer <ADMIN_TOKEN>``. Answers: 200 with every task and its registration time; 401 without
the right token; 404 (``disabled``) when no ``ADMIN_TOKEN`` is configured; 400 with a reason for bad input,
including a provider whose status API key is not configured (the sweep could never poll it). The whole
batch is refused when one item is bad, so a retry never half-applies.

The endpoint uses a synchronous Redis client in Starlette's thread pool: it is one ``ZADD`` per request,
and a sync client is not tied to an event loop, so the route needs nothing from the app's lifespan.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import InvalidPayload, PayloadTooLarge, QueueUnavailable, Rejected, RequestError
from veo_archiver.providers import NAMES as PROVIDERS
from veo_archiver.providers import REGISTRY
from veo_archiver.settings import Settings

MAX_BODY_BYTES = 256 * 1024
MAX_TASKS = 1000
MAX_TASK_ID_CHARS = 512


@dataclass(frozen=True)
class TaskRef:
    provider: str
    task_id: str


@dataclass(frozen=True)
class Registration:
    provider: str
    task_id: str
    registered_at: float
    new: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "task_id": self.task_id,
            "registered_at": iso(self.registered_at),
            "new": self.new,
        }


def check_provider(settings: Settings, provider: str) -> None:
    """The provider must be known and have a status API key: the sweep polls with it."""
    if provider not in PROVIDERS:
        raise InvalidPayload(
            f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}", reason="unknown_provider"
        )
    configured = settings.providers.get(provider)
    if configured is None or not configured.api_key:
        raise InvalidPayload(
            f"{provider} has no status API key, so its tasks cannot be polled: set {REGISTRY[provider].api_key_var}",
            reason="no_api_key",
        )


def check_task_id(task_id: object, where: str = "task_id") -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidPayload(f"{where}: expected a non-empty string", reason="invalid_task_id")
    if len(task_id) > MAX_TASK_ID_CHARS:
        raise InvalidPayload(f"{where}: longer than {MAX_TASK_ID_CHARS} characters", reason="invalid_task_id")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in task_id):
        raise InvalidPayload(f"{where}: contains control characters", reason="invalid_task_id")
    return task_id


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


def register(connection: redis.Redis, tasks: Sequence[TaskRef], *, now: float) -> list[Registration]:
    """Add the tasks to the tracked zset (``NX``: a task keeps its first registration time)."""
    if not tasks:
        return []
    members = [redis_keys.tracked_member(t.provider, t.task_id) for t in tasks]
    pipe = connection.pipeline(transaction=True)
    for member in members:
        pipe.zadd(redis_keys.tracked_zset(), {member: now}, nx=True)
    pipe.zmscore(redis_keys.tracked_zset(), members)
    replies = pipe.execute()
    added, scores = replies[:-1], replies[-1]
    return [
        Registration(t.provider, t.task_id, float(score if score is not None else now), bool(new))
        for t, new, score in zip(tasks, added, scores, strict=True)
    ]


def _refusal(exc: RequestError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"code": exc.status_code, "msg": exc.message, "reason": exc.reason},
        status_code=exc.status_code,
        headers=headers,
    )


def authorized(settings: Settings, header: str | None) -> bool:
    scheme, _, token = (header or "").partition(" ")
    expected = settings.admin_token or ""
    return (
        bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body is over the {MAX_BODY_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class TasksEndpoint:
    """``POST /tasks``; ``connection`` is injectable for tests, else built on first use from REDIS_URL."""

    def __init__(self, settings: Settings, connection: redis.Redis | None = None) -> None:
        self._settings = settings
        self._connection = connection

    def _redis(self) -> redis.Redis:
        if self._connection is None:
            self._connection = redis.Redis.from_url(
                self._settings.redis_url,
                socket_timeout=self._settings.enqueue_timeout_s,
                socket_connect_timeout=2.0,
            )
        return self._connection

    async def post(self, request: Request) -> Response:
        if not self._settings.admin_token:
            return JSONResponse(
                {"code": 404, "msg": "task registration is disabled: set ADMIN_TOKEN", "reason": "disabled"},
                status_code=404,
            )
        if not authorized(self._settings, request.headers.get("authorization")):
            return _refusal(
                Rejected("missing or wrong bearer token (Authorization: Bearer <ADMIN_TOKEN>)"),
                {"WWW-Authenticate": 'Bearer realm="veo-archiver"'},
            )
        try:
            body = await _read_body(request)
            tasks = parse_tasks(self._settings, body)
            try:
                registrations = await run_in_threadpool(self._register, tasks)
            except redis.RedisError as exc:
                raise QueueUnavailable(f"redis could not record the tasks: {exc}") from exc
        except RequestError as exc:
            return _refusal(exc)
        except QueueUnavailable as exc:
            return JSONResponse(
                {"code": 503, "msg": exc.message, "reason": exc.reason}, status_code=503, headers={"Retry-After": "5"}
            )
        except ClientDisconnect:
            return Response(status_code=400)
        return JSONResponse({"tracked": [r.to_json() for r in registrations]})

    def _register(self, tasks: list[TaskRef]) -> list[Registration]:
        return register(self._redis(), tasks, now=time.time())


def tasks_route(settings: Settings, connection: redis.Redis | None = None) -> Route:
    # a bound method: Starlette would take a callable instance for a raw ASGI app
    return Route("/tasks", TasksEndpoint(settings, connection).post, methods=["POST"])
