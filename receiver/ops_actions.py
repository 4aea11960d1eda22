"""``POST /ops/actions/retry`` and ``POST /ops/actions/sweep``: what an operator does today from the command
line, from the ops pages, behind the admin session and its CSRF token (:mod:`receiver.ops_session`).

- **retry** requeues one dead letter (form field ``job_id``) through :mod:`veo_archiver.requeue`, the code of
  ``veo-archiver retry``;
- **sweep** asks the workers to poll one tracked task now (``provider``, ``task_id``) through
  :func:`veo_archiver.sweep_request.request_sweep`: a job running :func:`workers.reconcile.sweep` for it, the
  code of ``veo-archiver sweep``.

Each action, done or refused for a reason of its own (not a dead letter, not tracked), is recorded on
``veo:ops:actions`` (:mod:`veo_archiver.records.ops_actions`) and shown on ``/ops``; then the browser goes back
to the page it came from (``back``, a path under ``/ops`` only). RQ's API is synchronous: the work runs in a
thread with a short-lived client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs

import redis
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from receiver.ops_html import e, page, shown, table
from receiver.ops_session import HEADERS, admit, refused, require_csrf
from veo_archiver import requeue
from veo_archiver.errors import InvalidPayload, PayloadTooLarge, RequestError
from veo_archiver.records import ops_actions, tracked
from veo_archiver.records.ops_actions import OpsAction
from veo_archiver.settings import Settings
from veo_archiver.sweep_request import request_sweep

MAX_FORM_BYTES = 8192
FORM_TYPE = "application/x-www-form-urlencoded"

#: (connection, settings, form) -> (ok, target, what happened)
Action = Callable[[redis.Redis, Settings, dict[str, str]], tuple[bool, str, str]]


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").partition(";")[0].strip().lower() != FORM_TYPE:
        raise InvalidPayload(f"an action is a form post ({FORM_TYPE})", reason="not_a_form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"an action's form is at most {MAX_FORM_BYTES} bytes", reason="form_too_large")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidPayload("unreadable form", reason="bad_form") from exc
    return {name: values[-1] for name, values in fields.items()}


def _back(form: dict[str, str]) -> str:
    back = form.get("back") or "/ops"
    return back if back.startswith("/ops") and not back.startswith("//") and "\\" not in back else "/ops"


def retry(connection: redis.Redis, settings: Settings, form: dict[str, str]) -> tuple[bool, str, str]:
    job_id = form.get("job_id", "")
    if not job_id:
        raise InvalidPayload("retry needs job_id", reason="missing_field")
    letters, skipped = requeue.select(connection, settings.queue_name, job_ids=[job_id])
    report = requeue.retry(connection, settings.queue_name, letters, default_retries=len(settings.retry_intervals_s))
    skipped += report.skipped
    if report.requeued:
        letter = report.requeued[0]
        return True, job_id, f"requeued ({letter.provider}/{letter.task_id}, was {letter.reason})"
    return False, job_id, f"not requeued: {skipped[0][1] if skipped else 'no such dead letter'}"


def sweep(connection: redis.Redis, settings: Settings, form: dict[str, str]) -> tuple[bool, str, str]:
    provider, task_id = form.get("provider", ""), form.get("task_id", "")
    if not provider or not task_id:
        raise InvalidPayload("sweep needs provider and task_id", reason="missing_field")
    target = f"{provider}/{task_id}"
    if tracked.since(connection, provider, task_id) is None:
        return False, target, "not swept: the task is not tracked (archived, dropped, or never registered)"
    job_id = request_sweep(connection, settings, provider, task_id, now=time.time())
    return True, target, f"sweep requested (job {job_id})"


ACTIONS: dict[str, Action] = {ops_actions.RETRY: retry, ops_actions.SWEEP: sweep}


def _run(settings: Settings, name: str, form: dict[str, str], remote: str | None) -> OpsAction:
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)
    try:
        ok, target, result = ACTIONS[name](connection, settings, form)
        done = OpsAction(at=time.time(), action=name, target=target, result=result, ok=ok, remote=remote)
        pipe = connection.pipeline(transaction=False)
        ops_actions.queue_write(pipe, done)
        pipe.execute()
        return done
    finally:
        connection.close()


async def endpoint(settings: Settings, name: str, request: Request) -> Response:
    try:
        admitted = admit(settings, request, time.time())
        if admitted is not None:  # a token in the address: exchanged for the session, never acted on
            return admitted
        form = await _form(request)
        require_csrf(settings, request, form.get("csrf"))
    except RequestError as exc:
        return refused(request, exc)
    remote = request.client.host if request.client else None
    try:
        await asyncio.to_thread(_run, settings, name, form, remote)
    except RequestError as exc:
        return refused(request, exc)
    except (redis.RedisError, OSError) as exc:
        body = f'<h1>Not done</h1><p class="bad">Redis: {e(type(exc).__name__)}: {e(exc)}</p>'
        return HTMLResponse(page("ops action", body, paused=True), status_code=503, headers=HEADERS)
    return RedirectResponse(_back(form), status_code=303, headers=HEADERS)


def routes(settings: Settings) -> list[Route]:
    def route(name: str) -> Route:
        async def act(request: Request) -> Response:
            return await endpoint(settings, name, request)

        return Route(f"/ops/actions/{name}", act, methods=["POST"])

    return [route(name) for name in ACTIONS]


def actions_table(actions: Sequence[OpsAction]) -> str:
    return table(
        "actions",
        ["at", "action", "target*", "result*", "from"],
        [(shown(a.at), a.action, a.target, a.result, a.remote) for a in actions],
        "no action taken from this page yet",
    )
