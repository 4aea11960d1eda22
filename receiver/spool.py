"""A bounded, fsynced local spool: verified callbacks that Redis could not take, replayed when it can.

The providers give up within seconds (EvoLink retries after 1, 2 and 4 s), so a Redis outage longer than
that would lose callbacks answered 503. Instead the receiver writes the verified event and its delivery
here and answers only once the file is on disk; :class:`SpoolDrainer` submits the entries to the intake,
in arrival order, when Redis answers again.

- :meth:`Spool.append` writes one file atomically: a temp name in the same directory, ``fsync`` the file,
  rename to ``{time_ns:020d}-{random}.json`` (names sort in arrival order), ``fsync`` the directory. A crash
  before the rename leaves only a temp file, which :meth:`Spool.pending` ignores and a new :class:`Spool`
  deletes. Past ``max_files`` or ``max_bytes`` it raises :class:`QueueUnavailable` (``spool_full``): the
  receiver answers 503 as it would without a spool.
- :func:`drain` submits entries in order and removes each only after its submit succeeded; it stops at the
  first :class:`QueueUnavailable` (Redis still down). An entry that cannot be read or decoded is moved to
  ``rejected/`` with a log line: never retried forever, never deleted silently. A removal is not fsynced: a
  crash may replay an entry already submitted, which the intake's dedupe answers ``duplicate``.
- An entry holds what rebuilds the verified :class:`TaskEvent` and the :class:`Delivery` (raw body in
  base64, the non-secret headers), so a replay calls ``intake.submit(event, delivery)`` exactly as the live
  path did, without verifying again (the signed timestamps would be stale by then).

One process drains a directory at a time (an ``flock`` on ``.drain.lock``); the size accounting is per
process (seeded from the directory, refreshed at each drain), so receivers sharing a directory may together
go past the bound by their number.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veo_archiver.errors import PermanentError, QueueUnavailable
from veo_archiver.event import TaskEvent
from veo_archiver.intake import Delivery, Intake, IntakeResult

__all__ = [
    "CorruptEntry",
    "Spool",
    "SpoolDrainer",
    "SpoolEntry",
    "SpoolSurvey",
    "decode_entry",
    "drain",
    "encode_entry",
    "survey",
]

log = logging.getLogger(__name__)

ENTRY_VERSION = 1
SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
REJECTED_DIR = "rejected"
LOCK_FILE = ".drain.lock"


class CorruptEntry(PermanentError):
    """A spool entry that cannot be read or decoded: quarantined, never retried."""

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


# ------------------------------------------------------------------------------------------------ the spool


@dataclass(frozen=True, order=True)
class SpoolEntry:
    name: str
    path: Path
    size: int

    @property
    def spooled_at(self) -> float:
        """When it was written (seconds since the epoch), from its name."""
        return int(self.name.split("-", 1)[0]) / 1e9


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_entry_name(name: str) -> bool:
    stamp, dash, rest = name.partition("-")
    return bool(dash) and len(stamp) == 20 and stamp.isdigit() and name.endswith(SUFFIX) and bool(rest)


def _scan(directory: Path) -> list[SpoolEntry]:
    """The entries in ``directory``, oldest first; reads only (no lock, no cleanup)."""
    entries: list[SpoolEntry] = []
    with os.scandir(directory) as it:
        for item in it:
            if _is_entry_name(item.name) and item.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    entries.append(SpoolEntry(item.name, Path(item.path), item.stat(follow_symlinks=False).st_size))
    entries.sort()
    return entries


@dataclass(frozen=True)
class SpoolSurvey:
    """What waits in a spool directory, read without touching it (``/metrics`` and ``veo-archiver status``)."""

    directory: str
    entries: int
    bytes: int
    #: seconds the oldest entry has waited; None when nothing waits
    oldest_age_s: float | None
    #: entries quarantined in ``rejected/``: an operator has to look at them
    rejected: int

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "entries": self.entries,
            "bytes": self.bytes,
            "oldest_age_s": self.oldest_age_s,
            "rejected": self.rejected,
        }


def survey(directory: Path | str, now: float) -> SpoolSurvey:
    """Count what waits in ``directory`` (blocking: a directory listing). Unlike :class:`Spool` it creates
    and deletes nothing, so the CLI may look at a live receiver's spool."""
    directory = Path(directory)
    entries = _scan(directory) if directory.is_dir() else []
    rejected_dir = directory / REJECTED_DIR
    rejected = len(_scan(rejected_dir)) if rejected_dir.is_dir() else 0
    return SpoolSurvey(
        directory=str(directory.resolve()),
        entries=len(entries),
        bytes=sum(e.size for e in entries),
        oldest_age_s=max(0.0, now - entries[0].spooled_at) if entries else None,
        rejected=rejected,
    )


