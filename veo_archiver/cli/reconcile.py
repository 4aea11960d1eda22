"""Operator commands for missing callbacks and downstream notifications.

- ``veo-archiver track PROVIDER TASK_ID...``: register tasks to watch (the CLI twin of ``POST /tasks``);
- ``veo-archiver tracked``: what is tracked, the last sweep, and recently dropped tasks;
- ``veo-archiver sweep [--once]``: poll tracked tasks whose callback never came (workers do it on their own
  every ``RECONCILE_INTERVAL``; ``--once`` runs one sweep now and prints its summary);
- ``veo-archiver notify``: POST every outcome to ``NOTIFY_URLS`` (SIGTERM stops it cleanly).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import time
from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.cli import local_env, output
from veo_archiver.clock import iso
from veo_archiver.providers import NAMES as PROVIDERS
from veo_archiver.records import tracked
from veo_archiver.redis_client import connect, wait_until_up
from veo_archiver.settings import Settings

log = logging.getLogger("veo_archiver")


def _settings() -> Settings:
    return local_env.settings()  # the environment, completed by a live `up` in this folder


def _connect(settings: Settings) -> redis.Redis:
    return output.connect_redis(settings)  # an unreachable Redis says where it looked


def _connect_waiting(settings: Settings, stop: _StopFlag, why: str) -> redis.Redis | None:
    """For a long-running command: wait for Redis at start as the worker does (``REDIS_START_TIMEOUT`` bounds
    the wait, 0 = no bound); None when stopped meanwhile."""
    connection = connect(settings.redis_url, check=False)
    up = wait_until_up(
        connection,
        settings.redis_url,
        why=why,
        timeout_s=settings.redis_start_timeout_s,
        stopped=stop,
        sleep=stop.sleep,
    )
    return connection if up else None


class _StopFlag:
    """SIGTERM/SIGINT set the flag; loops check it between steps."""

    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopped and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


# --------------------------------------------------------------------------------------------- track


def cmd_track(args: argparse.Namespace) -> int:
    settings = _settings()
    tracked.check_provider(settings, args.provider)  # InvalidPayload is an ArchiverError: main prints it
    tasks = [tracked.TaskRef(args.provider, tracked.check_task_id(t)) for t in dict.fromkeys(args.task_ids)]
    for r in tracked.register(_connect(settings), tasks, now=time.time()):
        note = "tracking" if r.new else "already tracked since"
        print(
            f"{note} {r.provider} {r.task_id} ({iso(r.registered_at)}); polled if no terminal callback "
            f"{settings.reconcile_after_s} s after that"
        )
    return 0


def cmd_tracked(args: argparse.Namespace) -> int:
    from workers import reconcile

    connection = _connect(_settings())
    now = time.time()
    tasks = tracked.listing(connection, args.limit)
    members = [t.member for t in tasks]
    polled: list[Any] = connection.zmscore(redis_keys.TRACKED_POLLED_ZSET, members) if members else []
    rows = [
        {"task": (t.provider, t.task_id), "registered": t.registered_at, "polled": last}
        for t, last in zip(tasks, polled, strict=True)
    ]
    total = tracked.count(connection)
    if args.json:
        print(
            json.dumps(
                {
                    "total": total,
                    "tracked": [
                        {
                            "provider": r["task"][0],
                            "task_id": r["task"][1],
                            "registered_at": iso(r["registered"]),
                            "polled_at": iso(r["polled"]) if r["polled"] else None,
                        }
                        for r in rows
                    ],
                    "last_sweep": reconcile.last_report(connection),
                    "dropped": reconcile.dropped(connection, args.limit),
                },
                indent=2,
            )
        )
        return 0
    print(f"{total} tracked task(s)")
    for r in rows:
        seen = f"last polled {now - r['polled']:.0f} s ago" if r["polled"] else "not polled yet"
        print(f"  {r['task'][0]:8} {r['task'][1]}  registered {now - r['registered']:.0f} s ago, {seen}")
    report = reconcile.last_report(connection)
    if report:
        counts = ", ".join(
            f"{k} {report[k]}"
            for k in ("examined", "submitted", "in_progress", "dropped", "errors", "waiting", "finished", "deferred")
        )
        print(f"last sweep {report['at']}: {counts}")
    for item in reconcile.dropped(connection, args.limit):
        print(
            f"  dropped {item['dropped_at']}: {item['provider']} {item['task_id']}: {item['reason']}: {item['detail']}"
        )
    return 0


# --------------------------------------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    from workers import reconcile

    settings = _settings()
    if args.once:
        connection = _connect(settings)
        # the lock is taken too (when free), so the workers do not sweep again right after
        reconcile.acquire(connection, settings, owner=f"cli-{socket.gethostname()}-{os.getpid()}")
        # asked for now: every tracked task, however recent (a still-running one stays tracked)
        report = reconcile.run_sweep(connection, settings, after_s=0 if args.after is None else args.after)
        print(json.dumps(report.to_json(), indent=2) if args.json else report.summary(), flush=True)
        return 1 if report.errors else 0
    stop = _StopFlag()
    waited = _connect_waiting(settings, stop, "sweeper starting")
    if waited is None:
        return 0
    connection = waited
    owner = f"sweeper-{socket.gethostname()}-{os.getpid()}"
    log.info("sweeper running", extra={"interval_s": settings.reconcile_interval_s})
    while not stop():
        try:
            if reconcile.acquire(connection, settings, owner):
                print(reconcile.run_sweep(connection, settings, after_s=args.after).summary(), flush=True)
        except redis.RedisError as exc:
            log.warning("sweep failed; retrying next interval: %s", exc)
        stop.sleep(min(5.0, settings.reconcile_interval_s))
    return 0


# --------------------------------------------------------------------------------------------- notify


def cmd_notify(args: argparse.Namespace) -> int:
    from workers.notify import Notifier, NotifyPolicy

    settings = _settings()
    policy = NotifyPolicy(
        max_attempts=args.max_attempts,
        retry_base_s=args.retry_base,
        retry_cap_s=args.retry_cap,
        claim_after_s=args.claim_after,
        timeout_s=args.timeout,
    )
    stop = _StopFlag()
    connection = _connect_waiting(settings, stop, "notifier starting")
    if connection is None:
        return 0
    notifier = Notifier(connection, settings, policy=policy)  # ConfigError before anything runs
    notifier.ensure_group(from_start=args.from_start)
    log.info("notifier running", extra={"consumer": notifier.consumer, "urls": len(notifier.targets)})
    try:
        notifier.run(stop)
    finally:
        notifier.close()
    log.info("notifier stopped", extra={"consumer": notifier.consumer})
    return 0


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text}: must be > 0")
        return value

    return parse


def _at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 0")
    return value


def register(sub: Any) -> None:
    """Add ``track``, ``tracked``, ``sweep`` and ``notify`` to the ``veo-archiver`` sub-commands."""
    track = sub.add_parser("track", help="register tasks whose callback is expected (polled if none comes)")
    track.add_argument("provider", choices=PROVIDERS, help="the provider the tasks were submitted to")
    track.add_argument("task_ids", metavar="TASK_ID", nargs="+", help="the provider's task ids")
    track.set_defaults(func=cmd_track)

    listing = sub.add_parser("tracked", help="list tracked tasks, the last sweep and dropped tasks")
    listing.add_argument("--limit", type=_positive(int), default=50, help="at most N of each list (default 50)")
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    listing.set_defaults(func=cmd_tracked)

    sweep = sub.add_parser("sweep", help="poll the status API of tracked tasks whose callback never came")
    sweep.add_argument("--once", action="store_true", help="one sweep now, print its summary, exit")
    sweep.add_argument(
        "--after",
        type=_at_least_zero,
        default=None,
        help="seconds since registration before a task is polled (default: 0 with --once, every tracked task; "
        "else RECONCILE_AFTER)",
    )
    sweep.add_argument("--json", action="store_true", help="print the report as JSON (with --once)")
    sweep.set_defaults(func=cmd_sweep)

    notify = sub.add_parser("notify", help="POST each outcome to NOTIFY_URLS (Standard Webhooks-signed)")
    notify.add_argument(
        "--max-attempts", type=_positive(int), default=10, help="POSTs per outcome before it is dead-lettered"
    )
    notify.add_argument(
        "--retry-base", type=_positive(float), default=10.0, help="first retry delay, seconds (doubles per attempt)"
    )
    notify.add_argument("--retry-cap", type=_positive(float), default=3600.0, help="longest wait, seconds")
    notify.add_argument(
        "--claim-after",
        type=_positive(float),
        default=300.0,
        help="seconds an entry stays pending in a dead notifier before another takes it",
    )
    notify.add_argument("--timeout", type=_positive(float), default=10.0, help="per-POST timeout, seconds")
    notify.add_argument(
        "--from-start", action="store_true", help="when creating the consumer group, start at the stream's oldest entry"
    )
    notify.set_defaults(func=cmd_notify)
