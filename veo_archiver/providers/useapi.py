"""useapi.net Google Flow job callbacks (``replyUrl``) and ``GET /jobs/{jobid}`` answers. Pure.

useapi POSTs the full job record, the shape of ``GET /v1/google-flow/jobs/{jobid}``, once per status change
(``created``, ``started``, ``completed``, ``failed``), so only the last two are terminal (seed 003,
https://useapi.net/docs/api-google-flow-v1/post-google-flow-videos-extend). The job id is ``jobid``; client
code also reads ``jobId``, so both are accepted and must agree when both are present. Videos are in
``response.media[].videoUrl`` (current schema) or, in the Nov 2025 schema,
``response.operations[].video.fifeUrl`` / ``response.operations[].operation.metadata.video.fifeUrl``;
``count`` up to 4 gives several, kept in order. No signature is documented: a worker confirms through
``GET /jobs/{jobid}`` (the jobid percent-encoded: it holds ``:`` and ``@``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from veo_archiver.errors import InvalidPayload, PermanentError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.payload import as_object, task_id_value
from veo_archiver.providers.base import ProviderSpec
from veo_archiver.providers.shape import Code, Items, OptInt, OptObj, OptStr, Shape, Str, TextOr, Url
from veo_archiver.providers.status_api import api_base, bearer_headers
from veo_archiver.urls import parse_url_list

_STATUSES = {
    "created": TaskStatus.IN_PROGRESS,
    "started": TaskStatus.IN_PROGRESS,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}
# GET /jobs/{jobid} for a job that does not exist: undocumented; useapi answers errors as
# {"error": "...", "code": <http status>} (seed 003), so a 404 or a "not found" text without a job record.
_NOT_FOUND_TEXT = re.compile(r"not\s*found|not\s*exist|no\s+such", re.IGNORECASE)


class _Error(Shape):
    """``error`` as an object, and ``response.error``."""

    code = Code("code", "a string or an integer")
    status = OptStr("status")
    message = OptStr("message")


class _MediaStatus(Shape):
    error = OptObj(_Error, "error")


class _MediaMetadata(Shape):
    media_status = OptObj(_MediaStatus, "mediaStatus")


class _Media(Shape):
    """One entry of ``response.media[]`` (the current schema): one video variation."""

    video_url = Url("videoUrl")
    thumbnail_url = Url("thumbnailUrl")
    media_generation_id = OptStr("mediaGenerationId")
    metadata = OptObj(_MediaMetadata, "mediaMetadata")


class _Video(Shape):
    fife_url = Url("fifeUrl")
    media_generation_id = OptStr("mediaGenerationId")


class _OperationMetadata(Shape):
    video = OptObj(_Video, "video")


class _OperationInner(Shape):
    metadata = OptObj(_OperationMetadata, "metadata")


class _Operation(Shape):
    """One entry of ``response.operations[]`` (the Nov 2025 schema)."""

    video = OptObj(_Video, "video")
    operation = OptObj(_OperationInner, "operation")


class _Response(Shape):
    media = Items(_Media, "media")
    operations = Items(_Operation, "operations")
    error = OptObj(_Error, "error")


class _Request(Shape):
    """The job's request, echoed."""

    model = OptStr("model")
    count = OptInt("count")
    media_generation_id = OptStr("mediaGenerationId")  # the source video: only POST /videos/extend takes one
    reply_ref = OptStr("replyRef")


class Job(Shape):
    """A job record: a callback body, and the answer of ``GET /jobs/{jobid}``."""

    status = Str("status")
    request = OptObj(_Request, "request")
    response = OptObj(_Response, "response")
    reply_ref = OptStr("replyRef")
    job_type = OptStr("type")
    created = OptStr("created")
    updated = OptStr("updated")
    error = TextOr(_Error, "error", "a string or an object")
    code = Code("code", "a string or an integer")


def task_id_of(body: Mapping[str, Any]) -> str:
    """The job id from ``jobid`` (documented) or ``jobId`` (client code); both present must agree."""
    body = as_object(body)
    jobid, job_id = body.get("jobid"), body.get("jobId")
    if jobid is None or job_id is None:  # one place (the usual case) or none
        if jobid is None and job_id is None:
            raise InvalidPayload("jobid is missing (looked at jobid and jobId)")
        return task_id_value(job_id, "jobId") if jobid is None else task_id_value(jobid, "jobid")
    first, second = task_id_value(jobid, "jobid"), task_id_value(job_id, "jobId")
    if first != second:
        raise InvalidPayload(f"jobid fields disagree: jobid={first!r}, jobId={second!r}")
    return first


def parse(body: Mapping[str, Any], *, verification: Verification) -> TaskEvent:
    """Turn a decoded useapi.net job record into a :class:`TaskEvent`."""
    return _event(as_object(body), verification)


def status_request(base_url: str, task_id: str, api_key: str) -> tuple[str, dict[str, str]]:
    """URL and headers of ``GET {base}/v1/google-flow/jobs/{jobid}``, the jobid fully percent-encoded."""
    tid = task_id_value(task_id, "jobid")
    if tid.strip() in (".", ".."):
        raise InvalidPayload(f"jobid: {tid!r} is not a job id")
    url = f"{api_base('useapi.net', base_url)}/v1/google-flow/jobs/{quote(tid, safe='')}"
    return url, bearer_headers("useapi.net", api_key)


