"""useapi.net (Google Flow API v1) as its documentation describes it: the job record of
``GET /v1/google-flow/jobs/{jobid}``, which is also what each ``replyUrl`` POST carries (one per status
change: created, started, completed, failed).

Sources: https://useapi.net/docs/api-google-flow-v1/post-google-flow-videos-extend (seed 003) and
get-google-flow-jobs-jobid. Two result schemas exist: the current ``response.media[]`` (``videoUrl``,
``mediaGenerationId``, ``mediaMetadata``) and the older ``response.operations[]`` (``video.fifeUrl``, or in
client code ``operation.metadata.video.fifeUrl``). No signature, retry policy or timeout is documented.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import httpx

STATUSES = ("created", "started", "completed", "failed")
SCHEMAS = ("media", "operations", "operations_metadata")
REPLY_REF_PLACES = ("request", "top", "both")
DEFAULT_EMAIL = "jo***@gmail.com"
DEFAULT_USER = "u12345"
MAX_COUNT = 4


def make_jobid(*, ms: int | None = None, user: str = DEFAULT_USER, email: str = DEFAULT_EMAIL) -> str:
    """``j<ms>v-<user>-email:<masked email>-bot:google-flow``: contains ``:`` and ``@``."""
    stamp = int(time.time() * 1000) if ms is None else ms
    return f"j{stamp}v-{user}-email:{email}-bot:google-flow"


def jobid_path(jobid: str) -> str:
    """The status path with the jobid URL-encoded as one segment (``:``, ``@``, ``*`` escaped)."""
    return "/v1/google-flow/jobs/" + quote(jobid, safe="")


def jobid_from_path(path: str) -> str | None:
    prefix = "/v1/google-flow/jobs/"
    return unquote(path[len(prefix) :]) if path.startswith(prefix) and len(path) > len(prefix) else None


def _useapi_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def media_generation_id(name: str, *, user: str = DEFAULT_USER) -> str:
    """``user:{id}-email:{hex}-video:{internal}``, what /videos/extend takes as input."""
    return f"user:{user.lstrip('u')}-email:{b'jo@gmail.com'.hex()}-video:{name}"


def _video_meta(name: str, seed: int, prompt: str, url: str) -> dict[str, Any]:
    return {
        "seed": seed,
        "mediaGenerationId": media_generation_id(name),
        "prompt": prompt,
        "fifeUrl": url,
        "model": "veo_3_1_t2v",
        "isLooped": False,
        "aspectRatio": "VIDEO_ASPECT_RATIO_LANDSCAPE",
    }


def _media(name: str, seed: int, prompt: str, url: str, when: str) -> dict[str, Any]:
    return {
        "name": name,
        "projectId": str(uuid.uuid5(uuid.NAMESPACE_URL, "project")),
        "workflowId": str(uuid.uuid5(uuid.NAMESPACE_URL, "workflow:" + name)),
        "workflowStepId": "CAE",
        "mediaMetadata": {
            "createTime": when,
            "mediaTitle": prompt,
            "mediaStatus": {"mediaGenerationStatus": "MEDIA_GENERATION_STATUS_SUCCESSFUL"},
            "visibility": "PRIVATE",
        },
        "video": {
            "generatedVideo": {
                "seed": seed,
                "prompt": prompt,
                "model": "veo_3_1_t2v",
                "isLooped": False,
                "aspectRatio": "VIDEO_ASPECT_RATIO_LANDSCAPE",
            },
            "dimensions": {"length": "8s"},
            "operation": {"name": name},
        },
        "mediaGenerationId": media_generation_id(name),
        "videoUrl": url,
    }


def _operation(name: str, seed: int, prompt: str, url: str, schema: str) -> dict[str, Any]:
    meta = _video_meta(name, seed, prompt, url)
    if schema == "operations":  # Nov 2025 page: operations[].video.fifeUrl
        return {
            "operation": {"name": name},
            "sceneId": str(uuid.uuid5(uuid.NAMESPACE_URL, "scene:" + name)),
            "status": "VIDEO_GENERATION_STATUS_SUCCEEDED",
            "video": meta,
        }
    return {  # client code: operations[].operation.metadata.video.fifeUrl
        "operation": {
            "name": name,
            "metadata": {
                "@type": "type.googleapis.com/google.internal.labs.aisandbox.v1.Media",
                "name": name,
                "video": meta,
            },
        },
        "sceneId": "",
        "mediaGenerationId": meta["mediaGenerationId"],
        "status": "MEDIA_GENERATION_STATUS_SUCCESSFUL",
    }


def job_record(
    jobid: str,
    status: str,
    *,
    urls: list[str] | None = None,
    schema: str = "media",
    count: int | None = None,
    prompt: str = "The camera slowly pans right revealing a majestic waterfall",
    model: str = "veo-3.1-fast",
    seed: int | None = None,
    reply_url: str | None = None,
    reply_ref: str | None = None,
    reply_ref_at: str = "request",
    error: str | None = None,
    code: int | None = None,
    created_ms: int | None = None,
    updated_ms: int | None = None,
) -> dict[str, Any]:
    """The job record for ``status``; ``completed`` needs 1-4 ``urls`` (one media/operation each)."""
    if status not in STATUSES:
        raise ValueError(f"unknown useapi status {status!r}; one of {STATUSES}")
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; one of {SCHEMAS}")
    if reply_ref_at not in REPLY_REF_PLACES:
        raise ValueError(f"unknown replyRef place {reply_ref_at!r}; one of {REPLY_REF_PLACES}")
    links = list(urls or [])
    if status == "completed" and not 1 <= len(links) <= MAX_COUNT:
        raise ValueError("a completed job carries 1-4 videos")
    n = count if count is not None else max(len(links), 1)
    if not 1 <= n <= MAX_COUNT:
        raise ValueError("count is 1-4")
    created = int(time.time() * 1000) if created_ms is None else created_ms
    first_seed = random.Random(jobid).randrange(10_000, 2**31) if seed is None else seed
    request: dict[str, Any] = {
        "prompt": prompt,
        "model": model,
        "aspectRatio": "landscape",
        "count": n,
        "seed": first_seed,
        "async": True,
    }
    if reply_url is not None:
        request["replyUrl"] = reply_url
    record: dict[str, Any] = {"jobid": jobid, "type": "video", "status": status, "created": _useapi_time(created)}
    if status != "created":
        record["updated"] = _useapi_time(created + 1_000 if updated_ms is None else updated_ms)
    if reply_ref is not None and reply_ref_at in ("request", "both"):
        request["replyRef"] = reply_ref
    if reply_ref is not None and reply_ref_at in ("top", "both"):
        record["replyRef"] = reply_ref
    record["request"] = request
    response: dict[str, Any] = {
        "captcha": {
            "service": "AntiCaptcha",
            "taskId": str(uuid.uuid5(uuid.NAMESPACE_URL, jobid)),
            "durationMs": 3500,
        }
    }
    if status == "completed":
        when = record["updated"]
        names = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{jobid}#{i}")) for i in range(len(links))]
        if schema == "media":
            response["media"] = [
                _media(nm, first_seed + i, prompt, u, when) for i, (nm, u) in enumerate(zip(names, links, strict=True))
            ]
        else:
            response["operations"] = [
                _operation(nm, first_seed + i, prompt, u, schema)
                for i, (nm, u) in enumerate(zip(names, links, strict=True))
            ]
    elif status == "failed":
        record["error"] = error or "Video generation failed: PUBLIC_ERROR_UNSAFE_GENERATION"
        record["code"] = 400 if code is None else code
    record["response"] = response
    return record


def error_body(message: str, code: int | None = None) -> dict[str, Any]:
    """useapi.net's documented error structure: ``{"error": "...", "code": 404}``."""
    body: dict[str, Any] = {"error": message}
    if code is not None:
        body["code"] = code
    return body


def video_urls(record: dict[str, Any]) -> list[str]:
    """Read URLs back the way clients do: ``media[].videoUrl`` then the older ``operations[]`` forms."""
    response = record.get("response") or {}
    if response.get("media"):
        return [m["videoUrl"] for m in response["media"]]
    out: list[str] = []
    for op in response.get("operations") or []:
        video = op.get("video") or op.get("operation", {}).get("metadata", {}).get("video") or {}
        out.append(video["fifeUrl"])
    return out


def send(url: str, body: dict[str, Any], *, timeout: float = 30.0) -> httpx.Response:
    """POST the job record to ``replyUrl``; useapi.net documents no timeout, 30 s is assumed."""
    with httpx.Client(timeout=timeout) as client:
        return client.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
