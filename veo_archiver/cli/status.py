"""``veo-archiver status``: queue, workers, downloads, dead letters, retries, tracked tasks, the local spool,
and what is stuck. Exit codes (:mod:`veo_archiver.cli.arguments`): 0 done, 2 Redis unreachable (the local spool
is still shown, and the message says where the command looked)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import redis

from receiver.spool import SpoolSurvey, survey
from veo_archiver import clock, queue_view
from veo_archiver.cli import arguments, local_env
from veo_archiver.cli.output import age, clip, connect_redis, print_json, settings, table, when
from veo_archiver.errors import ConfigError
from veo_archiver.records import progress
from veo_archiver.settings import Settings

#: a spooled callback this old while Redis answers means this host's receiver is not draining its spool
SPOOL_STUCK_S = 60


def local_spool(settings: Settings, now: float) -> SpoolSurvey | None:
    """The receiver's spool in this working directory (SPOOL_DIR), when there is one: the CLI runs on the
    receiver's host in the simple deployment (`up`, compose's `docker compose exec receiver`)."""
    if settings.spool_dir is None or not settings.spool_dir.is_dir():
        return None
    return survey(settings.spool_dir, now)


def spool_problems(spool: SpoolSurvey | None) -> list[str]:
    if spool is None:
        return []
    out = []
    if spool.entries and (spool.oldest_age_s or 0) > SPOOL_STUCK_S:
        out.append(
            f"{spool.entries} callback(s) in the local spool {spool.directory} for more than {age(SPOOL_STUCK_S)} "
            "while Redis answers: is the receiver on this host running?"
        )
    if spool.rejected:
        entries = "entry" if spool.rejected == 1 else "entries"
        where = f"{spool.directory}/rejected"
        out.append(f"{spool.rejected} spool {entries} unreadable, set aside in {where}: see the receiver log")
    if spool.quarantined:
        entries = "entry" if spool.quarantined == 1 else "entries"
        why = "; ".join(f"{q.name}: {q.reason} ({q.error[:120]})" for q in spool.latest_quarantined[:3])
        out.append(
            f"{spool.quarantined} spool {entries} quarantined in {spool.directory}/quarantine (latest: {why}); "
            "`veo-archiver spool requeue --all` puts them back once the cause is fixed"
        )
    return out


def spool_line(spool: SpoolSurvey) -> str:
    line = f"local spool {spool.directory}: "
    if spool.entries:
        line += f"{spool.entries} callback(s) waiting ({spool.bytes} bytes), oldest {age(spool.oldest_age_s)} old"
    else:
        line += "empty"
    line += f", {spool.rejected} rejected (unreadable) in rejected/" if spool.rejected else ""
    return line + (f", {spool.quarantined} quarantined in quarantine/" if spool.quarantined else "")


def cmd_status(args: argparse.Namespace) -> int:
    cfg = settings()
    now = time.time()
    spool = local_spool(cfg, now)
    try:
        report = queue_view.status(connect_redis(cfg), cfg.queue_name, tracked_overdue_s=cfg.reconcile_after_s, now=now)
    except (redis.RedisError, ConfigError) as exc:  # unreachable: an outage is when the spool matters most
        error = exc.message if isinstance(exc, ConfigError) else local_env.unreachable(cfg.redis_url, str(exc))
        if args.json:
            print_json({"redis": "unreachable", "error": error, "spool": spool and spool.to_json()})
        else:
            print(error)
            print(spool_line(spool) if spool else "no local spool here")
        return arguments.CANNOT_RUN
    report = replace(report, problems=report.problems + spool_problems(spool))
    if args.json:
        print_json(
            {
                **report.to_json(),
                "spool": spool and spool.to_json(),
                "stuck": report.stuck,
                "generated_at": clock.iso(now),
            }
        )
        return 0
    for line in render_status(report, now, spool):
        print(line)
    return 0


def render_status(s: queue_view.Status, now: float, spool: SpoolSurvey | None = None) -> list[str]:
    head = s.oldest_waiting
    nxt = s.next_scheduled[0] if s.next_scheduled else None
    counts = [
        ("queued", s.queued, f"oldest since {when(head.enqueued_at, now)}: {head.job_id}" if head else ""),
        ("started", s.started, f"{s.started_expired} with no worker heartbeat" if s.started_expired else ""),
        ("scheduled", s.scheduled, f"next retry {when(nxt.run_at, now)}" if nxt else ""),
        ("failed", s.failed, "dead letters, see below" if s.failed else ""),
        ("deferred", s.deferred, ""),
        ("finished", s.finished, "kept for the result TTL"),
    ]
    out = [f"queue {s.queue}"]
    out += table(("", "", ""), [(name, n, note) for name, n, note in counts])[1:]
    out.append(f"workers: {len(s.workers)} alive")
    if s.workers:
        out += table(
            ("NAME", "STATE", "CURRENT JOB", "LAST HEARTBEAT"),
            [(w.name, w.state, w.current_job, f"{age(w.heartbeat_age_s)} ago") for w in s.workers],
        )
    if s.downloads:
        out.append(f"downloads: {len(s.downloads)} running")
        out += table(("JOB", "TASK", "FILE", "PROGRESS", "UPDATED"), [_download_row(d, now) for d in s.downloads])
    total = sum(s.dead_letters.values())
    out.append(f"dead letters: {total}")
    if total:
        out += table(("REASON", "JOBS"), list(s.dead_letters.items()))
    if s.next_scheduled:
        out.append("scheduled retries (soonest first):")
        out += table(
            ("JOB", "TASK", "RUNS", "ATTEMPTS", "LAST ERROR"),
            [
                (
                    r.job_id,
                    f"{r.provider}/{r.task_id}",
                    when(r.run_at, now),
                    r.attempts,
                    clip(f"{r.last_reason}: {r.last_error}" if r.last_reason else "", 60),
                )
                for r in s.next_scheduled
            ],
        )
    tracked = f"tracked tasks: {s.tracked} not finished"
    if s.oldest_tracked:
        t = s.oldest_tracked
        tracked += f", oldest {t.provider}/{t.task_id} since {when(t.since, now)}"
    out.append(tracked)
    out.append("last hour: " + "  ".join(f"{k} {v}" for k, v in s.events_last_hour.items()))
    reasons = " ".join(f"{reason} {n}" for reason, n in s.refusals.hour_by_reason().items())
    out.append(f"refused in the last hour: {s.refusals.hour_total}" + (f" ({reasons})" if reasons else ""))
    if spool is not None:
        out.append(spool_line(spool))
    out.append("")
    if s.problems:
        out.append("stuck:")
        out += [f"  ! {problem}" for problem in s.problems]
    else:
        out.append("nothing stuck")
    return out


def _download_row(d: progress.Progress, now: float) -> tuple[object, ...]:
    return (d.job_id, f"{d.provider}/{d.task_id}", f"{d.file + 1}/{d.files}", d.describe(), when(d.updated_at, now))