def parse_status(body: Mapping[str, Any], task_id: str) -> TaskEvent:
    """Turn a ``GET /jobs/{jobid}`` answer for ``task_id`` into an event verified by the provider API."""
    body = as_object(body)
    if body.get("status") is None:  # not a job record: an error answer
        error = body.get("error")
        text = error if isinstance(error, str) else ""
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        if (body.get("code") == 404 or _NOT_FOUND_TEXT.search(text)) and "account" not in text.lower():
            raise PermanentError(f"useapi.net knows no job {task_id!r}: {text[:200]!r}", reason="unknown_task")
        raise InvalidPayload(f"status: the answer is not a job record (error: {text[:200]!r})")
    got = task_id_of(body)
    if got != task_id:
        raise InvalidPayload(f"jobid: the answer is for job {got!r}, not {task_id!r}")
    return _event(body, Verification.PROVIDER_API)


def _event(body: Mapping[str, Any], verification: Verification) -> TaskEvent:
    job_id = task_id_of(body)
    job = Job(body)
    status = _STATUSES.get(job.status.strip().lower(), TaskStatus.UNKNOWN)
    request, response = job.request, job.response  # read in the order their errors have always come in
    media = _media(response.media)
    operations = _operations(response.operations)
    extra = _extra(job, media, ids=media.ids or operations.ids)
    code, message = _failure(job, media.errors)
    failed = status is TaskStatus.FAILED
    return TaskEvent(
        provider="useapi",
        task_id=job_id,
        status=status,
        result_urls=tuple(media.urls or operations.urls) if status is TaskStatus.SUCCEEDED else (),
        failure_code=code if failed else None,
        failure_message=message if failed else None,
        kind="extend" if request.media_generation_id else None,
        extra=extra,
        verification=verification,
        provider_status=job.status,
    )


def _extra(job: Job, media: _Found, *, ids: list[str]) -> dict[str, Any]:
    """What the event keeps of the record beyond its status: every field that is present and not empty."""
    request = job.request
    values: dict[str, Any] = {
        "reply_ref": _reply_ref(job),
        "media_generation_ids": ids,
        "thumbnail_urls": media.thumbnails,
        "media_errors": media.errors,
        "type": job.job_type,
        "created_at": job.created,
        "updated_at": job.updated,
        "model": request.model,
    }
    extra = {name: value for name, value in values.items() if value}
    if request.count is not None:
        extra["count"] = request.count
    if request.media_generation_id:
        extra["source_media_generation_id"] = request.media_generation_id
    return extra


class _Found:
    def __init__(self) -> None:
        self.urls: list[str] = []
        self.ids: list[str] = []
        self.thumbnails: list[str] = []
        self.errors: list[dict[str, Any]] = []


def _media(items: list[_Media]) -> _Found:
    """The current schema: ``response.media[]``, one entry per video variation."""
    found = _Found()
    for index, item in enumerate(items):
        found.urls += item.video_url
        found.thumbnails += item.thumbnail_url
        if item.media_generation_id:
            found.ids.append(item.media_generation_id)
        error = item.metadata.media_status.error
        if error.raw:
            entry: dict[str, Any] = {"index": index}
            code, text = error.code, error.message
            if code:
                entry["code"] = code
            if text:
                entry["message"] = text
            found.errors.append(entry)
    found.urls = parse_url_list(found.urls, field="response.media[].videoUrl")  # drops duplicates
    return found


def _operations(items: list[_Operation]) -> _Found:
    """The Nov 2025 schema: ``response.operations[]``, ``video`` or ``operation.metadata.video``."""
    found = _Found()
    for item in items:
        video, meta_video = item.video, item.operation.metadata.video
        primary, secondary = video.fife_url, meta_video.fife_url
        found.urls += primary or secondary
        media_id, meta_id = video.media_generation_id, meta_video.media_generation_id
        media_id = media_id or meta_id
        if media_id:
            found.ids.append(media_id)
    found.urls = parse_url_list(found.urls, field="response.operations[].video.fifeUrl")
    return found


def reply_ref(body: Mapping[str, Any]) -> str | None:
    """The ``replyRef`` we registered, echoed at the top level or in the echoed ``request``: it may carry our
    callback-URL token (``token=<t>``). Read before any proof, so it never raises: the token decides."""
    request = body.get("request")
    refs = [body.get("replyRef"), request.get("replyRef") if isinstance(request, Mapping) else None]
    return next((r for r in refs if isinstance(r, str) and r), None)


def _reply_ref(job: Job) -> str | None:
    """Our own ``replyRef``: echoed at the top level or inside the echoed ``request``; both must agree."""
    top, nested = job.reply_ref, job.request.reply_ref
    if top and nested and top != nested:
        raise InvalidPayload(f"replyRef fields disagree: replyRef={top!r}, request.replyRef={nested!r}")
    return top or nested or None


def _failure(job: Job, media_errors: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """Failure code and message: ``error`` (string or object), then ``code``, then the nested errors."""
    codes: list[str | None] = []
    messages: list[str | None] = []
    error = job.error
    if isinstance(error, str):
        messages.append(error)
    elif error is not None:
        codes += [error.code, error.status]
        messages.append(error.message)
    codes.append(job.code)
    nested = job.response.error
    codes += [nested.code, nested.status]
    messages.append(nested.message)
    for entry in media_errors:
        codes.append(entry.get("code"))
        messages.append(entry.get("message"))
    code = next((c for c in codes if c and c.strip()), None)
    message = next((m for m in messages if m and m.strip()), None)
    return code, message


SPEC = ProviderSpec(
    name="useapi",
    label="useapi.net",
    api_key_var="USEAPI_API_TOKEN",
    default_api_base="https://api.useapi.net",
    url_lifetime_s=6 * 3600,  # unconfirmed; its assets endpoint says ~6 h
    parse=parse,
    status_requests=lambda base, task_id, key: [status_request(base, task_id, key)],
    body_proof=reply_ref,
    parse_status=parse_status,
)
