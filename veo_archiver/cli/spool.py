"""``veo-archiver spool quarantined | requeue``: the receiver's local spool entries set aside in ``quarantine/``.

An entry lands there after failing on its own ``RetryPolicy.max_attempts`` times while Redis answered (see
:mod:`receiver.spool_drain`); its reason is beside it. Once the cause is fixed (a Redis limit raised, a bug
fixed), ``requeue`` puts entries back under their own names, so they are the oldest waiting: the receiver
draining this directory submits them within seconds (it sees the directory change), through the intake's
dedupe like any replay. Runs on the receiver's host, in its working directory (``SPOOL_DIR``) or with
``--dir``; Redis is not needed. Exit codes: 0 done, 1 nothing matched, 2 configuration error.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from receiver.spool_files import QUARANTINE_DIR, quarantined, requeue
from veo_archiver.cli.output import age, clip, print_json, settings, table
from veo_archiver.errors import ConfigError


def register(sub: Any) -> None:
    """Add ``spool`` and its subcommands to ``veo-archiver``'s subparsers."""
    spool = sub.add_parser(
        "spool",
        help="the receiver's local spool: list and requeue quarantined entries",
        description="The receiver's local spool: the entries set aside in quarantine/, and putting them back.",
    )
    commands = spool.add_subparsers(dest="spool_command", required=True)

    listing = commands.add_parser(
        "quarantined", help="list the entries in quarantine/, newest first, with the reason each was set aside"
    )
    listing.add_argument("--dir", help="the spool directory (default: SPOOL_DIR)")
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    listing.set_defaults(func=cmd_quarantined)

    back = commands.add_parser(
        "requeue",
        help="put quarantined entries back in the spool for the receiver to submit again",
        description="Put quarantined entries back under their own names, with no attempts counted; the receiver "
        "draining the directory submits them within seconds (a duplicate is answered as such by the intake).",
    )
    back.add_argument("names", nargs="*", metavar="NAME", help="entry names, as `spool quarantined` lists them")
    back.add_argument("--all", action="store_true", help="every quarantined entry")
    back.add_argument("--dir", help="the spool directory (default: SPOOL_DIR)")
    back.set_defaults(func=cmd_requeue)


def _directory(args: argparse.Namespace) -> Path:
    if args.dir:
        return Path(args.dir)
    configured = settings().spool_dir
    if configured is None:
        raise ConfigError("SPOOL_DIR=off: there is no spool here; pass --dir")
    return configured


def cmd_quarantined(args: argparse.Namespace) -> int:
    directory = _directory(args)
    count, entries = quarantined(directory)
    if args.json:
        print_json({"directory": str(directory.resolve()), "quarantined": [q.to_json() for q in entries]})
        return 0
    if not count:
        print(f"nothing quarantined in {directory / QUARANTINE_DIR}")
        return 0
    now = time.time()
    rows = [
        [q.name, q.reason, q.attempts, age(now - q.quarantined_at) if q.quarantined_at else "?", clip(q.error)]
        for q in entries
    ]
    print(f"{count} quarantined in {directory / QUARANTINE_DIR}:")
    for line in table(["name", "reason", "attempts", "ago", "error"], rows):
        print(line)
    print("requeue: veo-archiver spool requeue NAME... | --all")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if args.all == bool(args.names):
        raise ConfigError("name the entries to requeue, or pass --all (not both)")
    done, missing = requeue(directory, None if args.all else args.names)
    for name in missing:
        print(f"not in quarantine: {name}")
    print(f"requeued {len(done)} entr{'y' if len(done) == 1 else 'ies'} into {directory}")
    return 0 if done or (args.all and not missing) else 1
