"""The spool directory on disk: entry names, the side folders, the record of an entry's failed attempts.

::

    SPOOL_DIR/
        {time_ns:020d}-{random}.json          an entry waiting (names sort in arrival order)
        {entry}.json.tries                    its failed attempts while Redis answered (JSON), if any
        .tmp-*                                a write in progress (or a crash's leftover; removed at start)
        .drain.lock                           flock of the one process draining this directory
        rejected/{entry}.json                 could not be read or decoded: nothing can replay it
        quarantine/{entry}.json               failed on its own too often while Redis answered
        quarantine/{entry}.json.reason        why (JSON: reason, error, attempts, quarantined_at)

Both side folders are made when the first entry goes there. Every move is a ``rename`` within one
filesystem, fsynced with both directories, so an entry is always in exactly one place: waiting, rejected or
quarantined (or gone once submitted). The ``.tries`` record is what makes the bound on retries survive a
restart; it is written atomically but not fsynced: a crash may forget one attempt, which only retries once
more. :func:`requeue` puts quarantined entries back under their own names (so at the head of the spool) with
no record of their attempts: an operator's command (``veo-archiver spool requeue``), run while the receiver
runs or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QUARANTINE_DIR",
    "REJECTED_DIR",
    "TEMP_PREFIX",
    "Attempts",
    "Quarantined",
    "SpoolEntry",
    "fsync_dir",
    "move_aside",
    "quarantined",
    "read_attempts",
    "requeue",
    "scan",
    "write_attempts",
]

SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
TRIES_SUFFIX = ".tries"
REASON_SUFFIX = ".reason"
REJECTED_DIR = "rejected"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = ".drain.lock"
#: the errors of the latest attempts kept in ``.tries`` and in the ``.reason`` beside a quarantined entry
KEPT_ERRORS = 5
ERROR_CHARS = 500


@dataclass(frozen=True, order=True)
class SpoolEntry:
    name: str
    path: Path
    size: int

    @property
    def spooled_at(self) -> float:
        """When it was written (seconds since the epoch), from its name."""
        return int(self.name.split("-", 1)[0]) / 1e9


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_entry_name(name: str) -> bool:
    stamp, dash, rest = name.partition("-")
    return bool(dash) and len(stamp) == 20 and stamp.isdigit() and name.endswith(SUFFIX) and bool(rest)


def scan(directory: Path) -> list[SpoolEntry]:
    """The entries in ``directory``, oldest first; reads only (no lock, no cleanup)."""
    entries: list[SpoolEntry] = []
    with os.scandir(directory) as it:
        for item in it:
            if is_entry_name(item.name) and item.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    entries.append(SpoolEntry(item.name, Path(item.path), item.stat(follow_symlinks=False).st_size))
    entries.sort()
    return entries


def _write_atomically(path: Path, data: bytes, *, durable: bool) -> None:
    temp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{path.name}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


# ------------------------------------------------------------------------------------------------ attempts


@dataclass(frozen=True)
class Attempts:
    """An entry's failed attempts while Redis answered: how many, when it may be tried again, the errors."""

    count: int = 0
    not_before: float = 0.0
    #: the latest ``KEPT_ERRORS`` errors, oldest first: ``{"at": ..., "reason": ..., "error": ...}``
    errors: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def after_failure(self, at: float, reason: str, error: str, delay_s: float) -> Attempts:
        failure = {"at": round(at, 3), "reason": reason, "error": error[:ERROR_CHARS]}
        return Attempts(self.count + 1, at + delay_s, (*self.errors, failure)[-KEPT_ERRORS:])

    def to_json(self) -> dict[str, Any]:
        return {"attempts": self.count, "not_before": self.not_before, "errors": list(self.errors)}


def read_attempts(directory: Path) -> dict[str, Attempts]:
    """The ``.tries`` records in ``directory`` by entry name (usually none: one listing)."""
    out: dict[str, Attempts] = {}
    with os.scandir(directory) as it:
        for item in it:
            if not item.name.endswith(TRIES_SUFFIX):
                continue
            try:
                raw = json.loads(Path(item.path).read_bytes())
                errors = tuple(e for e in raw.get("errors", []) if isinstance(e, dict))
                out[item.name[: -len(TRIES_SUFFIX)]] = Attempts(int(raw["attempts"]), float(raw["not_before"]), errors)
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # unreadable: as if never tried (it only costs retries); rewritten at the next failure
    return out


