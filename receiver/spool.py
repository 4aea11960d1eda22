"""A bounded, fsynced local spool: verified callbacks that Redis could not take, replayed when it can.

The providers give up within seconds (EvoLink retries after 1, 2 and 4 s), so a Redis outage longer than
that would lose callbacks answered 503. Instead the receiver writes the verified event and its delivery
here and answers only once the file is on disk; :mod:`receiver.spool_drain` submits the entries to the
intake, in arrival order, when Redis answers again. The directory's layout is :mod:`receiver.spool_files`.

- :meth:`Spool.append` writes one file atomically: a temp name in the same directory, ``fsync`` the file,
  rename to ``{time_ns:020d}-{random}.json`` (names sort in arrival order), ``fsync`` the directory. A crash
  before the rename leaves only a temp file, which :meth:`Spool.pending` ignores and a new :class:`Spool`
  deletes. Past ``max_files`` or ``max_bytes`` it raises :class:`QueueUnavailable` (``spool_full``); when
  the disk refuses, ``spool_unwritable``: the receiver answers 503 as it would without a spool.
- :meth:`Spool.writable` says whether an entry could be written now (for ``/readyz``): the result of the
  latest write (an append or a probe) when it is recent, else a probe that writes, fsyncs and deletes a
  small temp file (so a full disk and a read-only remount both show).
- Each entry ends in exactly one place: submitted (then deleted), waiting, ``rejected/`` (it cannot be read
  or decoded: nothing can replay it) or ``quarantine/`` (it failed on its own too often while Redis
  answered), never deleted unsubmitted. A removal is not fsynced: a crash may replay an entry already
  submitted, which the intake's dedupe answers ``duplicate``.
- An entry holds what rebuilds the verified :class:`TaskEvent` and the :class:`Delivery` (raw body in
  base64, the non-secret headers), so a replay calls ``intake.submit(event, delivery)`` exactly as the live
  path did, without verifying again (the signed timestamps would be stale by then).

One process drains a directory at a time (an ``flock`` on ``.drain.lock``); the size accounting is per
process (seeded from the directory, refreshed at each drain), so receivers sharing a directory may together
go past the bound by their number.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver.spool_files import (
    LOCK_FILE,
    QUARANTINE_DIR,
    REJECTED_DIR,
    SUFFIX,
    TEMP_PREFIX,
    Attempts,
    Quarantined,
    SpoolEntry,
    forget_attempts,
    fsync_dir,
    move_aside,
    quarantined,
    read_attempts,
    remove_stray_tries,
    scan,
    write_attempts,
)
from veo_archiver.errors import PermanentError, QueueUnavailable
from veo_archiver.event import TaskEvent
from veo_archiver.intake import Delivery

__all__ = [
    "QUARANTINE_DIR",
    "REJECTED_DIR",
    "TEMP_PREFIX",
    "CorruptEntry",
    "Spool",
    "SpoolEntry",
    "SpoolSurvey",
    "decode_entry",
    "encode_entry",
    "survey",
]

log = logging.getLogger(__name__)

ENTRY_VERSION = 1
#: how long the result of the latest write (an append or a probe) answers :meth:`Spool.writable`
WRITE_CHECK_TTL_S = 5.0
#: bytes a probe writes and fsyncs: on a full disk even this fails
PROBE_BYTES = 512
#: quarantined entries whose reasons ``survey`` reads (``status``, ``/ops``)
LATEST_QUARANTINED = 5


class CorruptEntry(PermanentError):
    """A spool entry that cannot be read or decoded: set aside in ``rejected/``, never retried."""

    reason = "spool_corrupt"


# ------------------------------------------------------------------------------------------------ entries


def encode_entry(event: TaskEvent, delivery: Delivery) -> bytes:
    """The spool record of a verified callback: the event's JSON and the delivery as received."""
    record = {
        "v": ENTRY_VERSION,
        "event": event.to_json(),
        "delivery": {
            "body_b64": base64.b64encode(delivery.body).decode("ascii"),
            "headers": delivery.public_headers(),  # credentials never reach the disk (nor Redis)
            "received_at": delivery.received_at,
            "remote": delivery.remote,
            "path": delivery.path,
        },
    }
    return json.dumps(record, separators=(",", ":")).encode()


