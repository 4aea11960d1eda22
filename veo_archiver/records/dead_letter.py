"""Dead letters: why a job sits in RQ's failed registry. The one reader; ``veo-archiver status``/``failed``,
``/ops`` and ``/metrics`` all classify through :func:`classify`, so they name the same reason for a job.

The writer is :func:`workers.job_meta.mark_dead_letter`: a job that gives up on purpose (a permanent error,
or a transient one with no time or attempts left) records its verdict in its RQ meta::

    job.meta["dead_letter"] = {"reason": "http_404", "error": "<message>", "at": "<ISO-8601 UTC>",
                               "status": "<the provider's status>", "published": true | false}
    job.meta["attempts"] = [{"at", "reason", "error", "retry_in_s"}, ...]   # transient failures, last 20

The vocabulary of :attr:`Verdict.reason`:

- the job's own ``reason`` (``http_404``, ``not_a_video``…; ``permanent`` when it recorded none);
- ``abandoned``: no verdict, and RQ's failure text names ``AbandonedJobError`` (the worker died mid-job and
  its heartbeat lapsed; RQ's started-registry cleanup failed it);
- ``crashed``: no verdict, any other failure (an exception escaped the job, a timeout, a killed work horse);
- ``missing``: the registry still lists the job but its hash expired (``/ops`` and ``/metrics`` show these;
  the command line leaves them out).

**Runs.** A dead letter that is requeued (by ``veo-archiver retry``, ``rq requeue`` with either serializer,
rq-dashboard) starts its next *run*: :func:`start_new_run` moves its verdict to ``previous_dead_letters``
(oldest first, each with the run it ended; the last :data:`PREVIOUS_KEPT`) and counts ``meta["run"]`` up (absent
= run 1). Each end of each run has its own ``outcome_id``
(:func:`veo_archiver.records.outcome.outcome_id_of`), so a requeued job that fails again publishes again.

**Meta another tool re-saved.** ``rq requeue`` with RQ's default serializer (RQ 2) cannot read our JSON meta and
saves it back as a pickle of ``{"unserialized": b'<our JSON>'}``; our JSON serializer then reads that as
``{"unserialized": <the pickle>}``. :func:`readable_meta` unwraps both layers (the pickle read as plain data:
no class is ever loaded) so the verdict and the run survive.

RQ keeps a failure's text in the job's results stream (``rq:results:<id>``, see
:func:`veo_archiver.redis_keys.rq_results_key`): :func:`result_exc_text` decodes one entry of it for the
readers that do not go through ``rq.Job``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rq.job import Job

from veo_archiver.clock import epoch, iso

ABANDONED = "abandoned"
CRASHED = "crashed"
MISSING = "missing"
#: the reason of a job that wrote a verdict without one
PERMANENT = "permanent"
ERROR_CHARS = 500
#: how many earlier verdicts ``previous_dead_letters`` keeps: every one in practice (a job requeued more often
#: than this is stuck, not unlucky), and the meta stays bounded (each verdict is under 1 KB)
PREVIOUS_KEPT = 50
#: ``{"unserialized": ...}`` layers :func:`readable_meta` looks through
_WRAPPERS_READ = 4


@dataclass(frozen=True)
class Verdict:
    reason: str
    error: str
    at: str | None


def job_meta(raw: Any) -> dict[str, Any]:
    """A job hash's ``meta`` field (JSON serializer), raw from Redis; ``{}`` when absent or unreadable."""
    try:
        meta = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def marked(meta: Mapping[str, Any]) -> bool:
    """Whether the job recorded its own verdict (else it is ``abandoned`` or ``crashed`` once failed)."""
    return isinstance(meta.get("dead_letter"), dict)


def attempts_of(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    attempts = meta.get("attempts")
    return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:ERROR_CHARS] if lines else ""


def classify(
    meta: Mapping[str, Any] | None,
    *,
    exists: bool = True,
    exc_text: str | None = None,
    ended_at: float | None = None,
) -> Verdict:
    """The one classification of a failed job: its meta, whether its hash exists, RQ's failure text (the
    latest result's ``exc_string``) and when it ended (epoch seconds)."""
    if not exists:
        return Verdict(reason=MISSING, error="the job's record expired", at=None)
    meta = meta or {}
    letter = meta.get("dead_letter")
    if isinstance(letter, dict):  # see marked()
        attempts = attempts_of(meta)
        error = str(letter.get("error") or (attempts[-1].get("error") if attempts else "") or "")
        at = letter.get("at")
        return Verdict(
            reason=str(letter.get("reason") or PERMANENT),
            error=error,
            at=str(at) if at else iso(ended_at),
        )
    text = exc_text or ""
    return Verdict(
        reason=ABANDONED if "AbandonedJobError" in text else CRASHED,
        error=last_line(text) or "no error recorded",
        at=iso(ended_at),
    )


