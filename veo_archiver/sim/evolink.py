"""EvoLink as its documentation describes it: the task object of ``GET /v1/tasks/{id}``, which is also the
body of its ``callback_url`` POST ("consistent with the task query API response format").

Sources: https://docs.evolink.ai/en/api-manual/task-management/get-task-detail, the veo3.1-fast-extend page
(seed 004). Callbacks fire on completed, failed and cancelled; ``pending``/``processing`` are poll-only.
``created`` is Unix seconds; ``error.code`` is a string business code. EvoLink's own skill repository shows an
alternative completed shape ``{"output": {"video_url": ...}}`` instead of ``results[]``: both are produced.
No signature is documented; the sender waits 10 s and retries 3 times (1 s / 2 s / 4 s).
"""

from __future__ import annotations

import json
import random
import string
import time
from typing import Any

import httpx

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
RESULT_SHAPES = ("results", "output")
OBJECT = "video.generation.task"
DEFAULT_MODEL = "veo3.1-fast"
DEFAULT_ERROR_CODE = "generation_failed"


def make_task_id(created: int | None = None, *, rng: random.Random | None = None) -> str:
    """``task-unified-<unix seconds>-<8 lowercase letters/digits>``, as in the docs' examples."""
    secs = int(time.time()) if created is None else created
    pick = rng or random.Random()
    return f"task-unified-{secs}-" + "".join(pick.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def created_of(task_id: str) -> int | None:
    parts = task_id.split("-")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


def task_object(
    task_id: str,
    status: str,
    *,
    urls: list[str] | None = None,
    shape: str = "results",
    error_code: str | None = None,
    error_message: str | None = None,
    model: str = DEFAULT_MODEL,
    created: int | None = None,
    progress: int | None = None,
) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"unknown EvoLink status {status!r}; one of {STATUSES}")
    if shape not in RESULT_SHAPES:
        raise ValueError(f"unknown result shape {shape!r}; one of {RESULT_SHAPES}")
    when = created if created is not None else (created_of(task_id) or int(time.time()))
    default_progress = {"pending": 0, "processing": 45, "completed": 100}.get(status, 0)
    body: dict[str, Any] = {
        "id": task_id,
        "object": OBJECT,
        "created": when,
        "model": model,
        "type": "video",
        "status": status,
        "progress": default_progress if progress is None else progress,
    }
    if status == "completed":
        links = list(urls or [])
        if shape == "results":
            body["results"] = links
        else:
            if len(links) != 1:
                raise ValueError("the output.video_url shape carries exactly one URL")
            body["output"] = {"video_url": links[0]}
    elif status == "failed":
        body["error"] = {
            "code": error_code or DEFAULT_ERROR_CODE,
            "message": error_message or "Video generation failed",
        }
    if status in TERMINAL:
        body["task_info"] = {"can_cancel": False}
    else:
        body["task_info"] = {"can_cancel": True, "estimated_time": 180, "video_duration": 8}
    return body


def success_body(task_id: str, urls: list[str], *, shape: str = "results", **kw: Any) -> dict[str, Any]:
    return task_object(task_id, "completed", urls=urls, shape=shape, **kw)


def failure_body(
    task_id: str, error_code: str = DEFAULT_ERROR_CODE, error_message: str | None = None, **kw: Any
) -> dict[str, Any]:
    return task_object(task_id, "failed", error_code=error_code, error_message=error_message, **kw)


def cancelled_body(task_id: str, **kw: Any) -> dict[str, Any]:
    """Sent by the callback although ``cancelled`` is missing from the documented status enum."""
    return task_object(task_id, "cancelled", **kw)


def pending_body(task_id: str, status: str = "processing", **kw: Any) -> dict[str, Any]:
    if status not in ("pending", "processing"):
        raise ValueError("pending_body is for the pending and processing statuses")
    return task_object(task_id, status, **kw)


def error_body(code: str, message: str) -> dict[str, Any]:
    """EvoLink's error envelope (401, 404, ...)."""
    return {"error": {"code": code, "message": message}}


def send(url: str, body: dict[str, Any], *, timeout: float = 10.0) -> httpx.Response:
    """POST as EvoLink does: plain JSON, no signature; any 2xx counts as delivered."""
    with httpx.Client(timeout=timeout) as client:
        return client.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
