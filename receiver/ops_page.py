"""``GET /ops``: the operations page, server-rendered (no script, inline CSS and SVG), and the routes of the
pages and actions under it.

Shows the queue and RQ registries, rates over the last hour (accepted, archived, dead letters, refused, drawn
by :func:`receiver.ops_html.chart`), live workers, the downloads under way, the latest outcomes
(``veo:outcomes``), the latest dead letters (classified by :mod:`veo_archiver.records.dead_letter` as the CLI
and /metrics do) with a retry button, the refused callbacks (:mod:`veo_archiver.records.refusals`), the latest
deliveries (``veo:events``), the tracked tasks still pending with a sweep button, and the operator actions
taken here; all read by :func:`veo_archiver.queue_view.read_ops`; this module only renders and answers. Every
task, job, dead letter and outcome links to its task page (:mod:`receiver.ops_task`); actions are
:mod:`receiver.ops_actions`; access, the cookie session and CSRF are :mod:`receiver.ops_session`. Every value is
escaped by :mod:`receiver.ops_html`.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from receiver import ops_actions, ops_task
from receiver.ops_html import (
    Link,
    action_form,
    age,
    chart,
    e,
    page,
    refresh_bar,
    shown,
    size,
    stream_time,
    table,
    task_href,
    task_link,
    when,
)
from receiver.ops_session import COOKIE, HEADERS, cookie_value, csrf_token, gate
from receiver.spool import SpoolSurvey, survey
from veo_archiver.queue_view import OpsData, read_ops
from veo_archiver.records.progress import eta_text, rate_text, size_text
from veo_archiver.records.refusals import RefusalSummary
from veo_archiver.settings import Settings

__all__ = ["COOKIE", "cookie_value", "endpoint", "render", "routes"]

ERROR_CHARS = 600
PATH = "/ops"


async def endpoint(settings: Settings, request: Request, *, now: float | None = None) -> Response:
    now = time.time() if now is None else now
    answered = gate(settings, request, now)
    if answered is not None:
        return answered
    data = await read_ops(request.state.redis, settings.queue_name, now=now)
    spool = getattr(request.state, "spool", None)  # this receiver's local spool, when it has one
    figures = await asyncio.to_thread(survey, spool.directory, now) if spool is not None else None
    status = 200 if data.snapshot.redis_up else 503
    view = View(paused=request.query_params.get("refresh") == "off", csrf=csrf_token(settings, request))
    return HTMLResponse(render(data, now=now, spool=figures, view=view), status_code=status, headers=HEADERS)


def routes(settings: Settings) -> list[Route]:
    async def ops(request: Request) -> Response:
        return await endpoint(settings, request)

    return [Route(PATH, ops, methods=["GET"]), *ops_task.routes(settings), *ops_actions.routes(settings)]


# ------------------------------------------------------------------------------------------- rendering


class View:
    """How this visitor sees the page: auto-refresh paused or not, and the CSRF token of its session."""

    def __init__(self, *, paused: bool = False, csrf: str | None = None) -> None:
        self.paused = paused
        self.csrf = csrf

    def task(self, provider: str | None, task_id: str | None) -> Link:
        return task_link(provider, task_id, paused=self.paused)

    def href(self, provider: str | None, task_id: str | None) -> str:
        return task_href(provider, task_id, paused=self.paused)


def _files(raw: str) -> str:
    try:
        files = json.loads(raw or "[]")
    except ValueError:
        return "?"
    return str(len(files)) if isinstance(files, list) else "?"


def _quarantine(spool: SpoolSurvey | None, now: float) -> str:
    """The latest spool entries quarantined (``veo-archiver spool requeue`` puts them back), if any."""
    if spool is None or not spool.quarantined:
        return ""
    rows = [
        (q.name, q.reason, q.attempts, age(now - q.quarantined_at) if q.quarantined_at else "—", q.error)
        for q in spool.latest_quarantined
    ]
    listing = table("quarantine", ["entry*", "reason", "attempts", "ago", "error!"], rows, "")
    return f"<h2>Spool entries quarantined ({e(spool.quarantined)}, latest shown)</h2>{listing}"


def _charts(data: OpsData) -> str:
    rates = data.rates
    if rates is None:
        return ""
    drawn = "".join(
        chart(name, counts, rates.first_minute, complete_from=rates.complete_from.get(name, 0))
        for name, counts in rates.series.items()
    )
    return f'<h2>Last hour, per minute</h2><div class="charts">{drawn}</div>'


def refusals_section(summary: RefusalSummary, view: View) -> str:
    """Refused callbacks by provider and reason (last hour, last day) and the latest ones."""
    keys = sorted({(p, r) for source in (summary.last_hour, summary.last_day) for p, rs in source.items() for r in rs})
    counts = table(
        "refusal-counts",
        ["provider", "reason", "last hour", "last 24 h"],
        [(p, r, summary.last_hour.get(p, {}).get(r, 0), summary.last_day.get(p, {}).get(r, 0)) for p, r in keys],
        "no callback refused in the last 24 h",
    )
    recent = table(
        "refusals",
        ["at", "provider", "reason", "status", "from", "path*", "task id*"],
        [
            (shown(r.at), r.provider, r.reason, r.status, r.remote, r.path, view.task(r.provider, r.task_id))
            for r in summary.recent
        ],
        "no refusal recorded",
    )
    return (
        f"<h2>Refused callbacks ({e(summary.hour_total)} in the last hour)</h2>{counts}"
        f'<h2>Latest refusals</h2><p class="muted">A bad signature or token from a provider\'s own addresses is '
        f"usually a key or secret that does not match; from anywhere else, someone probing.</p>{recent}"
    )


def render(data: OpsData, *, now: float, spool: SpoolSurvey | None = None, view: View | None = None) -> str:
    view = view or View()
    snap = data.snapshot
    status = '<span class="ok">Redis up</span>'
    if not snap.redis_up:
        status = f'<span class="bad">Redis unreachable: {e(snap.error)}</span>'
    if data.error:
        status += f' <span class="bad">(partial read: {e(data.error)})</span>'
    cards = [
        ("queued", snap.queued),
        *snap.registries.items(),
        ("workers", len(snap.workers)),
        ("oldest queued", age(snap.oldest_queued_age_s)),
        ("tracked pending", snap.tracked_pending),
        ("refused last hour", snap.refusals.hour_total),
    ]
    if spool is not None:
        cards += [("spooled", spool.entries), ("spool quarantined", spool.quarantined)]
    card_html = "".join(
        f'<div class="card" id="card-{e(name.replace(" ", "-"))}"><b>{e(value)}</b><span>{e(name)}</span></div>'
        for name, value in cards
    )
    running = {d.job_id: d for d in snap.downloads}

    def job_link(job_id: str | None) -> Link | str | None:
        d = running.get(job_id or "")
        return Link(job_id, view.href(d.provider, d.task_id)) if d is not None else job_id

    workers = table(
        "workers",
        ["name*", "host", "pid", "state", "current job*", "last heartbeat", "born", "jobs done", "job attempts failed"],
        [
            (
                w.name,
                w.hostname,
                w.pid,
                w.state,
                job_link(w.current_job),
                when(w.last_heartbeat),
                when(w.birth),
                w.successful,
                w.failed,
            )
            for w in snap.workers
        ],
        "no live worker",
    )
    downloads = table(
        "downloads",
        ["job id*", "provider", "task id*", "file", "done", "of", "rate", "eta", "updated"],
        [
            (
                Link(d.job_id, view.href(d.provider, d.task_id)),
                d.provider,
                view.task(d.provider, d.task_id),
                f"{d.file + 1}/{d.files}",
                size_text(d.bytes),
                size_text(d.total) if d.total is not None else "unknown",
                rate_text(d.rate),
                eta_text(d.eta_s),
                when(d.updated_at),
            )
            for d in snap.downloads
        ],
        "no download under way",
    )
    outcomes = table(
        "archives",
        ["at", "outcome", "provider", "task id*", "status", "files", "bytes", "manifest*", "reason"],
        [
            (
                stream_time(o["_id"]),
                o.get("outcome"),
                o.get("provider"),
                view.task(o.get("provider"), o.get("task_id")),
                o.get("status"),
                _files(o.get("files", "")),
                size(o.get("bytes") or 0),
                Link(o.get("location") or o.get("manifest"), _anchor(view.href(o.get("provider"), o.get("task_id")))),
                o.get("reason"),
            )
            for o in data.outcomes
        ],
        "nothing finished yet",
    )
    failures = table(
        "failures",
        ["at", "provider", "task id*", "reason", "error!", "attempts", "job id*", ""],
        [
            (
                when(f.verdict.at),
                f.provider,
                view.task(f.provider, f.task_id),
                f.verdict.reason,
                f.verdict.error[:ERROR_CHARS],
                f.attempts,
                Link(f.job_id, view.href(f.provider, f.task_id)),
                action_form("retry", {"job_id": f.job_id}, view.csrf, "retry", back=PATH),
            )
            for f in data.failures
        ],
        "no dead letter",
    )
    events = table(
        "deliveries",
        ["at", "provider", "task id*", "status", "outcome", "job id*"],
        [
            (
                stream_time(v["_id"]),
                v.get("provider"),
                view.task(v.get("provider"), v.get("task_id")),
                v.get("status"),
                v.get("outcome"),
                Link(v.get("job_id"), view.href(v.get("provider"), v.get("task_id"))) if v.get("job_id") else "",
            )
            for v in data.events
        ],
        "no delivery yet",
    )
    tracked = table(
        "tracked",
        ["registered", "provider", "task id*", "waiting", ""],
        [
            (
                shown(t.registered_at),
                t.provider,
                view.task(t.provider, t.task_id),
                age(now - t.registered_at),
                action_form("sweep", {"provider": t.provider, "task_id": t.task_id}, view.csrf, "sweep now", back=PATH),
            )
            for t in data.tracked
        ],
        "no tracked task pending",
    )
    body = f"""<h1>veo-archiver ops</h1>
<div class="bar muted"><span>queue <b>{e(snap.queue)}</b> · {e(shown(now))} · {status}</span>
<span>{refresh_bar(PATH, view.paused)}</span></div>
<div class="cards">{card_html}</div>
{_charts(data)}
<h2>Workers</h2>{workers}
<h2>Downloads under way ({len(snap.downloads)})</h2>{downloads}
<h2>Recent outcomes</h2>{outcomes}
<h2>Recent dead letters</h2>{failures}
{refusals_section(snap.refusals, view)}
<h2>Recent deliveries</h2>{events}
<h2>Tracked tasks pending ({e(snap.tracked_pending)})</h2>{tracked}
{_quarantine(spool, now)}
<h2 id="actions">Operator actions</h2>{ops_actions.actions_table(data.actions)}"""
    return page("veo-archiver ops", body, paused=view.paused)


def _anchor(href: str) -> str:
    """The manifest section of a task page."""
    return href + "#manifest" if href else ""
