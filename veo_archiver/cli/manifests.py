"""``veo-archiver manifests --since TIME [--provider P] [--json]``: the archive's manifests written since a time,
read from storage itself, for a pipeline that was away longer than ``veo:outcomes`` keeps its entries.

The stream is capped (:data:`~veo_archiver.records.outcome.OUTCOMES_MAXLEN` entries); the archive is not. This
command lists the archive through :meth:`workers.storage.Archive.iter_objects` (every store the archive
supports: a directory, S3, Azure, GCS), keeps the ``…/manifest.json`` objects written at or after ``--since``
(the store's last-modified time), reads each and prints one line per task, oldest write first, built exactly
as the worker builds its ``veo:outcomes`` entry from the same manifest (:func:`outcome_line`; both map it
with :func:`veo_archiver.records.outcome.of_manifest`): the same ``outcome`` (``archived`` /
``provider_failed``) and the same ``outcome_id``, so a consumer merges both sources and dedupes on
``outcome_id``. The line's ``files`` is a list, ``bytes`` and ``run`` numbers (the stream holds them as
strings); ``at`` is the manifest's ``archived_at`` and ``modified`` the object's last write.

What storage cannot tell: dead letters (no manifest is written; see ``veo-archiver failed``), and the earlier
states of a task whose manifest was replaced (a failure manifest replaced by a later success shows as the
success only). Listing reads every object key under the provider (or the whole archive): one request per
1,000 objects on S3.

Exit codes: 0 done (nothing found included), 1 some manifest could not be read (the others are printed),
2 configuration or storage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from veo_archiver import clock
from veo_archiver.cli import local_env
from veo_archiver.cli.output import table
from veo_archiver.errors import ConfigError
from veo_archiver.records.outcome import of_manifest, outcome_id_of
from workers.storage import Archive, ListedObject, open_archive, read_json

MANIFEST_NAME = "manifest.json"
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
#: a ``veo:outcomes`` stream id (``1764800000000-0``) or its milliseconds alone
_STREAM_ID = re.compile(r"(\d+)(?:-\d+)?")
#: a stream id's milliseconds below this (March 1973) were meant as seconds: refused rather than guessed
_MIN_STREAM_MS = 10**11
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(sub: Any) -> None:
    manifests = sub.add_parser(
        "manifests",
        help="list the archive's manifests written since a time, from storage (catch up past the stream)",
    )
    manifests.add_argument(
        "--since",
        required=True,
        metavar="TIME",
        help="ISO-8601 (2026-11-27T10:00:00Z; no zone = UTC), a veo:outcomes stream id or its milliseconds "
        "(1764800000000-0, 1764800000000), or a time ago (90m, 2h, 3d, 1w)",
    )
    manifests.add_argument("--provider", help="only this provider (kie, apixo, useapi, evolink, standard-<source>)")
    manifests.add_argument("--json", action="store_true", help="one JSON object per line, oldest first")
    manifests.set_defaults(func=cmd_manifests)


def parse_since(text: str, now: float) -> float:
    """Epoch seconds from ``2026-11-27T10:00:00Z`` (a naive time is UTC), a ``veo:outcomes`` stream id
    (``1764800000000-0``: Redis's milliseconds, what the README's catch-up recipe passes) or its milliseconds
    alone, or ``2h`` / ``3d`` / ``90m`` ago."""
    value = text.strip()
    relative = _RELATIVE.fullmatch(value.lower())
    if relative:
        return now - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    stream_id = _STREAM_ID.fullmatch(value)
    if stream_id:
        ms = int(stream_id.group(1))
        if ms < _MIN_STREAM_MS:
            raise ConfigError(
                f"--since {text!r}: a stream id counts milliseconds (1764800000000-0); for seconds append 000"
            )
        return ms / 1000
    parsed = clock.epoch(value)
    if parsed is None:
        raise ConfigError(
            f"--since {text!r}: give an ISO-8601 time (2026-11-27T10:00:00Z), a stream id (1764800000000-0) "
            "or a time ago (2h, 3d)"
        )
    return parsed


# --------------------------------------------------------------------------------------------- lines


def outcome_line(archive: Archive, key: str, manifest: dict[str, Any], modified: float) -> dict[str, Any]:
    """The ``veo:outcomes`` entry the worker publishes from this manifest (both map it with
    :func:`veo_archiver.records.outcome.of_manifest`), as JSON."""
    end = of_manifest(manifest, object_key=archive.object_key)
    provider, task_id = str(manifest.get("provider") or ""), str(manifest.get("task_id") or "")
    return {
        "outcome": end.outcome,
        "outcome_id": outcome_id_of(provider, task_id, end.status, end.outcome, end.job_id, end.run),
        "provider": provider,
        "task_id": task_id,
        "status": end.status,
        "job_id": end.job_id or "",
        "run": end.run,
        "at": manifest.get("archived_at") or "",
        "archived_at": manifest.get("archived_at"),
        "modified": clock.iso(modified),
        "reason": end.reason,
        "error": end.error,
        "manifest": archive.object_key(key),
        "location": archive.location(key),
        "files": end.files,
        "bytes": sum(int(f.get("size") or 0) for f in end.files),
    }


@dataclass
class Listing:
    lines: list[dict[str, Any]]
    unreadable: list[tuple[str, str]]


def manifest_objects(archive: Archive, since: float, provider: str | None) -> Iterator[ListedObject]:
    for listed in archive.iter_objects(provider or ""):
        if listed.key.rsplit("/", 1)[-1] == MANIFEST_NAME and listed.modified >= since:
            yield listed


def list_manifests(archive: Archive, since: float, provider: str | None = None) -> Listing:
    """Every manifest written at or after ``since`` (under ``provider``), oldest write first."""
    found = sorted(manifest_objects(archive, since, provider), key=lambda o: (o.modified, o.key))
    out = Listing(lines=[], unreadable=[])
    for listed in found:
        try:
            manifest = read_json(archive, listed.key)
        except ValueError as exc:  # not JSON (UnicodeDecodeError is one)
            out.unreadable.append((listed.key, str(exc)))
            continue
        if manifest is None:  # replaced or removed between the listing and the read, or not an object
            out.unreadable.append((listed.key, "gone, or not a JSON object"))
            continue
        out.lines.append(outcome_line(archive, listed.key, manifest, listed.modified))
    return out


# --------------------------------------------------------------------------------------------- command


def cmd_manifests(args: argparse.Namespace) -> int:
    since = parse_since(args.since, time.time())
    settings = local_env.settings()
    listing = list_manifests(open_archive(settings.storage), since, args.provider)
    if args.json:
        for line in listing.lines:
            print(json.dumps(line, sort_keys=True, separators=(",", ":")))
    else:
        for row in render(listing.lines, since):
            print(row)
    for key, why in listing.unreadable:
        print(f"veo-archiver: cannot read {key}: {why}", file=sys.stderr)
    return 1 if listing.unreadable else 0


def render(lines: list[dict[str, Any]], since: float) -> list[str]:
    if not lines:
        return [f"no manifest written since {clock.iso(since)}"]
    rows = [
        (
            line["modified"],
            line["outcome"],
            line["provider"],
            line["task_id"],
            len(line["files"]),
            line["bytes"],
            line["reason"] or None,
            line["manifest"],
        )
        for line in lines
    ]
    out = table(("MODIFIED", "OUTCOME", "PROVIDER", "TASK", "FILES", "BYTES", "REASON", "MANIFEST"), rows, indent="")
    out.append(f"\n{len(lines)} manifest(s) written since {clock.iso(since)}; --json for one line each")
    return out