def decode_entry(data: bytes) -> tuple[TaskEvent, Delivery]:
    """The event and delivery of :func:`encode_entry`, or :class:`CorruptEntry` saying what is wrong."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("v") != ENTRY_VERSION:
            raise CorruptEntry(f"not a version {ENTRY_VERSION} spool entry")
        event = TaskEvent.from_json(record["event"])
        raw = record["delivery"]
        headers = raw["headers"]
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise CorruptEntry("delivery.headers: expected an object of strings")
        delivery = Delivery(
            body=base64.b64decode(raw["body_b64"], validate=True),
            headers={str(k): v for k, v in headers.items()},
            received_at=float(raw["received_at"]),
            remote=None if raw.get("remote") is None else str(raw["remote"]),
            path=str(raw.get("path") or ""),
        )
    except CorruptEntry:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, binascii.Error) as exc:
        raise CorruptEntry(f"undecodable spool entry: {type(exc).__name__}: {str(exc)[:200]}") from None
    return event, delivery


# ------------------------------------------------------------------------------------------------ survey


@dataclass(frozen=True)
class SpoolSurvey:
    """What waits in a spool directory, read without touching it (``/metrics``, ``/ops``, ``veo-archiver status``)."""

    directory: str
    entries: int
    bytes: int
    #: seconds the oldest entry has waited; None when nothing waits
    oldest_age_s: float | None
    #: entries in ``rejected/``: unreadable or undecodable, an operator has to look at them
    rejected: int
    #: entries in ``quarantine/``: they failed on their own while Redis answered (``veo-archiver spool requeue``)
    quarantined: int = 0
    #: the latest quarantined entries and why, newest first
    latest_quarantined: tuple[Quarantined, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "entries": self.entries,
            "bytes": self.bytes,
            "oldest_age_s": self.oldest_age_s,
            "rejected": self.rejected,
            "quarantined": self.quarantined,
            "latest_quarantined": [q.to_json() for q in self.latest_quarantined],
        }


def survey(directory: Path | str, now: float) -> SpoolSurvey:
    """Count what waits in ``directory`` (blocking: directory listings). Unlike :class:`Spool` it creates
    and deletes nothing, so the CLI may look at a live receiver's spool."""
    directory = Path(directory)
    entries = scan(directory) if directory.is_dir() else []
    rejected_dir = directory / REJECTED_DIR
    rejected = len(scan(rejected_dir)) if rejected_dir.is_dir() else 0
    held, latest = quarantined(directory, latest=LATEST_QUARANTINED)
    return SpoolSurvey(
        directory=str(directory.resolve()),
        entries=len(entries),
        bytes=sum(e.size for e in entries),
        oldest_age_s=max(0.0, now - entries[0].spooled_at) if entries else None,
        rejected=rejected,
        quarantined=held,
        latest_quarantined=tuple(latest),
    )


# ------------------------------------------------------------------------------------------------ the spool


