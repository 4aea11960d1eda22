"""``GET /ops``: a read-only, server-rendered operations page (no JavaScript, inline CSS).

Shows the queue and RQ registries, live workers, the latest outcomes (``veo:outcomes``), the latest dead
letters (RQ's failed registry with ``meta.dead_letter``), the latest deliveries (``veo:events``) and the
tracked tasks still pending. Task ids, error messages and every other value come from callers we do not
trust: each one goes through :func:`html.escape`, and the Content-Security-Policy forbids scripts anyway.

Access needs ``ADMIN_TOKEN``; without it the page answers 404 and says so. With it: ``Authorization:
Bearer <token>``, or the ops cookie. A browser opens ``/ops?token=<token>`` once: the token is exchanged
for an HttpOnly, SameSite=Strict cookie (an expiring MAC derived from the token, never the token itself)
and the browser is redirected to ``/ops`` so the token leaves the address bar and the history. Anything
else is refused with 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from receiver.metrics import Snapshot, as_text, bearer_matches, job_meta, read_snapshot, registry_key
from veo_archiver import redis_keys
from veo_archiver.settings import Settings

COOKIE = "veo_ops"
COOKIE_TTL_S = 12 * 3600
RECENT = 50
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


def _refused(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = f"<!doctype html><title>veo-archiver ops</title><p>{html.escape(message)}</p>\n"
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})


async def endpoint(settings: Settings, request: Request, *, now: float | None = None) -> Response:
    now = time.time() if now is None else now
    token = settings.admin_token
    if not token:
        return _refused(404, "The ops page is disabled: set ADMIN_TOKEN to enable it.")
    given = request.query_params.get("token")
    if given is not None:
        if not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8", "replace")):
            return _refused(401, "Wrong token.")
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
    if not (
        bearer_matches(request.headers.get("authorization"), token)
        or cookie_valid(request.cookies.get(COOKIE), token, now)
    ):
        return _refused(
            401,
            "The ops page needs Authorization: Bearer <ADMIN_TOKEN>, or open /ops?token=<ADMIN_TOKEN> once.",
            {"WWW-Authenticate": 'Bearer realm="veo-archiver"'},
        )
    data = await read_ops(request.state.redis, settings.queue_name, now=now)
    return HTMLResponse(render(data, now=now), status_code=200 if data.snapshot.redis_up else 503, headers=HEADERS)


def route(settings: Settings) -> Route:
    async def ops(request: Request) -> Response:
        return await endpoint(settings, request)

    return Route("/ops", ops, methods=["GET"])


# ------------------------------------------------------------------------------------------- data


@dataclass
class OpsData:
    snapshot: Snapshot
    outcomes: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    tracked: list[tuple[str, str, float]] = field(default_factory=list)
    error: str | None = None


def _entries(raw: Any) -> list[dict[str, str]]:
    out = []
    for entry_id, values in raw or []:
        row = {as_text(k) or "": as_text(v) or "" for k, v in values.items()}
        row["_id"] = as_text(entry_id) or ""
        out.append(row)
    return out


async def read_ops(client: aioredis.Redis, queue: str, *, now: float, recent: int = RECENT) -> OpsData:
    data = OpsData(snapshot=await read_snapshot(client, queue, now=now))
    if not data.snapshot.redis_up:
        return data
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xrevrange(redis_keys.outcomes_stream(), count=recent)
            pipe.xrevrange(redis_keys.events_stream(), count=recent)
            pipe.zrevrange(registry_key("failed", queue), 0, recent - 1)
            pipe.zrange(redis_keys.tracked_zset(), 0, recent - 1, withscores=True)
            outcomes, events, failed, tracked = await pipe.execute()
        failed_ids = [as_text(j) or "" for j in failed or []]
        async with client.pipeline(transaction=False) as pipe:
            for job_id in failed_ids:
                pipe.hmget(redis_keys.rq_job_key(job_id), ["meta", "description", "ended_at"])
            jobs = await pipe.execute()
    except (redis.RedisError, OSError) as exc:
        data.error = f"{type(exc).__name__}: {exc}"
        return data
    data.outcomes, data.events = _entries(outcomes), _entries(events)
    for job_id, (meta_raw, description, ended_at) in zip(failed_ids, jobs, strict=True):
        meta = job_meta(meta_raw)
        letter = meta.get("dead_letter")
        letter = letter if isinstance(letter, dict) else {}
        attempts = meta.get("attempts")
        attempts = attempts if isinstance(attempts, list) else []
        last = attempts[-1] if attempts and isinstance(attempts[-1], dict) else {}
        data.failures.append(
            {
                "job_id": job_id,
                "provider": meta.get("provider", ""),
                "task_id": meta.get("task_id", ""),
                "reason": letter.get("reason") or "unclassified (crash, abandoned job or bug)",
                "error": letter.get("error") or last.get("error") or as_text(description) or "",
                "at": letter.get("at") or as_text(ended_at) or "",
                "attempts": len(attempts),
            }
        )
    for member, score in tracked or []:
        try:
            provider, task_id = json.loads(member)
        except (ValueError, TypeError):
            provider, task_id = "?", as_text(member) or ""
        data.tracked.append((str(provider), str(task_id), float(score)))
    return data


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


def render(data: OpsData, *, now: float) -> str:
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
                when(f["at"]),
                f["provider"],
                f["task_id"],
                f["reason"],
                str(f["error"])[:ERROR_CHARS],
                f["attempts"],
                f["job_id"],
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
        [(shown(score), provider, task_id, _age(now - score)) for provider, task_id, score in data.tracked],
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
<h2>Recent outcomes</h2>{outcomes}
<h2>Recent dead letters</h2>{failures}
<h2>Recent deliveries</h2>{events}
<h2>Tracked tasks pending ({e(snap.tracked_pending)})</h2>{tracked}
</body></html>
"""
