"""The providers' submission endpoints as their documentation describes them: which path is which operation,
where each request names its callback, and what each answers when it accepts a task. Pure;
:class:`veo_archiver.sim.cloud.ProviderCloud` serves them (``POST``), records each request in ``submitted``,
and registers the new task as in progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from veo_archiver.providers.submission import PARENT_FIELDS, PATHS
from veo_archiver.sim import apixo


@dataclass(frozen=True)
class Submitted:
    provider: str
    operation: str
    task_id: str
    body: dict[str, Any]
    #: the URL the request asked the callback to go to (None: none given)
    callback_url: str | None
    authorization: str


def route(path: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """``(provider, operation)`` of a submission path (EvoLink's one path: an extend names its base task)."""
    if path == "/v1/videos/generations":
        return "evolink", "extend" if "base_video_task_id" in body else "generate"
    for provider, operations in PATHS.items():
        for operation, known in operations.items():
            if known == path and provider != "evolink":
                return provider, operation
    return None


def callback_url(provider: str, body: dict[str, Any]) -> str | None:
    field = {"kie": "callBackUrl", "apixo": "callback_url", "useapi": "replyUrl", "evolink": "callback_url"}[provider]
    value = body.get(field)
    return value if isinstance(value, str) and value else None


def parent(provider: str, body: dict[str, Any]) -> str | None:
    value: Any = body
    for key in PARENT_FIELDS[provider]:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def accepted(provider: str, operation: str, task_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The provider's answer to an accepted submission: HTTP status and body."""
    if provider == "kie":
        return 200, {"code": 200, "msg": "success", "data": {"taskId": task_id}}
    if provider == "apixo":
        return 200, apixo.envelope({"taskId": task_id})
    if provider == "useapi":  # async: 201 Created with the job record
        return 201, {
            "jobid": task_id,
            "type": "video",
            "status": "created",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "request": dict(body),
        }
    return 200, {
        "id": task_id,
        "object": "video.generation.task",
        "model": body.get("model", "veo3.1-fast-extend" if operation == "extend" else "veo3.1-fast"),
        "status": "pending",
        "progress": 0,
        "created": int(time.time()),
        "task_info": {"can_cancel": True, "estimated_time": 180, "video_duration": 8},
        "type": "video",
    }