class Spool:
    """One spool directory. Its methods block (an fsync, a listing): call them with ``asyncio.to_thread``."""

    def __init__(self, directory: Path | str, max_bytes: int, max_files: int) -> None:
        self.directory = Path(directory)
        self.rejected_dir = self.directory / REJECTED_DIR
        self.quarantine_dir = self.directory / QUARANTINE_DIR
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.directory.mkdir(parents=True, exist_ok=True)  # the side folders are made when first used
        self._lock = threading.Lock()
        self._last_ns = 0
        #: (monotonic time, whether it worked, why not) of the latest write: an append or a probe
        self._last_write: tuple[float, bool, str] | None = None
        self._probe_lock = threading.Lock()
        self._seen_mtime_ns = 0
        for path in self.directory.iterdir():  # a crash between temp write and rename: nobody owns these
            if path.name.startswith(TEMP_PREFIX):
                log.warning("spool: removing a temp file left by a crash", extra={"path": str(path)})
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        entries = self.pending()
        remove_stray_tries(self.directory, entries)
        self._count, self._bytes = len(entries), sum(e.size for e in entries)

    def append(self, record: bytes) -> SpoolEntry:
        """Write one entry; return once it is on disk. :class:`QueueUnavailable` (``spool_full``) past the bound."""
        with self._lock:
            if self._count + 1 > self.max_files or self._bytes + len(record) > self.max_bytes:
                raise QueueUnavailable(
                    f"the local spool is full ({self._count} files, {self._bytes} bytes; "
                    f"SPOOL_MAX_FILES={self.max_files}, SPOOL_MAX_BYTES={self.max_bytes})",
                    reason="spool_full",
                )
            self._last_ns = max(time.time_ns(), self._last_ns + 1)  # strictly increasing within this process
            name = f"{self._last_ns:020d}-{secrets.token_hex(6)}{SUFFIX}"
            self._count += 1
            self._bytes += len(record)
        temp = self.directory / f"{TEMP_PREFIX}{name}"
        path = self.directory / name
        try:
            self._write_file(temp, record)
            os.rename(temp, path)
            fsync_dir(self.directory)
        except OSError as exc:
            with self._lock:
                self._count -= 1
                self._bytes -= len(record)
            with contextlib.suppress(OSError):
                temp.unlink()
            self._last_write = (time.monotonic(), False, str(exc))
            raise QueueUnavailable(f"could not write to the local spool: {exc}", reason="spool_unwritable") from exc
        self._last_write = (time.monotonic(), True, "")
        return SpoolEntry(name, path, len(record))

    @staticmethod
    def _write_file(path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def writable(self, max_age_s: float | None = None) -> tuple[bool, str]:
        """Whether an entry could be written now, and why not: the latest write's result when it is younger
        than ``max_age_s`` (default :data:`WRITE_CHECK_TTL_S`), else a probe (a small temp file written,
        fsynced and deleted). Blocking."""
        max_age_s = WRITE_CHECK_TTL_S if max_age_s is None else max_age_s
        with self._probe_lock:  # concurrent callers share one probe
            last = self._last_write
            if last is None or time.monotonic() - last[0] > max_age_s:
                probe = self.directory / f"{TEMP_PREFIX}probe-{secrets.token_hex(6)}"
                try:
                    self._write_file(probe, b"\0" * PROBE_BYTES)
                    probe.unlink()
                    last = (time.monotonic(), True, "")
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        probe.unlink()
                    last = (time.monotonic(), False, str(exc))
                self._last_write = last
            return last[1], last[2]

    def pending(self) -> list[SpoolEntry]:
        """The entries waiting, oldest first (temp files and the side folders are not entries)."""
        entries = scan(self.directory)
        with self._lock:
            self._count, self._bytes = len(entries), sum(e.size for e in entries)
        return entries

    def remove(self, entry: SpoolEntry) -> None:
        """Delete a submitted entry (and the record of its attempts)."""
        forget_attempts(entry.path)
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
            with self._lock:
                self._count -= 1
                self._bytes -= entry.size

    def attempts(self) -> dict[str, Attempts]:
        """The failed attempts recorded for the waiting entries, by name (entries never tried have none)."""
        return read_attempts(self.directory)

    def record_failure(self, entry: SpoolEntry, attempts: Attempts) -> None:
        write_attempts(entry, attempts)

    def reject(self, entry: SpoolEntry, why: str) -> Path:
        """Move an entry nothing can replay to ``rejected/``, logged at ERROR. ``OSError`` leaves it waiting."""
        target = self._move(entry, self.rejected_dir, None)
        log.error("spool: entry rejected", extra={"path": str(target), "reason": why})
        return target

    def quarantine(self, entry: SpoolEntry, reason: dict[str, Any]) -> Path:
        """Move an entry that failed too often to ``quarantine/`` with ``reason`` beside it (``.reason``),
        logged at WARNING. ``OSError`` leaves it waiting."""
        target = self._move(entry, self.quarantine_dir, reason)
        log.warning(
            "spool: entry quarantined after failing while Redis answered; `veo-archiver spool requeue` puts it back",
            extra={"path": str(target), **reason},
        )
        return target

    def _move(self, entry: SpoolEntry, folder: Path, reason: dict[str, Any] | None) -> Path:
        target = move_aside(entry, folder, reason)
        with self._lock:
            self._count -= 1
            self._bytes -= entry.size
        return target

    def has_room(self, record_bytes: int = 64 * 1024) -> bool:
        """Whether one more entry of about ``record_bytes`` fits under both bounds (for ``/readyz``)."""
        return self._count + 1 <= self.max_files and self._bytes + record_bytes <= self.max_bytes

    def depth(self) -> tuple[int, int]:
        """(entries, bytes) waiting, as this process counts them."""
        with self._lock:
            return self._count, self._bytes

    def changed(self) -> bool:
        """Whether the directory changed since the last call (one ``stat``): another receiver spooled into it,
        an operator requeued, or this process drained. ``True`` when it cannot be read."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return True
        seen, self._seen_mtime_ns = self._seen_mtime_ns, mtime
        return mtime != seen

    def oldest_age_s(self, now: float) -> float | None:
        """Seconds the oldest waiting entry has waited; ``None`` when the spool is empty."""
        entries = self.pending()
        return max(0.0, now - entries[0].spooled_at) if entries else None

    @contextlib.contextmanager
    def draining(self) -> Iterator[bool]:
        """Hold the drain lock if nobody else does; yields whether this caller got it."""
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock
