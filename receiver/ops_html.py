"""The ops pages' HTML: one stylesheet, one page frame, tables, links, action forms and small charts.

Every value that reaches the page comes from callers we do not trust (task ids, error messages, provider
names read back from Redis): :func:`table` escapes every cell, and the only markup a cell may carry is a
:class:`Link` or a :class:`Markup` built here from escaped parts. No script: the page refreshes itself with
``<meta http-equiv="refresh">`` (paused with ``?refresh=off``, a link on every page), the charts are inline
SVG, and the Content-Security-Policy (:data:`receiver.ops_session.HEADERS`) forbids scripts anyway.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

REFRESH_S = 5
PAUSE_PARAM = "refresh"
TASKS_PREFIX = "/ops/tasks/"

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .4rem}
a{color:#1d4ed8;text-decoration:none}a:hover{text-decoration:underline}
.muted{color:#6b7280}.bad{color:#b42318;font-weight:600}.ok{color:#067647;font-weight:600}
.bar{display:flex;gap:1rem;align-items:baseline;flex-wrap:wrap}
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin-top:1rem}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:.5rem .8rem;min-width:7rem}
.card b{display:block;font-size:1.35rem}.card span{color:#6b7280;font-size:.8rem}
.charts{display:flex;flex-wrap:wrap;gap:.6rem}
.chart{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:.4rem .6rem}
.chart div{font-size:.8rem;color:#4b5563}.chart b{color:#1d2330}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e3e6ea}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef0f3;vertical-align:top}
th{background:#f0f2f5;font-weight:600;font-size:.8rem;text-transform:uppercase;color:#4b5563}
td{font-family:ui-monospace,monospace;font-size:.8rem;white-space:nowrap}
td.wide{white-space:normal;word-break:break-all;min-width:14rem}td.err{white-space:normal;color:#b42318;min-width:12rem}
form.act{display:inline;margin:0}
button{font:inherit;font-size:.8rem;padding:.1rem .5rem;border:1px solid #c7cdd6;border-radius:4px;
background:#fff;cursor:pointer}button:hover{background:#eef2ff}
pre{background:#fff;border:1px solid #e3e6ea;padding:.6rem;overflow:auto;font-size:.78rem;max-height:32rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:0}dt{color:#6b7280}
dd{margin:0;font-family:ui-monospace,monospace;font-size:.85rem;word-break:break-all}
"""


class Markup(str):
    """Markup built in this module from escaped parts; :func:`table` writes it as it is."""


@dataclass(frozen=True)
class Link:
    text: Any
    href: str


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


