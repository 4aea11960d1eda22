"""EvoLink task callbacks (``callback_url``) and ``GET /v1/tasks/{id}`` answers. Pure.

EvoLink POSTs the task object, "consistent with the task query API response format", when a task is
completed, failed or cancelled (seed 004; https://docs.evolink.ai/en/api-manual/task-management/get-task-detail).
``cancelled`` is not in the documented status enum but is a documented callback trigger: it maps to FAILED.
Result URLs are in ``results[]``; EvoLink's own skill repository shows ``output.video_url`` instead, so that
is the fallback. ``error.code`` is a string business code; numbers are stringified. No signature is
documented: a worker confirms through ``GET /v1/tasks/{id}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from veo_archiver.errors import InvalidPayload, PermanentError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.payload import as_object, task_id_value
from veo_archiver.providers.base import ProviderSpec
from veo_archiver.providers.shape import Code, OptInt, OptObj, OptStr, Shape, Str, TaskId, TextOr, Urls
from veo_archiver.providers.status_api import api_base, bearer_headers

_STATUSES = {
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "cancelled": TaskStatus.FAILED,
    "canceled": TaskStatus.FAILED,
    "pending": TaskStatus.IN_PROGRESS,
    "processing": TaskStatus.IN_PROGRESS,
}
_CANCELLED = ("cancelled", "canceled")
#: failure_code of a cancelled task whose body carries no ``error.code``
CANCELLED_CODE = "cancelled"
# Error answers are {"error": {"code": "invalid_task_id", "message": ..., "type": ..., "param": ...}}
# (get-task-detail, 400 example). A malformed id cannot name a task either, so it counts as unknown.
_UNKNOWN_TASK_TEXT = re.compile(r"not[\s_]*found|not[\s_]*exist|no[\s_]+such|invalid_task_id", re.IGNORECASE)
# UTC, kept naive: isoformat() then writes no offset and "Z" is appended, which skips the tzinfo calls (and
# the replace) that formatting an aware time costs; the text is the same
_EPOCH = datetime(1970, 1, 1)
# times an int: exactly timedelta(seconds=n), without the keyword parsing
_ONE_SECOND = timedelta(seconds=1)


class _Output(Shape):
    video_url = Urls("video_url")


class _Error(Shape):
    code = Code("code", "a string")  # a string business code; numbers are stringified
    message = OptStr("message")


class Task(Shape):
    """A task object: a callback body, and the answer of ``GET /v1/tasks/{id}``."""

    task_id = TaskId("id")
    status = Str("status")
    results = Urls("results")
    output = OptObj(_Output, "output")
    error = TextOr(_Error, "error", "an object")
    created = OptInt("created")  # Unix seconds
    model = OptStr("model")
    progress = OptInt("progress")


def task_id_of(body: Mapping[str, Any]) -> str:
    return Task(as_object(body)).task_id


def parse(body: Mapping[str, Any], *, verification: Verification) -> TaskEvent:
    """Turn a decoded EvoLink task object into a :class:`TaskEvent`."""
    return _event(Task(as_object(body)), verification)


def status_request(base_url: str, task_id: str, api_key: str) -> tuple[str, dict[str, str]]:
    """URL and headers of ``GET {base}/v1/tasks/{id}``, the id percent-encoded."""
    tid = task_id_value(task_id, "id")
    if tid.strip() in (".", ".."):
        raise InvalidPayload(f"id: {tid!r} is not a task id")
    url = f"{api_base('EvoLink', base_url)}/v1/tasks/{quote(tid, safe='')}"
    return url, bearer_headers("EvoLink", api_key)


def parse_status(body: Mapping[str, Any], task_id: str) -> TaskEvent:
    """Turn a ``GET /v1/tasks/{id}`` answer for ``task_id`` into an event verified by the provider API."""
    body = as_object(body)
    if body.get("status") is None:  # not a task object: an error answer
        error = body.get("error")
        parts = [error] if isinstance(error, str) else []
        if isinstance(error, dict):
            parts += [v for k in ("code", "message", "type") if isinstance(v := error.get(k), str)]
        text = " | ".join(parts)
        status_code = error.get("code") if isinstance(error, dict) else body.get("code")
        if status_code == 404 or _UNKNOWN_TASK_TEXT.search(text):
            raise PermanentError(f"EvoLink knows no task {task_id!r}: {text[:200]!r}", reason="unknown_task")
        raise InvalidPayload(f"status: the answer is not a task object (error: {text[:200]!r})")
    task = Task(body)
    if task.task_id != task_id:
        raise InvalidPayload(f"id: the answer is for task {task.task_id!r}, not {task_id!r}")
    return _event(task, Verification.PROVIDER_API)


def _event(task: Task, verification: Verification) -> TaskEvent:
    task_id, status_text = task.task_id, task.status
    key = status_text.strip().lower()
    status = _STATUSES.get(key, TaskStatus.UNKNOWN)
    urls, fallback = task.results, task.output.video_url
    code, message = _error(task.error)
    if key in _CANCELLED and code is None:
        code = CANCELLED_CODE
    extra: dict[str, Any] = {}
    created = task.created
    if created is not None:
        extra["created"] = created
        stamp = _iso_from_seconds(created)
        if stamp is not None:
            extra["created_at"] = stamp
    model = task.model
    if model:
        extra["model"] = model
    if task.progress is not None:
        extra["progress"] = task.progress
    failed = status is TaskStatus.FAILED
    return TaskEvent(
        provider="evolink",
        task_id=task_id,
        status=status,
        result_urls=tuple(urls or fallback) if status is TaskStatus.SUCCEEDED else (),
        failure_code=code if failed else None,
        failure_message=message if failed else None,
        kind="extend" if model and model.strip().endswith("-extend") else None,
        extra=extra,
        verification=verification,
        provider_status=status_text,
    )


def _error(error: str | _Error | None) -> tuple[str | None, str | None]:
    """``error.code`` (stringified) and ``error.message``; a bare string ``error`` is taken as the message."""
    if error is None or isinstance(error, str):
        return None, error if error and error.strip() else None
    code, message = error.code, error.message
    return code, message if message and message.strip() else None


def _iso_from_seconds(seconds: int) -> str | None:
    try:
        moment = _EPOCH + _ONE_SECOND * seconds
    except OverflowError:  # out of datetime's range: the raw number is kept, the ISO form dropped
        return None
    return moment.isoformat(timespec="seconds") + "Z"


SPEC = ProviderSpec(
    name="evolink",
    label="EvoLink",
    api_key_var="EVOLINK_API_KEY",
    default_api_base="https://api.evolink.ai",
    url_lifetime_s=24 * 3600,  # documented: 24 h
    parse=parse,
    status_requests=lambda base, task_id, key: [status_request(base, task_id, key)],
    parse_status=parse_status,
)
