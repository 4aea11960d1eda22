"""``GET /ops``: a read-only, server-rendered operations page (no JavaScript, inline CSS).

Shows the queue and RQ registries, live workers, the downloads under way (bytes so far, total, rate, ETA), the
latest outcomes (``veo:outcomes``), the latest dead letters (RQ's failed registry, classified by
:mod:`veo_archiver.records.dead_letter` as the CLI and /metrics do), the latest deliveries (``veo:events``) and
the tracked tasks still pending, all read by :func:`veo_archiver.queue_view.read_ops`; this module only
renders and answers. Task ids, error messages and every other value come from callers we do not trust: each
one goes through :func:`html.escape`, and the Content-Security-Policy forbids scripts anyway.

Access needs ``ADMIN_TOKEN``; without it the page answers 404 and says so. With it: ``Authorization:
Bearer <token>``, or the ops cookie. A browser opens ``/ops?token=<token>`` once: the token is exchanged
for an HttpOnly, SameSite=Strict cookie (an expiring MAC derived from the token, never the token itself)
and the browser is redirected to ``/ops`` so the token leaves the address bar and the history. Anything
else is refused with 401.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from receiver.auth import admin_token, require_bearer, token_matches
from receiver.responses import error_headers, error_response, error_status
from receiver.spool import SpoolSurvey, survey
from veo_archiver.errors import Rejected, RequestError
from veo_archiver.queue_view import OpsData, read_ops
from veo_archiver.records.progress import eta_text, rate_text, size_text
from veo_archiver.settings import Settings

COOKIE = "veo_ops"
COOKIE_TTL_S = 12 * 3600
ERROR_CHARS = 600
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}

# ------------------------------------------------------------------------------------------- access


def _cookie_mac(token: str, expiry: int) -> str:
    mac = hmac.new(token.encode("utf-8", "replace"), f"veo-ops-cookie.v1.{expiry}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def cookie_value(token: str, now: float, ttl_s: int = COOKIE_TTL_S) -> str:
    expiry = int(now) + ttl_s
    return f"v1.{expiry}.{_cookie_mac(token, expiry)}"


def cookie_valid(value: str | None, token: str, now: float) -> bool:
    version, _, rest = (value or "").partition(".")
    expiry_text, _, mac = rest.partition(".")
    if version != "v1" or not expiry_text.isdigit() or len(expiry_text) > 12 or not mac.isascii():
        return False
    expiry = int(expiry_text)
    return hmac.compare_digest(_cookie_mac(token, expiry).encode(), mac.encode()) and now <= expiry


def _refused(request: Request, exc: RequestError) -> Response:
    """An API client gets the one JSON refusal of :mod:`receiver.responses`; a browser (``Accept: text/html``)
    a small page built from the same error: same status, headers, message and reason."""
    if "text/html" not in request.headers.get("accept", ""):
        return error_response(exc)
    body = (
        "<!doctype html><title>veo-archiver ops</title>"
        f"<p>{html.escape(exc.message)}</p><p><small>{html.escape(exc.reason)}</small></p>\n"
    )
    return HTMLResponse(body, status_code=error_status(exc), headers={**HEADERS, **error_headers(exc)})


def _admit(settings: Settings, request: Request, now: float) -> Response | None:
    """``None`` when the request may see the page, the cookie exchange's redirect, or a raised refusal."""
    token = admin_token(settings, "The ops page")
    given = request.query_params.get("token")
    if given is not None:
        if not token_matches(given, token):
            raise Rejected("Wrong token.")
        response = RedirectResponse(request.url.path, status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            cookie_value(token, now),
            max_age=COOKIE_TTL_S,
            path=request.url.path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
    if not cookie_valid(request.cookies.get(COOKIE), token, now):
        hint = "The ops page needs Authorization: Bearer <ADMIN_TOKEN>, or open /ops?token=<ADMIN_TOKEN> once."
        require_bearer(request, token, hint)
    return None


async def endpoint(settings: Settings, request: Request, *, now: float | None = None) -> Response:
    now = time.time() if now is None else now
    try:
        admitted = _admit(settings, request, now)
    except RequestError as exc:
        return _refused(request, exc)
    if admitted is not None:
        return admitted
    data = await read_ops(request.state.redis, settings.queue_name, now=now)
    spool = getattr(request.state, "spool", None)  # this receiver's local spool, when it has one
    figures = await asyncio.to_thread(survey, spool.directory, now) if spool is not None else None
    status = 200 if data.snapshot.redis_up else 503
    return HTMLResponse(render(data, now=now, spool=figures), status_code=status, headers=HEADERS)


def route(settings: Settings) -> Route:
    async def ops(request: Request) -> Response:
        return await endpoint(settings, request)

    return Route("/ops", ops, methods=["GET"])


# ------------------------------------------------------------------------------------------- rendering

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .4rem}
.muted{color:#6b7280}.bad{color:#b42318;font-weight:600}.ok{color:#067647;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin-top:1rem}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:.5rem .8rem;min-width:7rem}
.card b{display:block;font-size:1.35rem}.card span{color:#6b7280;font-size:.8rem}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e3e6ea}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef0f3;vertical-align:top}
th{background:#f0f2f5;font-weight:600;font-size:.8rem;text-transform:uppercase;color:#4b5563}
td{font-family:ui-monospace,monospace;font-size:.8rem;white-space:nowrap}
td.wide{white-space:normal;word-break:break-all}td.err{white-space:normal;color:#b42318;min-width:16rem}
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def shown(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when(text: str | None) -> str:
    """An RQ or ISO-8601 UTC time as :func:`shown` shows it; anything unreadable as it is."""
    try:
        return shown(datetime.fromisoformat((text or "").replace("Z", "+00:00")).timestamp())
    except ValueError:
        return text or ""


def stream_time(entry_id: str) -> str:
    millis = entry_id.partition("-")[0]
    return shown(int(millis) / 1000) if millis.isdigit() else entry_id


def size(n: str | int) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def table(ident: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> str:
    """Every cell is escaped here: callers pass raw values, never markup. A column named ``task id*`` is
    wide (may wrap anywhere); ``error!`` is an error message."""
    classes = ["wide" if c.endswith("*") else "err" if c.endswith("!") else "" for c in columns]
    body = []
    for row in rows:
        cells = "".join(f'<td class="{css}">{e(value)}</td>' for css, value in zip(classes, row, strict=True))
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}" class="muted">{e(empty)}</td></tr>')
    head = "".join(f"<th>{e(c.rstrip('*!'))}</th>" for c in columns)
    return f'<table id="{e(ident)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _files(raw: str) -> str:
    try:
        files = json.loads(raw or "[]")
    except ValueError:
        return "?"
    return str(len(files)) if isinstance(files, list) else "?"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _quarantine(spool: SpoolSurvey | None, now: float) -> str:
    """The latest spool entries quarantined (``veo-archiver spool requeue`` puts them back), if any."""
    if spool is None or not spool.quarantined:
        return ""
    rows = [
        (q.name, q.reason, q.attempts, _age(now - q.quarantined_at) if q.quarantined_at else "—", q.error)
        for q in spool.latest_quarantined
    ]
    listing = table("quarantine", ["entry*", "reason", "attempts", "ago", "error!"], rows, "")
    return f"<h2>Spool entries quarantined ({e(spool.quarantined)}, latest shown)</h2>{listing}"


def render(data: OpsData, *, now: float, spool: SpoolSurvey | None = None) -> str:
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
        ("oldest waiting", _age(snap.oldest_queued_age_s)),
        ("tracked pending", snap.tracked_pending),
    ]
    if spool is not None:
        cards += [("spooled", spool.entries), ("spool quarantined", spool.quarantined)]
    card_html = "".join(
        f'<div class="card" id="card-{e(name.replace(" ", "-"))}"><b>{e(value)}</b><span>{e(name)}</span></div>'
        for name, value in cards
    )
    workers = table(
        "workers",
        ["name*", "host", "pid", "state", "current job*", "last heartbeat", "born", "ok", "failed"],
        [
            (
                w.name,
                w.hostname,
                w.pid,
                w.state,
                w.current_job,
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
                d.job_id,
                d.provider,
                d.task_id,
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
                o.get("task_id"),
                o.get("status"),
                _files(o.get("files", "")),
                size(o.get("bytes") or 0),
                o.get("location") or o.get("manifest"),
                o.get("reason"),
            )
            for o in data.outcomes
        ],
        "nothing finished yet",
    )
    failures = table(
        "failures",
        ["at", "provider", "task id*", "reason", "error!", "attempts", "job id*"],
        [
            (
                when(f.verdict.at),
                f.provider,
                f.task_id,
                f.verdict.reason,
                f.verdict.error[:ERROR_CHARS],
                f.attempts,
                f.job_id,
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
                v.get("task_id"),
                v.get("status"),
                v.get("outcome"),
                v.get("job_id"),
            )
            for v in data.events
        ],
        "no delivery yet",
    )
    tracked = table(
        "tracked",
        ["registered", "provider", "task id*", "waiting"],
        [(shown(t.registered_at), t.provider, t.task_id, _age(now - t.registered_at)) for t in data.tracked],
        "no tracked task pending",
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">
<title>veo-archiver ops</title><style>{CSS}</style></head>
<body>
<h1>veo-archiver ops</h1>
<div class="muted">queue <b>{e(snap.queue)}</b> · {e(shown(now))} · {status}</div>
<div class="cards">{card_html}</div>
<h2>Workers</h2>{workers}
<h2>Downloads under way ({len(snap.downloads)})</h2>{downloads}
<h2>Recent outcomes</h2>{outcomes}
<h2>Recent dead letters</h2>{failures}
<h2>Recent deliveries</h2>{events}
<h2>Tracked tasks pending ({e(snap.tracked_pending)})</h2>{tracked}
{_quarantine(spool, now)}
</body></html>
"""
