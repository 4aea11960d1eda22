"""kie.ai as its documentation describes it: callback bodies in every documented form, signed headers."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from veo_archiver.providers.kie import sign

#: the four documented shapes of ``resultUrls``/``originUrls``
URL_FORMS = ("list", "json", "bracket", "bare")


def encode_urls(urls: list[str], form: str) -> Any:
    if form == "list":
        return list(urls)
    if form == "json":
        return json.dumps(urls)
    if form == "bracket":
        return "[" + ", ".join(urls) + "]"
    if form == "bare":
        if len(urls) != 1:
            raise ValueError("the bare form carries exactly one URL")
        return urls[0]
    raise ValueError(f"unknown URL form {form!r}; one of {URL_FORMS}")


def success_body(
    task_id: str, urls: list[str], *, form: str = "list", task_id_at: str = "data.taskId"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": 200,
        "msg": "Veo3.1 video generated successfully.",
        "data": {
            "promptJson": json.dumps({"aspectRatio": "16:9", "model": "veo3_fast", "prompt": "a cat"}),
            "info": {"resultUrls": encode_urls(urls, form), "resolution": "1080p"},
            "fallbackFlag": False,
        },
    }
    return place_task_id(body, task_id, task_id_at)


def failure_body(task_id: str, code: int = 400, msg: str | None = None) -> dict[str, Any]:
    text = msg or {
        400: "Your prompt was flagged by Website as violating content policies.",
        422: "Your request was rejected by Flow(upstream). You may consider using our other fallback channels.",
        500: "Internal Error, Please try again later.",
        501: "Failed - Video generation task failed",
    }.get(code, "Failed")
    return {"code": code, "msg": text, "data": {"taskId": task_id, "fallbackFlag": False}}


#: get-1080p-video's answer while the 1080p is being made (worded like get-4k-video's "4k is processing")
PROCESSING_1080P_MSG = "1080P is processing. It should be ready in 1-3 minutes. Please check back shortly."


def rendition_1080p_body(url: str | None) -> dict[str, Any]:
    """get-1080p-video's answer: ready (the documented ``data.resultUrl``) or, with no URL, still processing."""
    if url is None:
        return {"code": 422, "msg": PROCESSING_1080P_MSG, "data": None}
    return {"code": 200, "msg": "success", "data": {"resultUrl": url}}


def place_task_id(body: dict[str, Any], task_id: str, where: str) -> dict[str, Any]:
    if where == "data.taskId":
        body["data"]["taskId"] = task_id
    elif where == "data.task_id":
        body["data"]["task_id"] = task_id
    elif where == "taskId":
        body["taskId"] = task_id
    else:
        raise ValueError(f"unknown task id place {where!r}")
    return body


def signed_headers(key: str, task_id: str, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "X-Webhook-Timestamp": str(ts),
        "X-Webhook-Signature": sign(key, task_id, ts),
    }


def send(url: str, body: dict[str, Any], headers: dict[str, str], *, timeout: float = 15.0) -> httpx.Response:
    """POST as kie.ai does (15 s sender timeout)."""
    with httpx.Client(timeout=timeout) as client:
        return client.post(url, content=json.dumps(body).encode(), headers=headers)


def sign_for_test(key: str, task_id: str) -> str:
    """A signature made with ``key`` for ``task_id`` now (tests: a valid signature by the wrong key)."""
    return sign(key, task_id, int(time.time()))
