"""APIXO Veo 3.1 callbacks and ``statusTask`` answers: payload parsing and the status request. Pure.

APIXO POSTs ``{"code": 200, "message": "success", "data": {...task record...}}`` to ``callback_url`` when a
task finishes (https://apixo.ai/docs/api-reference/webhooks). The outer ``code`` is 200 even for a failed
task, so ``data.state`` alone decides; ``data.resultJson`` is a JSON *string* holding ``resultUrls``. No
signature is documented: a worker confirms through ``GET /api/v1/statusTask/{model}?taskId=``, whose answer
wraps the same record in the same envelope (https://apixo.ai/docs/api-reference/status-task, seed 002).
There, ``code`` is the HTTP status, and 404 means "task or model not found".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from veo_archiver.errors import ConfigError, InvalidPayload, PermanentError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.payload import as_object, task_id_value
from veo_archiver.providers.base import ProviderSpec
from veo_archiver.providers.shape import Code, Int, JsonObject, Obj, OptInt, OptStr, Raw, Shape, Str, TaskId, Urls
from veo_archiver.providers.status_api import api_base, bearer_headers

#: the statusTask path segment is the model the task was submitted to (extend tasks have their own)
STATUS_MODELS = ("veo-3-1", "veo-3-1-extend")
SUCCESS_CODE = 200
UNKNOWN_TASK = "unknown_task"

_STATES = {
    "success": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "pending": TaskStatus.IN_PROGRESS,
    "processing": TaskStatus.IN_PROGRESS,
}
# Answers that say the task does not exist. Undocumented beyond "404 = task or model not found"; the texts
# are those of kie.ai's record APIs, whose "market" record APIXO's mirrors.
_UNKNOWN_TASK_CODES = (400, 404, 422)
_UNKNOWN_TASK_TEXT = re.compile(r"not\s*found|not\s*exist|no\s+such|is\s+null|unknown\s+task", re.IGNORECASE)
# UTC, kept naive: isoformat() then writes no offset and "Z" is appended, which skips the tzinfo calls (and
# the replace) that formatting an aware time costs; the text is the same
_EPOCH = datetime(1970, 1, 1)
# times an int: exactly timedelta(milliseconds=n), without the keyword parsing
_ONE_MS = timedelta(milliseconds=1)


class _Result(Shape):
    result_urls = Urls("resultUrls")


class _Task(Shape):
    """The task record, in ``data`` of both a callback and a ``statusTask`` answer."""

    task_id = TaskId("taskId")
    state = Str("state")
    result = JsonObject(_Result, "resultJson")  # a JSON string holding an object
    fail_code = Code("failCode", "a string")
    fail_msg = OptStr("failMsg")
    cost_time = OptInt("costTime")
    create_time = OptInt("createTime")  # Unix milliseconds
    complete_time = OptInt("completeTime")


class Envelope(Shape):
    code = Int("code")
    message = Raw("message")
    data = Obj(_Task, "data")


def task_id_of(body: Mapping[str, Any]) -> str:
    return Envelope(as_object(body)).data.task_id


def parse(body: Mapping[str, Any], *, verification: Verification) -> TaskEvent:
    """Turn a decoded APIXO callback body into a :class:`TaskEvent` (the outer ``code`` is not consulted)."""
    return _event(Envelope(as_object(body)).data, verification)


def status_request(base_url: str, task_id: str, api_key: str, *, model: str = "veo-3-1") -> tuple[str, dict[str, str]]:
    """URL and headers of ``GET {base}/api/v1/statusTask/{model}?taskId=…``."""
    if model not in STATUS_MODELS:
        raise ConfigError(f"APIXO status model must be one of {', '.join(STATUS_MODELS)}, not {model!r}")
    tid = task_id_value(task_id, "taskId")
    url = f"{api_base('APIXO', base_url)}/api/v1/statusTask/{model}?taskId={quote(tid, safe='')}"
    return url, bearer_headers("APIXO", api_key)


def parse_status(body: Mapping[str, Any], task_id: str) -> TaskEvent:
    """Turn a ``statusTask`` answer for ``task_id`` into a :class:`TaskEvent` verified by the provider API."""
    answer = Envelope(as_object(body))
    code = answer.code
    text = answer.message if isinstance(answer.message, str) else ""
    if code != SUCCESS_CODE:
        lowered = text.lower()
        if (
            code in _UNKNOWN_TASK_CODES
            and (code == 404 or _UNKNOWN_TASK_TEXT.search(text))
            and "model" not in lowered
            and "key" not in lowered
        ):
            raise PermanentError(f"APIXO knows no task {task_id!r}: {code} {text[:200]!r}", reason=UNKNOWN_TASK)
        raise InvalidPayload(f"code: statusTask answered {code} {text[:200]!r}")
    got = answer.data.task_id
    if got != task_id:
        raise InvalidPayload(f"data.taskId: the answer is for task {got!r}, not {task_id!r}")
    return _event(answer.data, Verification.PROVIDER_API)


def _event(task: _Task, verification: Verification) -> TaskEvent:
    task_id = task.task_id
    status = _STATES.get(task.state.strip().lower(), TaskStatus.UNKNOWN)
    urls = task.result.result_urls
    fail_code, fail_msg = task.fail_code, task.fail_msg or None
    extra: dict[str, Any] = {} if task.cost_time is None else {"costTime": task.cost_time}
    for name, iso_name, ms in (
        ("createTime", "created_at", task.create_time),
        ("completeTime", "completed_at", task.complete_time),
    ):
        if ms is not None:
            extra[name] = ms
            stamp = _iso_from_ms(ms)
            if stamp is not None:
                extra[iso_name] = stamp
    failed = status is TaskStatus.FAILED
    return TaskEvent(
        provider="apixo",
        task_id=task_id,
        status=status,
        result_urls=tuple(urls) if status is TaskStatus.SUCCEEDED else (),
        failure_code=fail_code if failed else None,
        failure_message=fail_msg if failed else None,
        extra=extra,
        verification=verification,
        provider_status=task.state,
    )


def _iso_from_ms(ms: int) -> str | None:
    try:
        moment = _EPOCH + _ONE_MS * ms
    except OverflowError:  # out of datetime's range: the raw number is kept, the ISO form dropped
        return None
    return moment.isoformat(timespec="milliseconds") + "Z"


SPEC = ProviderSpec(
    name="apixo",
    label="APIXO",
    api_key_var="APIXO_API_KEY",
    default_api_base="https://api.apixo.ai",
    url_lifetime_s=24 * 3600,  # silent: 24 h assumed
    parse=parse,
    # one status endpoint per model, and a callback does not say which model ran it
    status_requests=lambda base, task_id, key: [status_request(base, task_id, key, model=m) for m in STATUS_MODELS],
    parse_status=parse_status,
)