class Spool:
    """One spool directory. ``append`` is blocking (an fsync): call it with ``asyncio.to_thread`` from a handler."""

    def __init__(self, directory: Path | str, max_bytes: int, max_files: int) -> None:
        self.directory = Path(directory)
        self.rejected_dir = self.directory / REJECTED_DIR
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_ns = 0
        for path in self.directory.iterdir():  # a crash between temp write and rename: nobody owns these
            if path.name.startswith(TEMP_PREFIX):
                log.warning("spool: removing a temp file left by a crash", extra={"path": str(path)})
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        entries = self.pending()
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
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, path)
            _fsync_dir(self.directory)
        except OSError as exc:
            with self._lock:
                self._count -= 1
                self._bytes -= len(record)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise QueueUnavailable(f"could not write to the local spool: {exc}", reason="spool_unwritable") from exc
        return SpoolEntry(name, path, len(record))

    def pending(self) -> list[SpoolEntry]:
        """The entries waiting, oldest first (temp files and ``rejected/`` are not entries)."""
        entries = _scan(self.directory)
        with self._lock:
            self._count, self._bytes = len(entries), sum(e.size for e in entries)
        return entries

    def remove(self, entry: SpoolEntry) -> None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
            with self._lock:
                self._count -= 1
                self._bytes -= entry.size

    def reject(self, entry: SpoolEntry, why: str) -> Path:
        """Move an entry that cannot be replayed to ``rejected/``, with a log line (an operator looks at it)."""
        target = self.rejected_dir / entry.name
        os.replace(entry.path, target)
        _fsync_dir(self.rejected_dir)
        _fsync_dir(self.directory)
        with self._lock:
            self._count -= 1
            self._bytes -= entry.size
        log.error("spool: entry quarantined", extra={"path": str(target), "reason": why})
        return target

    def has_room(self, record_bytes: int = 64 * 1024) -> bool:
        """Whether one more entry of about ``record_bytes`` fits under both bounds (for ``/readyz``)."""
        return self._count + 1 <= self.max_files and self._bytes + record_bytes <= self.max_bytes

    def depth(self) -> tuple[int, int]:
        """(entries, bytes) waiting, as this process counts them."""
        with self._lock:
            return self._count, self._bytes

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


# ------------------------------------------------------------------------------------------------ draining

Submit = Callable[[bytes], Awaitable[Any]]


async def drain(spool: Spool, submit: Submit) -> int:
    """Submit the waiting entries in order; return how many were submitted (and removed).

    Stops at the first :class:`QueueUnavailable`, leaving it and the rest. An entry that cannot be read, or
    that ``submit`` refuses with :class:`CorruptEntry`, goes to ``rejected/``. Any other exception propagates
    and leaves the entry in place.
    """
    submitted = 0
    with spool.draining() as mine:
        if not mine:
            return 0
        for entry in spool.pending():
            try:
                data = entry.path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                spool.reject(entry, f"unreadable: {exc}")
                continue
            try:
                await submit(data)
            except QueueUnavailable:
                break
            except CorruptEntry as exc:
                spool.reject(entry, exc.message)
                continue
            spool.remove(entry)
            submitted += 1
    return submitted


class SpoolDrainer:
    """Replays a spool through an :class:`Intake`; the app's lifespan calls :meth:`run_once` (or :meth:`run`)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._lock = asyncio.Lock()
        #: outcome of each replayed entry (accepted, duplicate, recorded), for logs and tests
        self.outcomes: dict[str, int] = {}

    async def run_once(self, intake: Intake) -> int:
        """Submit what is waiting; return how many entries went to Redis."""

        async def submit(data: bytes) -> IntakeResult:
            event, delivery = decode_entry(data)
            result = await intake.submit(event, delivery)
            self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
            return result

        async with self._lock:
            done = await drain(self.spool, submit)
        if done:
            count, size = self.spool.depth()
            log.info("spool drained", extra={"submitted": done, "waiting": count, "waiting_bytes": size})
        return done

    async def run(self, intake: Intake, *, interval_s: float = 1.0) -> None:
        """Drain every ``interval_s`` while anything waits; until cancelled (the lifespan's task).

        Every 30th turn it looks at the directory even when this process counted nothing (another receiver
        sharing the directory may have spooled)."""
        turn = 0
        while True:
            turn += 1
            if self.spool.depth()[0] or turn % 30 == 0:
                try:
                    await self.run_once(intake)
                except Exception:  # keep draining later; a bug here must not stop the receiver
                    log.exception("spool: drain failed")
            await asyncio.sleep(interval_s)