def write_attempts(entry: SpoolEntry, attempts: Attempts) -> None:
    _write_atomically(_tries_path(entry.path), json.dumps(attempts.to_json()).encode(), durable=False)


def forget_attempts(entry_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _tries_path(entry_path).unlink()


def _tries_path(entry_path: Path) -> Path:
    return entry_path.with_name(entry_path.name + TRIES_SUFFIX)


def remove_stray_tries(directory: Path, waiting: Iterable[SpoolEntry]) -> None:
    """Delete ``.tries`` records whose entry is gone (submitted, or moved by a crash-interrupted step)."""
    names = {e.name for e in waiting}
    with os.scandir(directory) as it:
        for item in it:
            if item.name.endswith(TRIES_SUFFIX) and item.name[: -len(TRIES_SUFFIX)] not in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.path)


# ------------------------------------------------------------------------------------------------ side folders


def move_aside(entry: SpoolEntry, folder: Path, reason: dict[str, Any] | None = None) -> Path:
    """Move ``entry`` into ``folder`` (made if missing), with ``reason`` written beside it first; fsynced.

    Raises ``OSError`` with the entry still where it was (the reason file may then be left alone in the
    folder: :func:`quarantined` ignores a reason without its entry)."""
    folder.mkdir(exist_ok=True)
    target = folder / entry.name
    if reason is not None:
        _write_atomically(folder / (entry.name + REASON_SUFFIX), json.dumps(reason).encode(), durable=True)
    os.replace(entry.path, target)
    fsync_dir(folder)
    fsync_dir(entry.path.parent)
    forget_attempts(entry.path)
    return target


@dataclass(frozen=True)
class Quarantined:
    """One quarantined entry and why (from its ``.reason``; ``unknown`` when that is missing or unreadable)."""

    name: str
    size: int
    reason: str
    error: str
    attempts: int
    quarantined_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "quarantined_at": self.quarantined_at,
        }


def quarantined(directory: Path, *, latest: int | None = None) -> tuple[int, list[Quarantined]]:
    """How many entries ``directory``'s ``quarantine/`` holds, and the ``latest`` of them (all when None),
    newest first, with their reasons. Reads only."""
    folder = directory / QUARANTINE_DIR
    if not folder.is_dir():
        return 0, []
    entries = scan(folder)
    chosen = entries[::-1] if latest is None else entries[::-1][:latest]
    out: list[Quarantined] = []
    for entry in chosen:
        try:
            raw = json.loads((folder / (entry.name + REASON_SUFFIX)).read_bytes())
            at = raw.get("quarantined_at")
            out.append(
                Quarantined(
                    entry.name,
                    entry.size,
                    str(raw.get("reason") or "unknown"),
                    str(raw.get("error") or ""),
                    int(raw.get("attempts") or 0),
                    float(at) if isinstance(at, int | float) else None,
                )
            )
        except (OSError, ValueError, TypeError, AttributeError):
            out.append(Quarantined(entry.name, entry.size, "unknown", "no readable .reason beside it", 0, None))
    out.sort(key=lambda q: (q.quarantined_at or 0.0, q.name), reverse=True)
    return len(entries), out


def requeue(directory: Path, names: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """Put quarantined entries back in the spool (all when ``names`` is None), under their own names and with
    no attempts counted; return (requeued, not found). A receiver draining ``directory`` picks them up at its
    next look at the directory."""
    folder = directory / QUARANTINE_DIR
    present = {e.name: e for e in scan(folder)} if folder.is_dir() else {}
    wanted = sorted(present) if names is None else list(dict.fromkeys(names))
    done: list[str] = []
    missing: list[str] = []
    for name in wanted:
        entry = present.get(name)
        if entry is None:
            missing.append(name)
            continue
        forget_attempts(directory / name)
        os.replace(entry.path, directory / name)
        fsync_dir(directory)
        fsync_dir(folder)
        with contextlib.suppress(FileNotFoundError):
            (folder / (name + REASON_SUFFIX)).unlink()
        done.append(name)
    return done, missing
