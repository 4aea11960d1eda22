"""``veo-archiver status | failed | retry | replay | show``: what is stuck, why, and fixing it, from a shell.

This module only parses arguments and prints: the queries are :mod:`veo_archiver.queue_view` (read-only), the
writes :mod:`veo_archiver.cli.admin`. Every command takes ``--json`` for scripts except ``retry``'s progress line,
which goes to stderr. Exit codes (:mod:`veo_archiver.cli.arguments`): 0 done (``failed`` with none to list too),
1 not found / nothing matched / skipped, 2 could not run (configuration, Redis unreachable).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from typing import Any

from veo_archiver import queue_view, requeue
from veo_archiver.cli import admin, arguments, lineage, output, story
from veo_archiver.cli.arguments import PROVIDERS_TEXT, provider
from veo_archiver.cli.output import age, clip, connect_redis, print_json, table, when
from veo_archiver.cli.status import cmd_status
from veo_archiver.clock import iso
from veo_archiver.errors import ConfigError, NothingToDo, RequestError
from veo_archiver.queue_view import TaskJob

#: ``retry`` shows a progress counter on stderr from this many jobs on
PROGRESS_FROM = 10


def register(sub: Any) -> None:
    """Add the operator subcommands to ``veo-archiver``'s subparsers."""
    status = sub.add_parser("status", help="what is queued, running, retrying, dead and stuck")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(func=cmd_status)

    failed = sub.add_parser("failed", help="list dead letters (jobs in the failed registry) and why")
    failed.add_argument("--reason", help="only this reason (http_404, not_a_video, abandoned, crashed…)")
    failed.add_argument("--provider", type=provider, help=f"only this provider ({PROVIDERS_TEXT})")
    failed.add_argument("--limit", type=int, default=50, help="at most N, newest first (default 50; 0 = all)")
    failed.add_argument("--json", action="store_true", help="a JSON list, for scripts")
    failed.set_defaults(func=cmd_failed)

    retry = sub.add_parser("retry", help="requeue dead letters with a fresh retry budget")
    retry.add_argument("job_ids", nargs="*", metavar="JOB_ID", help="dead letters to requeue")
    retry.add_argument("--reason", help="every dead letter with this reason")
    retry.add_argument("--provider", type=provider, help=f"every dead letter of this provider ({PROVIDERS_TEXT})")
    retry.add_argument("--all", action="store_true", help="every dead letter")
    retry.add_argument("--dry-run", action="store_true", help="say what would be requeued, change nothing")
    retry.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    retry.set_defaults(func=cmd_retry)

    replay = sub.add_parser("replay", help="re-run a stored callback as a new job (operators only)")
    replay.add_argument("provider", type=provider, help=PROVIDERS_TEXT)
    replay.add_argument("task_id", help="the provider's task id")
    replay.add_argument(
        "--delivery",
        type=int,
        metavar="N",
        help="delivery number as `show` prints it (default: the newest terminal one)",
    )
    replay.add_argument("--dry-run", action="store_true", help="print the parsed event, enqueue nothing")
    replay.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    replay.set_defaults(func=cmd_replay)

    show = sub.add_parser("show", help="the whole story of one task: deliveries, jobs, archive")
    show.add_argument("provider", type=provider, help=PROVIDERS_TEXT)
    show.add_argument("task_id", help="the provider's task id")
    show.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    show.set_defaults(func=cmd_show)


# --------------------------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------------------------- failed


def cmd_failed(args: argparse.Namespace) -> int:
    settings = output.settings()
    now = time.time()
    letters = queue_view.dead_letters(
        connect_redis(settings),
        settings.queue_name,
        reason=args.reason,
        provider=args.provider,
        limit=args.limit or None,
    )
    if args.json:
        print_json([letter.to_json() for letter in letters])
        return 0
    if not letters:
        print("no dead letters" + (" match" if args.reason or args.provider else ""))
        return 0
    rows = [
        (d.job_id, d.provider, d.task_id, d.reason, when(d.at, now), len(d.attempts), clip(d.error)) for d in letters
    ]
    for line in table(("JOB", "PROVIDER", "TASK", "REASON", "WHEN", "ATTEMPTS", "ERROR"), rows, indent=""):
        print(line)
    print(f"\n{len(letters)} dead letter(s); requeue with `veo-archiver retry JOB_ID` or `retry --reason R`")
    return 0


# --------------------------------------------------------------------------------------------- retry