# --------------------------------------------------------------------------------------------- runs


def run_of(meta: Mapping[str, Any]) -> int:
    """The job's run: 1 until a requeued dead letter starts its next one."""
    run = meta.get("run")
    return run if isinstance(run, int) and not isinstance(run, bool) and run >= 1 else 1


def start_new_run(meta: dict[str, Any]) -> dict[str, Any] | None:
    """A requeued dead letter begins its next run: its verdict (returned; None when it carries none, and then
    nothing changes) joins ``previous_dead_letters`` and ``run`` counts up."""
    verdict = meta.pop("dead_letter", None)
    if not isinstance(verdict, dict):
        return None
    run = run_of(meta)
    previous = meta.get("previous_dead_letters")
    history = [v for v in previous if isinstance(v, dict)] if isinstance(previous, list) else []
    history.append({**verdict, "run": verdict.get("run", run)})
    meta["previous_dead_letters"] = history[-PREVIOUS_KEPT:]
    meta["run"] = run + 1
    return verdict


def unreadable_history(at: str) -> dict[str, Any]:
    """What stands for the history of a job whose meta no reader here understands: one unknown verdict, and a
    run past the first (the job was requeued, so at least its second run)."""
    unknown = {"reason": "unknown", "error": "meta unreadable (re-saved by another tool)", "at": at, "run": 1}
    return {"previous_dead_letters": [unknown], "run": 2}


class _DataOnly(pickle.Unpickler):
    """A pickle of plain data (dicts, bytes, str, numbers) only: any class or function is refused, so reading
    one cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}: only plain data is read")


def _decode_wrapped(raw: object) -> object:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if not isinstance(raw, bytes | bytearray):
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        return _DataOnly(io.BytesIO(raw)).load()  # plain data only: find_class refuses every class
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, OverflowError):
        return None


def readable_meta(meta: object) -> dict[str, Any] | None:
    """Our JSON meta, through the ``{"unserialized": ...}`` wrappers RQ leaves when a tool with another
    serializer re-saved it (see the module docstring); None when no JSON meta can be read back."""
    for _ in range(_WRAPPERS_READ):
        if not isinstance(meta, dict):
            return None
        if set(meta) != {"unserialized"}:
            try:
                json.dumps(meta)
            except (TypeError, ValueError):
                return None
            return meta
        meta = _decode_wrapped(meta["unserialized"])
    return None


def result_exc_text(fields: Mapping[Any, Any] | None) -> str:
    """The failure text of one ``rq:results:<id>`` stream entry (base64 of zlib, as RQ writes it); ``""``."""
    raw = (fields or {}).get(b"exc_string", (fields or {}).get("exc_string"))
    if not raw:
        return ""
    try:
        return zlib.decompress(base64.b64decode(raw)).decode("utf-8", "replace")
    except (binascii.Error, zlib.error, ValueError):
        return ""


# --------------------------------------------------------------------------------------------- rq.Job


def task_status_of(job: Job) -> str | None:
    """The terminal status the job archives (``succeeded``/``failed``), from its envelope."""
    try:
        envelope = job.kwargs.get("envelope") or {}
        return str(envelope["event"]["status"])
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


def failure_text(job: Job) -> str:
    result = job.latest_result()
    return (result.exc_string if result is not None else None) or ""


def verdict_of(job: Job) -> Verdict:
    return classify(job.meta or {}, exc_text=failure_text(job), ended_at=epoch(job.ended_at))


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    provider: str
    task_id: str
    status: str | None  # the terminal status the job archives (succeeded / failed)
    reason: str
    error: str
    at: str | None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def dead_letter_of(job: Job) -> DeadLetter:
    meta = job.meta or {}
    verdict = verdict_of(job)
    return DeadLetter(
        job_id=job.id,
        provider=str(meta.get("provider") or "?"),
        task_id=str(meta.get("task_id") or "?"),
        status=task_status_of(job),
        reason=verdict.reason,
        error=verdict.error,
        at=verdict.at,
        attempts=list(meta.get("attempts") or []),
    )
