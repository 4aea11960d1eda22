"""APIXO as its documentation describes it: the task record its webhook and ``statusTask`` both carry.

Sources: https://apixo.ai/docs/api-reference/webhooks, /api-reference/response-format, the veo-3-1-extend page
(seed 002). The envelope is always ``{"code": 200, "message": "success", "data": {...}}`` - even for a failed
task; ``data.state`` tells the outcome. ``resultJson`` is a JSON *string*; all times are Unix milliseconds.
No signature is documented, so ``send`` posts plain JSON.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

STATES = ("pending", "processing", "success", "failed")

#: older vocabulary (/api-reference/error-codes) with the extend page's own codes
FAIL_CODES_LEGACY: dict[str, str] = {
    "CONTENT_VIOLATION": "Content violates usage policy",
    "NSFW_DETECTED": "NSFW content detected",
    "PROMPT_TOO_LONG": "Prompt exceeds the maximum length",
    "INVALID_PROMPT": "Prompt is invalid",
    "INVALID_IMAGE_URL": "Image URL is invalid",
    "IMAGE_TOO_LARGE": "Image is too large",
    "UNSUPPORTED_FORMAT": "Unsupported image format",
    "IMAGE_DOWNLOAD_FAILED": "Failed to download the input image",
    "PROCESSING_TIMEOUT": "Processing timed out",
    "MODEL_UNAVAILABLE": "Model is temporarily unavailable",
    "GENERATION_FAILED": "Generation failed",
    "INSUFFICIENT_CREDITS": "Insufficient credits",
    "TASKID_ERROR": "The source task ID was not found, expired, or does not belong to veo-3-1",
    "INVALID_PARAMETER": "A model parameter is unsupported or malformed",
    "INSUFFICIENT_BALANCE": "The account does not have enough balance for the task",
    "UPSTREAM_ERROR": "Upstream-side failure",
    "TIMEOUT": "Generation did not finish in time",
}

#: newer, provider-style vocabulary (/api-reference/errors)
FAIL_CODES_PROVIDER: dict[str, str] = {
    "SensitiveContent": "The content was flagged as sensitive",
    "SensitiveContentDetected": "Sensitive content detected in the output",
    "InputImageSensitiveContentDetected": "Sensitive content detected in the input image",
    "NSFW": "NSFW content detected",
    "ProhibitedContentDetected": "Prohibited content detected",
    "PromptLengthExceeded": "The prompt length was exceeded",
}

DEFAULT_COST_MS = 12_500


def now_ms() -> int:
    return int(time.time() * 1000)


def fail_message(fail_code: str) -> str:
    return FAIL_CODES_LEGACY.get(fail_code) or FAIL_CODES_PROVIDER.get(fail_code) or "Task failed"


def task_record(
    task_id: str,
    state: str,
    *,
    urls: list[str] | None = None,
    fail_code: str | None = None,
    fail_msg: str | None = None,
    create_time_ms: int | None = None,
    complete_time_ms: int | None = None,
) -> dict[str, Any]:
    """``data`` of a callback or a ``statusTask`` answer, with only the fields documented for ``state``."""
    if state not in STATES:
        raise ValueError(f"unknown APIXO state {state!r}; one of {STATES}")
    created = now_ms() - DEFAULT_COST_MS if create_time_ms is None else create_time_ms
    record: dict[str, Any] = {"taskId": task_id, "state": state}
    if state == "success":
        completed = created + DEFAULT_COST_MS if complete_time_ms is None else complete_time_ms
        record["resultJson"] = json.dumps({"resultUrls": list(urls or [])})
        record["costTime"] = completed - created
        record["createTime"] = created
        record["completeTime"] = completed
    elif state == "failed":
        code = fail_code or "CONTENT_VIOLATION"
        record["failCode"] = code
        record["failMsg"] = fail_msg or fail_message(code)
        record["createTime"] = created
        record["completeTime"] = created + 5_000 if complete_time_ms is None else complete_time_ms
    else:
        record["createTime"] = created
    return record


def envelope(data: dict[str, Any] | None, *, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def success_body(task_id: str, urls: list[str], *, create_time_ms: int | None = None) -> dict[str, Any]:
    return envelope(task_record(task_id, "success", urls=urls, create_time_ms=create_time_ms))


def failure_body(
    task_id: str,
    fail_code: str = "CONTENT_VIOLATION",
    fail_msg: str | None = None,
    *,
    create_time_ms: int | None = None,
) -> dict[str, Any]:
    """``fail_code`` from either vocabulary (``FAIL_CODES_LEGACY``, ``FAIL_CODES_PROVIDER``) or any string."""
    return envelope(
        task_record(task_id, "failed", fail_code=fail_code, fail_msg=fail_msg, create_time_ms=create_time_ms)
    )


def pending_body(task_id: str, state: str = "processing", *, create_time_ms: int | None = None) -> dict[str, Any]:
    """A non-terminal record (what ``statusTask`` shows; the webhook itself fires on completion)."""
    if state not in ("pending", "processing"):
        raise ValueError("pending_body is for the pending and processing states")
    return envelope(task_record(task_id, state, create_time_ms=create_time_ms))


def unauthorized_body() -> dict[str, Any]:
    return envelope(None, code=401, message="Missing or invalid API key")


def not_found_body(task_id: str) -> dict[str, Any]:
    """Undocumented: sent with HTTP 404, in the usual envelope."""
    return envelope(None, code=404, message=f"Task not found: {task_id}")


def result_urls(body: dict[str, Any]) -> list[str]:
    """The documented way to read the output: ``json.loads(data.resultJson)["resultUrls"]``."""
    urls = json.loads(body["data"]["resultJson"])["resultUrls"]
    return [str(u) for u in urls]


def send(url: str, body: dict[str, Any], *, timeout: float = 30.0) -> httpx.Response:
    """POST as APIXO does: plain JSON, no signature headers; it waits 30 s for an HTTP 200."""
    with httpx.Client(timeout=timeout) as client:
        return client.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
