"""Callbacks from any provider that follows the Standard Webhooks spec (verified by
:mod:`veo_archiver.standard_webhooks`): a generic reading of ``{"type", "timestamp", "data": {...}}``.

The spec fixes the envelope, not the payload, so the fields a video task is read from are the common
names: task id ``data.task_id``/``data.taskId``/``data.id`` (else the webhook id), status ``data.status``
or the suffix of ``type`` (``video.completed``), URLs ``data.result_urls``/``results``/``urls``/``video_url``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from veo_archiver.errors import InvalidPayload
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.payload import task_id_value
from veo_archiver.providers.shape import Obj, Shape
from veo_archiver.urls import parse_url_list

_SUCCEEDED = {"completed", "succeeded", "success", "done", "finished"}
_FAILED = {"failed", "failure", "error", "cancelled", "canceled", "expired"}
_IN_PROGRESS = {"created", "pending", "queued", "started", "processing", "running", "in_progress"}


def status_of(raw: str) -> TaskStatus:
    word = raw.strip().lower()
    if word in _SUCCEEDED:
        return TaskStatus.SUCCEEDED
    if word in _FAILED:
        return TaskStatus.FAILED
    if word in _IN_PROGRESS:
        return TaskStatus.IN_PROGRESS
    return TaskStatus.UNKNOWN


class _Envelope(Shape):
    data = Obj(Shape, "data")  # its members are looked up under several names in parse(): the first present wins


def parse(body: Mapping[str, Any], *, source: str, webhook_id: str, verification: Verification) -> TaskEvent:
    data = _Envelope(body).data.raw
    task_id: Any = next((data[k] for k in ("task_id", "taskId", "id") if data.get(k) is not None), webhook_id)
    if not isinstance(task_id, str | int) or isinstance(task_id, bool):
        raise InvalidPayload("data.task_id: expected a non-empty string")
    task_id = task_id_value(str(task_id), "data.task_id")
    raw_status = data.get("status")
    if raw_status is None and isinstance(body.get("type"), str):
        raw_status = str(body["type"]).rsplit(".", 1)[-1]
    if not isinstance(raw_status, str):
        raise InvalidPayload("data.status: expected a string (or a type such as video.completed)")
    status = status_of(raw_status)
    urls: list[str] = []
    for name in ("result_urls", "resultUrls", "results", "urls", "video_urls", "video_url", "url"):
        if data.get(name) is not None:
            urls = parse_url_list(data[name], field=f"data.{name}")
            break
    error = data.get("error")
    code = message = None
    if isinstance(error, dict):
        code = None if error.get("code") is None else str(error.get("code"))
        message = None if error.get("message") is None else str(error.get("message"))
    elif isinstance(error, str):
        message = error
    return TaskEvent(
        provider=f"standard-{source}",
        task_id=str(task_id),
        status=status,
        result_urls=tuple(urls) if status is TaskStatus.SUCCEEDED else (),
        failure_code=code if status is TaskStatus.FAILED else None,
        failure_message=message if status is TaskStatus.FAILED else None,
        extra={"webhook_id": webhook_id, "type": body.get("type")},
        verification=verification,
        provider_status=raw_status,
    )
