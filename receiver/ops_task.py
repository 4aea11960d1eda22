"""``GET /ops/tasks/{provider}/{task_id}``: one task's page, everything Redis holds about it.

Deliveries, jobs and their attempts, the download under way, the dead-letter verdict, the outcome, the
manifest's key, location and files (object key, size, SHA-256) and the refusals recorded for the task, read
by :func:`veo_archiver.queue_view.read_task` (the same records ``veo-archiver show`` reads). The archive itself
is not read by the receiver: the manifest section shows what the outcome entry and the job's result recorded
about it, and where the object lives. Actions: retry a dead-lettered job, sweep the task now when it is
tracked. The task id comes from the address: hostile like everything else, escaped by
:mod:`receiver.ops_html`. ``/ops/tasks/{provider}?id=…`` serves task ids no path can carry (``.``, ``..``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from receiver.ops_html import (
    Link,
    action_form,
    definitions,
    e,
    page,
    refresh_bar,
    shown,
    size,
    stream_time,
    table,
    task_href,
    when,
)
from receiver.ops_session import HEADERS, csrf_token, gate
from veo_archiver.queue_view import TaskView, read_task
from veo_archiver.settings import Settings

BODY_CHARS = 4000


async def endpoint(settings: Settings, request: Request, *, now: float | None = None) -> Response:
    now = time.time() if now is None else now
    answered = gate(settings, request, now)
    if answered is not None:
        return answered
    provider = str(request.path_params["provider"])
    task_id = str(request.path_params.get("task_id", request.query_params.get("id", "")))
    paused = request.query_params.get("refresh") == "off"
    here = task_href(provider, task_id)
    try:
        view = await read_task(request.state.redis, settings.queue_name, provider, task_id)
    except (redis.RedisError, OSError) as exc:
        body = f'<h1>Task {e(task_id)}</h1><p class="bad">Redis unreachable: {e(type(exc).__name__)}: {e(exc)}</p>'
        return HTMLResponse(page(f"task {task_id}", body, paused=paused), status_code=503, headers=HEADERS)
    markup = render(view, here=here, paused=paused, csrf=csrf_token(settings, request), now=now)
    return HTMLResponse(markup, status_code=200 if view.known else 404, headers=HEADERS)


def routes(settings: Settings) -> list[Route]:
    async def task(request: Request) -> Response:
        return await endpoint(settings, request)

    return [
        Route("/ops/tasks/{provider}", task, methods=["GET"]),
        Route("/ops/tasks/{provider}/{task_id:path}", task, methods=["GET"]),
    ]


# ------------------------------------------------------------------------------------------- rendering


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _manifest(view: TaskView) -> str:
    recorded: dict[str, Any] = {}
    if view.outcome is not None:
        entry = {k: v for k, v in view.outcome.items() if k != "_id"}
        try:
            entry["files"] = json.loads(entry.get("files") or "[]")
        except ValueError:
            pass
        recorded["outcome"] = {"at": stream_time(view.outcome["_id"]), **entry}
    results = {job.job_id: job.result for job in view.jobs if job.result is not None}
    if results:
        recorded["job_results"] = results
    pairs = [("object key", view.manifest_key or "—"), ("location", view.manifest_location or "—")]
    text = _pretty(recorded) if recorded else "no outcome or job result recorded in Redis (yet)"
    return (
        f'<h2 id="manifest">Manifest</h2>{definitions("manifest-where", pairs)}'
        '<p class="muted">As recorded in Redis by the worker (the outcome entry and the job\'s result); the '
        "manifest object itself is in the archive at the location above.</p>"
        f'<pre id="manifest-json">{e(text)}</pre>'
    )


def _deliveries(view: TaskView) -> str:
    rows = [
        (
            d.number,
            when(d.received_at),
            d.remote,
            d.path,
            d.outcome,
            d.verification,
            d.status,
            d.job_id,
            when(d.replayed_at) if d.replayed_at else "",
        )
        for d in view.deliveries
    ]
    listing = table(
        "task-deliveries",
        ["#", "received", "from", "path*", "outcome", "verification", "status", "job id*", "replayed"],
        rows,
        "no delivery kept for this task",
    )
    bodies = "".join(
        f"<details><summary>delivery {d.number}: headers and body ({len(d.body)} characters)</summary>"
        f"<pre>{e(_pretty(d.headers))}\n\n{e(d.body[:BODY_CHARS])}</pre></details>"
        for d in view.deliveries
    )
    return f"<h2>Deliveries ({len(view.deliveries)})</h2>{listing}{bodies}"


def _jobs(view: TaskView, csrf: str | None, here: str) -> str:
    rows = []
    attempts = []
    for job in view.jobs:
        letter = job.dead_letter or {}
        retry = action_form("retry", {"job_id": job.job_id}, csrf, "retry", back=here) if job.state == "failed" else ""
        rows.append(
            (
                job.job_id,
                job.status,
                job.state,
                when(job.started_at or job.enqueued_at),
                when(job.ended_at),
                when(job.next_run_at) if job.next_run_at else "",
                len(job.attempts),
                job.progress.describe() if job.progress else "",
                f"{letter.get('reason')}: {letter.get('error')}" if letter else (job.error or ""),
                retry,
            )
        )
        for n, attempt in enumerate(job.attempts, start=1):
            at, reason = when(attempt.get("at")), attempt.get("reason")
            attempts.append((job.job_id, n, at, reason, attempt.get("retry_in_s"), attempt.get("error")))
    jobs = table(
        "task-jobs",
        [
            "job id*",
            "task status",
            "state",
            "started",
            "ended",
            "next run",
            "attempts",
            "progress",
            "error!",
            "",
        ],
        rows,
        "no job for this task",
    )
    tried = table(
        "task-attempts",
        ["job id*", "#", "at", "reason", "retry in s", "error!"],
        attempts,
        "no failed attempt recorded",
    )
    return f"<h2>Jobs ({len(view.jobs)})</h2>{jobs}<h2>Attempts</h2>{tried}"


def render(view: TaskView, *, here: str, paused: bool, csrf: str | None, now: float) -> str:
    outcome = view.outcome or {}
    summary = [
        ("provider", view.provider),
        ("task id", view.task_id),
        ("tracked since", when(view.tracked_since) if view.tracked_since else "not tracked"),
        ("outcome", outcome.get("outcome") or "none yet"),
        ("manifest", Link(view.manifest_key or "—", "#manifest")),
    ]
    sweep = ""
    if view.tracked_since:
        fields = {"provider": view.provider, "task_id": view.task_id}
        sweep = f"<p>{action_form('sweep', fields, csrf, 'sweep this task now', back=here)}</p>"
    files = table(
        "files",
        ["object key*", "size", "bytes", "sha-256*", "type"],
        [(f.key, size(f.size), f.size, f.sha256, f.content_type) for f in view.files],
        "no file recorded (not archived yet, or a failed task)",
    )
    refusals = table(
        "task-refusals",
        ["at", "reason", "status", "from", "path*"],
        [(shown(r.at), r.reason, r.status, r.remote, r.path) for r in view.refusals],
        "no refusal recorded for this task (a kie.ai callback whose signature fails is listed here by the task it "
        "named; most other refusals happen before a task id is read)",
    )
    unknown = "" if view.known else '<p class="bad">Redis holds nothing about this task.</p>'
    body = f"""<p><a href="/ops{"?refresh=off" if paused else ""}">← ops</a></p>
<h1>Task <span class="wide">{e(view.task_id)}</span></h1>
<div class="bar muted"><span>{e(view.provider)} · {e(shown(now))}</span><span>{refresh_bar(here, paused)}</span></div>
{unknown}{definitions("task-summary", summary)}{sweep}
<h2>Files ({len(view.files)})</h2>{files}
{_jobs(view, csrf, here)}
{_deliveries(view)}
{_manifest(view)}
<h2>Refusals</h2>{refusals}"""
    return page(f"task {view.task_id}", body, paused=paused)