def size(n: str | int | None) -> str:
    try:
        value = float(n or 0)
    except ValueError:
        return str(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _inner(value: Any) -> str:
    if isinstance(value, Link):
        return f'<a href="{e(value.href)}">{e(value.text)}</a>' if value.href else e(value.text)
    if isinstance(value, Markup):
        return str(value)
    return e(value)


def table(ident: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> str:
    """Every cell is escaped here: callers pass raw values, :class:`Link` or :class:`Markup`. A column named
    ``task id*`` is wide (may wrap anywhere); ``error!`` is an error message."""
    classes = ["wide" if c.endswith("*") else "err" if c.endswith("!") else "" for c in columns]
    body = [
        "<tr>" + "".join(f'<td class="{css}">{_inner(v)}</td>' for css, v in zip(classes, row, strict=True)) + "</tr>"
        for row in rows
    ]
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}" class="muted">{e(empty)}</td></tr>')
    head = "".join(f"<th>{e(c.rstrip('*!'))}</th>" for c in columns)
    return f'<table id="{e(ident)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def definitions(ident: str, pairs: Iterable[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{e(k)}</dt><dd>{_inner(v)}</dd>" for k, v in pairs)
    return f'<dl id="{e(ident)}">{items}</dl>'


# ------------------------------------------------------------------------------------------- addresses


def with_pause(href: str, paused: bool) -> str:
    if not paused:
        return href
    return href + ("&" if "?" in href else "?") + urlencode({PAUSE_PARAM: "off"})


def task_href(provider: str | None, task_id: str | None, *, paused: bool = False) -> str:
    """``/ops/tasks/{provider}/{task_id}``, every character of both quoted (``/`` too); a task id that a
    browser would read as a dot segment (``.``, ``..``) or an empty one goes in the query instead."""
    if not provider or task_id is None:
        return ""
    base = TASKS_PREFIX + quote(provider, safe="")
    if task_id in ("", ".", "..") or "/" in provider:
        return with_pause(base + "?" + urlencode({"id": task_id}), paused)
    return with_pause(f"{base}/{quote(task_id, safe='')}", paused)


def task_link(provider: str | None, task_id: str | None, *, paused: bool = False) -> Link:
    return Link(task_id, task_href(provider, task_id, paused=paused))


def refresh_bar(path: str, paused: bool) -> str:
    """The auto-refresh state, and the link that toggles it (the page's address with or without the pause)."""
    if paused:
        return f'<span class="muted">auto-refresh paused</span> <a id="refresh-toggle" href="{e(path)}">resume</a>'
    paused_href = with_pause(path, True)
    return (
        f'<span class="muted">refreshes every {REFRESH_S} s</span> '
        f'<a id="refresh-toggle" href="{e(paused_href)}">pause</a>'
    )


def page(title: str, body: str, *, paused: bool) -> str:
    refresh = "" if paused else f'<meta http-equiv="refresh" content="{REFRESH_S}">'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">
{refresh}<title>{e(title)}</title><style>{CSS}</style></head>
<body>
{body}
</body></html>
"""


def action_form(action: str, fields: Mapping[str, str], csrf: str | None, label: str, *, back: str) -> Markup:
    """A POST button for one action; nothing without a CSRF token (a bearer client: read-only)."""
    if csrf is None:
        return Markup("")
    hidden = "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in {**fields, "back": back, "csrf": csrf}.items()
    )
    return Markup(
        f'<form class="act" method="post" action="/ops/actions/{e(action)}">{hidden}'
        f'<button type="submit">{e(label)}</button></form>'
    )


# ------------------------------------------------------------------------------------------- charts

CHART_W, CHART_H = 240, 44
COLOURS = {"accepted": "#2563eb", "archived": "#059669", "dead letters": "#dc2626", "refused": "#d97706"}


def chart(name: str, counts: Sequence[int], first_minute: int, *, complete_from: int = 0) -> str:
    """One series per minute over the last hour as inline SVG bars; minutes before ``complete_from`` were not
    all counted (the scan's bound) and are drawn grey."""
    peak = max(counts, default=0)
    slot = CHART_W / max(len(counts), 1)
    bars = []
    for i, n in enumerate(counts):
        if not n:
            continue
        height = max(1.0, (CHART_H - 2) * n / peak)
        stamp = datetime.fromtimestamp((first_minute + i) * 60, UTC).strftime("%H:%M")
        colour = COLOURS.get(name, "#4b5563") if i >= complete_from else "#9ca3af"
        bars.append(
            f'<rect x="{i * slot:.1f}" y="{CHART_H - height:.1f}" width="{max(slot - 1, 1):.1f}" '
            f'height="{height:.1f}" fill="{colour}"><title>{stamp} UTC: {n}</title></rect>'
        )
    note = " (older minutes partly counted)" if complete_from else ""
    return (
        f'<div class="chart" id="chart-{e(name.replace(" ", "-"))}"><div>{e(name)}: <b>{sum(counts)}</b> '
        f"in the last hour, peak {peak}/min{e(note)}</div>"
        f'<svg width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" role="img" '
        f'aria-label="{e(name)} per minute"><line x1="0" y1="{CHART_H - 0.5}" x2="{CHART_W}" '
        f'y2="{CHART_H - 0.5}" stroke="#e3e6ea"/>{"".join(bars)}</svg></div>'
    )
