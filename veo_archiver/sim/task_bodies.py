"""The tasks the simulated cloud knows, and each provider's bodies for them: status answers and callbacks.

Pure: a :class:`CloudTask` in, the JSON object the provider would send out (built by the per-provider body
builders in this package). :mod:`veo_archiver.sim.cloud` serves them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from veo_archiver.providers import NAMES
from veo_archiver.sim import apixo, evolink, kie, useapi

PROVIDERS = NAMES
STATUSES = ("succeeded", "failed", "in_progress")
#: each provider's own status values for the normalized ones; the first is the default
NATIVE: dict[str, dict[str, tuple[Any, ...]]] = {
    "kie": {"succeeded": (1,), "failed": (2, 3), "in_progress": (0,)},
    "apixo": {"succeeded": ("success",), "failed": ("failed",), "in_progress": ("processing", "pending")},
    "useapi": {"succeeded": ("completed",), "failed": ("failed",), "in_progress": ("started", "created")},
    "evolink": {
        "succeeded": ("completed",),
        "failed": ("failed", "cancelled"),
        "in_progress": ("processing", "pending"),
    },
}
#: extra keyword arguments ``set_task`` accepts per provider (forwarded to the body builders)
EXTRAS: dict[str, frozenset[str]] = {
    "kie": frozenset({"resolution", "fallback_flag", "prompt"}),
    "apixo": frozenset({"model"}),  # "veo-3-1" (default) or "veo-3-1-extend": which statusTask endpoint knows it
    "useapi": frozenset("schema count prompt model seed reply_url reply_ref reply_ref_at".split()),
    "evolink": frozenset({"shape", "model", "progress"}),
}


@dataclass
class CloudTask:
    provider: str
    task_id: str
    status: str
    native_status: Any
    urls: list[str]
    failure_code: str | None = None
    failure_message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    updated_ms: int = 0


def _kie_time(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def status_body(t: CloudTask) -> dict[str, Any]:
    """What the provider's status API returns for a known task (HTTP 200)."""
    if t.provider == "kie":
        return {"code": 200, "msg": "success", "data": _kie_record(t)}
    if t.provider == "apixo":
        return apixo.envelope(_apixo_record(t))
    return _useapi(t, None) if t.provider == "useapi" else _evolink(t, None)


def callback_body(t: CloudTask, variant: str | None = None) -> dict[str, Any]:
    """The callback the provider would send for the task's current state. ``variant``: kie URL form
    (list|json|bracket|bare), useapi schema (media|operations|operations_metadata), EvoLink result shape
    (results|output). APIXO and EvoLink records for tasks in progress are produced although those
    providers only call back on completion."""
    if t.provider == "kie":
        if t.status == "in_progress":
            raise ValueError("kie.ai sends no callback for a task in progress")
        if t.status == "failed":
            return kie.failure_body(t.task_id, int(t.failure_code or 400), t.failure_message)
        body = kie.success_body(t.task_id, t.urls, form=variant or "list")
        body["data"]["info"]["resolution"] = t.extra.get("resolution", "1080p")
        body["data"]["fallbackFlag"] = bool(t.extra.get("fallback_flag", False))
        return body
    if t.provider == "apixo":
        return apixo.envelope(_apixo_record(t))
    return _useapi(t, variant) if t.provider == "useapi" else _evolink(t, variant)


def _kie_record(t: CloudTask) -> dict[str, Any]:
    failed, code = t.status == "failed", int(t.failure_code or 400)
    response = {
        "taskId": t.task_id,
        "resultUrls": list(t.urls),
        "fullResultUrls": list(t.urls),
        "resolution": t.extra.get("resolution", "1080p"),
    }
    return {
        "taskId": t.task_id,
        "paramJson": json.dumps(
            {"prompt": t.extra.get("prompt", "a cat"), "model": "veo3_fast", "aspectRatio": "16:9"}
        ),
        "completeTime": _kie_time(t.updated_ms) if t.status != "in_progress" else None,
        "createTime": _kie_time(t.created_ms),
        "response": response if t.status == "succeeded" else None,
        "successFlag": t.native_status,
        "errorCode": code if failed else None,
        "errorMessage": (t.failure_message or kie.failure_body(t.task_id, code)["msg"]) if failed else "",
        "fallbackFlag": bool(t.extra.get("fallback_flag", False)),
    }


def _apixo_record(t: CloudTask) -> dict[str, Any]:
    done = t.updated_ms if t.status != "in_progress" else None
    return apixo.task_record(
        t.task_id,
        t.native_status,
        urls=t.urls,
        fail_code=t.failure_code,
        fail_msg=t.failure_message,
        create_time_ms=t.created_ms,
        complete_time_ms=done,
    )


def _useapi(t: CloudTask, variant: str | None) -> dict[str, Any]:
    extra = {**t.extra, **({"schema": variant} if variant else {})}
    code = int(t.failure_code) if t.failure_code else None
    return useapi.job_record(
        t.task_id,
        t.native_status,
        urls=t.urls,
        error=t.failure_message,
        code=code,
        created_ms=t.created_ms,
        updated_ms=t.updated_ms,
        **extra,
    )


def _evolink(t: CloudTask, variant: str | None) -> dict[str, Any]:
    extra = {**t.extra, **({"shape": variant} if variant else {})}
    created = evolink.created_of(t.task_id) or t.created_ms // 1000
    return evolink.task_object(
        t.task_id,
        t.native_status,
        urls=t.urls,
        error_code=t.failure_code,
        error_message=t.failure_message,
        created=created,
        **extra,
    )