def cmd_retry(args: argparse.Namespace) -> int:
    if args.job_ids and (args.reason or args.provider or args.all):
        raise ConfigError("retry: give job ids, or --reason/--provider/--all, not both")
    if not (args.job_ids or args.reason or args.provider or args.all):
        raise ConfigError("retry: name job ids, or choose with --reason R, --provider P or --all")
    settings = output.settings()
    connection = connect_redis(settings)
    letters, skipped = requeue.select(
        connection, settings.queue_name, job_ids=args.job_ids, reason=args.reason, provider=args.provider
    )

    def progress(done: int, total: int) -> None:
        if total >= PROGRESS_FROM:
            end = "\n" if done == total else ""
            print(f"\r{'checked' if args.dry_run else 'requeued'} {done}/{total}", end=end, file=sys.stderr, flush=True)

    report = requeue.retry(
        connection,
        settings.queue_name,
        letters,
        dry_run=args.dry_run,
        progress=progress,
        default_retries=len(settings.retry_intervals_s),
    )
    report.skipped[:0] = skipped
    if args.json:
        print_json(report.to_json())
    else:
        verb = "would requeue" if args.dry_run else "requeued"
        for d in report.requeued:
            print(f"{verb} {d.job_id}  {d.provider}/{d.task_id}  ({d.reason})")
        for job_id, why in report.skipped:
            print(f"skipped {job_id}: {why}")
        if not report.requeued and not report.skipped:
            print("no dead letter matches: nothing to requeue")  # exit 1: nothing done
        else:
            print(
                f"{verb} {len(report.requeued)} job(s) on {settings.queue_name}"
                + (f", skipped {len(report.skipped)}" if report.skipped else "")
            )
    return arguments.FOUND_PROBLEM if report.skipped or not report.requeued else arguments.OK


# --------------------------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    settings = output.settings()
    connection = connect_redis(settings)
    try:
        plan = admin.plan_replay(connection, args.provider, args.task_id, args.delivery)
    except NothingToDo as exc:
        print(f"veo-archiver: {exc.message}", file=sys.stderr)
        return 1
    except RequestError as exc:
        print(f"veo-archiver: the stored callback no longer parses: {exc.message}", file=sys.stderr)
        return 1
    if args.dry_run:
        if args.json:
            print_json({**plan.to_json(), "dry_run": True, "queue": settings.queue_name})
            return 0
        print(
            f"delivery #{plan.number} of {plan.provider}/{plan.task_id}: received "
            f"{plan.record.get('callback', {}).get('received_at')}, outcome {plan.record.get('outcome')}"
        )
        print("parsed event (verification operator):")
        print(json.dumps(plan.event.to_json(), indent=2, sort_keys=True))
        print(f"dry run: would enqueue a new job {plan.job_id_pattern} on {settings.queue_name}; nothing changed")
        return 0
    result = admin.replay(settings, plan)
    if args.json:
        print_json(
            {
                **plan.to_json(),
                "dry_run": False,
                "queue": settings.queue_name,
                "outcome": result.outcome,
                "job_id": result.job_id,
                "delivery_id": result.delivery_id,
            }
        )
        return 0
    print(f"replayed delivery #{plan.number} of {plan.provider}/{plan.task_id} ({plan.event.status.value})")
    print(
        f"enqueued job {result.job_id} on {settings.queue_name}; follow it with "
        f"`veo-archiver show {plan.provider} {plan.task_id}`"
    )
    return 0


# --------------------------------------------------------------------------------------------- show


def cmd_show(args: argparse.Namespace) -> int:
    from workers.storage import open_archive

    settings = output.settings()
    connection = connect_redis(settings)
    archive = open_archive(settings.storage)  # one client for the story and the lineage
    told = story.task_story(connection, settings.queue_name, args.provider, args.task_id, archive)
    known = told.deliveries or told.jobs or told.manifest or told.tracked_since or told.refusals
    links = lineage.chain(connection, archive, args.provider, args.task_id)  # resolved now: late parents link
    if args.json:
        print_json({**told.to_json(), "lineage": links})
    else:
        for line in render_story(told, time.time()) + lineage.render(links, archive):
            print(line)
    return 0 if known else 1


#: a dead letter's error in `show`: wrapped over lines, cut (at a word) only past this many characters
DEAD_LETTER_WIDTH = 600

#: what a job's RQ state means for the task it archives, in `show`'s words
_JOB_WORDS = {
    "queued": "queued",
    "started": "running",
    "scheduled": "waiting to retry",
    "deferred": "deferred",
    "failed": "archive job failed",
    "stopped": "archive job stopped",
    "canceled": "archive job canceled",
    "gone": "job record expired",
}


def job_line(j: TaskJob) -> str:
    """One honest line: what happened to the archive job, then what the provider said of the task (a job that
    failed to archive a task that succeeded reads ``archive job failed; provider status: succeeded``)."""
    if j.state == "finished":
        words = "failure recorded" if j.status == "failed" else "archived"
    else:
        words = _JOB_WORDS.get(j.state, j.state)
    if j.replay:
        words += " (replay)"
    return f"{words}; provider status: {j.status}" if j.status else words


def refusal_lines(t: story.TaskStory) -> list[str]:
    """Refused deliveries that named the task (only shown when there are some)."""
    if not t.refusals:
        return []
    out = [f"refused deliveries: {len(t.refusals)} (newest first)"]
    out += table(
        ("AT", "REASON", "STATUS", "REMOTE", "PATH"),
        [(iso(r.at), r.reason, r.status, r.remote, r.path) for r in t.refusals],
    )
    if any(r.reason.startswith(("signature_", "timestamp_")) for r in t.refusals):
        out.append(
            "  a callback naming this task failed its signature check (anyone can name a task: see REMOTE); if "
            "kie.ai sent it, check KIE_WEBHOOK_HMAC_KEYS (kie.ai's key) and this host's clock; with KIE_API_KEY "
            f"set, `veo-archiver track {t.provider} {t.task_id}` has the sweep fetch the task from kie.ai's status API"
        )
    return out


def render_story(t: story.TaskStory, now: float) -> list[str]:
    out = [f"{t.provider}/{t.task_id}"]
    out.append(f"  tracked: {'since ' + when(t.tracked_since, now) if t.tracked_since else 'no'}")
    out.append(f"deliveries: {len(t.deliveries)}")
    if t.deliveries:
        out += table(
            ("#", "RECEIVED", "REMOTE", "STATUS", "VERIFICATION", "OUTCOME", "JOB"),
            [
                (
                    d.number,
                    d.received_at,
                    d.remote,
                    d.status,
                    d.verification,
                    d.outcome + (f" at {d.replayed_at}" if d.replayed_at else "") if d.outcome else None,
                    d.job_id,
                )
                for d in t.deliveries
            ],
        )
    out += refusal_lines(t)
    out.append(f"jobs: {len(t.jobs)}")
    for j in t.jobs:
        out.append(f"  {j.job_id}  {job_line(j)}")
        for name, stamp in (("enqueued", j.enqueued_at), ("started", j.started_at), ("ended", j.ended_at)):
            if stamp:
                out.append(f"      {name:<9}{when(stamp, now)}")
        if j.result:
            out.append(f"      result   {j.result.get('outcome')}")
        if j.progress:
            p = j.progress
            out.append(f"      download {p.file + 1}/{p.files}: {p.describe()} (updated {when(p.updated_at, now)})")
        for n, a in enumerate(j.attempts, start=1):
            retry = f", retry in {age(a.get('retry_in_s'))}" if a.get("retry_in_s") is not None else ""
            out.append(f"      attempt {n} failed {a.get('at')}: {a.get('reason')}: {clip(a.get('error'))}{retry}")
        if j.next_run_at:
            out.append(f"      next run {when(j.next_run_at, now)}")
        if j.dead_letter:
            d = j.dead_letter
            out.append(f"      DEAD LETTER {d.get('reason')} at {d.get('at')}:")
            out += textwrap.wrap(
                clip(d.get("error"), DEAD_LETTER_WIDTH), width=100, initial_indent=" " * 8, subsequent_indent=" " * 8
            )
            out.append(f"      requeue with `veo-archiver retry {j.job_id}`")
        elif j.error and j.state != "finished":
            out.append(f"      error    {clip(j.error)}")
    if t.archive_error:
        out.append(f"archive: cannot read {t.manifest_key}: {t.archive_error}")
    elif t.manifest is None:
        out.append(f"archive: no manifest at {t.archive_location or t.manifest_key}")
    else:
        m = t.manifest
        out.append(f"archive: {t.archive_location}")
        out.append(
            f"  status {m.get('status')}, archived {m.get('archived_at')}, verification "
            f"{m.get('verification')}, job {m.get('job_id')}"
        )
        if m.get("failure"):
            out.append(f"  failure recorded: {json.dumps(m['failure'])}")
        if t.files:
            out += table(
                ("KEY", "SIZE", "SHA256", "IN ARCHIVE"),
                [
                    (
                        f.key,
                        f.size,
                        f.sha256,
                        "yes"
                        if f.stored_size == f.size
                        else "MISSING"
                        if f.stored_size is None
                        else f"size {f.stored_size}",
                    )
                    for f in t.files
                ],
            )
    return out
