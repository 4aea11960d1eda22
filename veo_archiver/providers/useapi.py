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
from veo_archiver.payload import as_object, get_int, get_object, get_str, task_id_value
from veo_archiver.providers.base import ProviderSpec
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
    status_text = get_str(body, "status", path="status")
    assert status_text is not None
    status = _STATUSES.get(status_text.strip().lower(), TaskStatus.UNKNOWN)
    request = get_object(body, "request", path="request", required=False) or {}
    response = get_object(body, "response", path="response", required=False) or {}
    media = _media(response)
    operations = _operations(response)
    urls = media.urls or operations.urls
    ids = media.ids or operations.ids

    extra: dict[str, Any] = {}
    reply_ref = _reply_ref(body, request)
    if reply_ref is not None:
        extra["reply_ref"] = reply_ref
    if ids:
        extra["media_generation_ids"] = ids
    if media.thumbnails:
        extra["thumbnail_urls"] = media.thumbnails
    if media.errors:
        extra["media_errors"] = media.errors
    for key, name in (("type", "type"), ("created", "created_at"), ("updated", "updated_at")):
        value = _opt_str(body, key, key)
        if value:
            extra[name] = value
    model = _opt_str(request, "model", "request.model")
    if model:
        extra["model"] = model
    count = get_int(request, "count", path="request.count", required=False)
    if count is not None:
        extra["count"] = count
    source = _opt_str(request, "mediaGenerationId", "request.mediaGenerationId")
    if source:
        extra["source_media_generation_id"] = source

    code, message = _failure(body, response, media.errors)
    failed = status is TaskStatus.FAILED
    return TaskEvent(
        provider="useapi",
        task_id=job_id,
        status=status,
        result_urls=tuple(urls) if status is TaskStatus.SUCCEEDED else (),
        failure_code=code if failed else None,
        failure_message=message if failed else None,
        kind="extend" if source else None,  # only POST /videos/extend takes a source mediaGenerationId
        extra=extra,
        verification=verification,
        provider_status=status_text,
    )


class _Found:
    def __init__(self) -> None:
        self.urls: list[str] = []
        self.ids: list[str] = []
        self.thumbnails: list[str] = []
        self.errors: list[dict[str, Any]] = []


def _media(response: Mapping[str, Any]) -> _Found:
    """The current schema: ``response.media[]``, one entry per video variation."""
    found = _Found()
    for index, path, item in _items(response, "media"):
        found.urls += _url(item, "videoUrl", f"{path}.videoUrl")
        found.thumbnails += _url(item, "thumbnailUrl", f"{path}.thumbnailUrl")
        media_id = _opt_str(item, "mediaGenerationId", f"{path}.mediaGenerationId")
        if media_id:
            found.ids.append(media_id)
        meta = get_object(item, "mediaMetadata", path=f"{path}.mediaMetadata", required=False) or {}
        state = get_object(meta, "mediaStatus", path=f"{path}.mediaMetadata.mediaStatus", required=False) or {}
        epath = f"{path}.mediaMetadata.mediaStatus.error"
        error = get_object(state, "error", path=epath, required=False)
        if error:
            entry: dict[str, Any] = {"index": index}
            code = _opaque_code(error, "code", f"{epath}.code")
            text = _opt_str(error, "message", f"{epath}.message")
            if code:
                entry["code"] = code
            if text:
                entry["message"] = text
            found.errors.append(entry)
    found.urls = parse_url_list(found.urls, field="response.media[].videoUrl")  # drops duplicates
    return found


def _operations(response: Mapping[str, Any]) -> _Found:
    """The Nov 2025 schema: ``response.operations[]``, ``video`` or ``operation.metadata.video``."""
    found = _Found()
    for _, path, item in _items(response, "operations"):
        video = get_object(item, "video", path=f"{path}.video", required=False) or {}
        operation = get_object(item, "operation", path=f"{path}.operation", required=False) or {}
        metadata = get_object(operation, "metadata", path=f"{path}.operation.metadata", required=False) or {}
        meta_path = f"{path}.operation.metadata.video"
        meta_video = get_object(metadata, "video", path=meta_path, required=False) or {}
        primary = _url(video, "fifeUrl", f"{path}.video.fifeUrl")
        secondary = _url(meta_video, "fifeUrl", f"{meta_path}.fifeUrl")
        found.urls += primary or secondary
        media_id = _opt_str(video, "mediaGenerationId", f"{path}.video.mediaGenerationId")
        meta_id = _opt_str(meta_video, "mediaGenerationId", f"{meta_path}.mediaGenerationId")
        media_id = media_id or meta_id
        if media_id:
            found.ids.append(media_id)
    found.urls = parse_url_list(found.urls, field="response.operations[].video.fifeUrl")
    return found


def _items(parent: Mapping[str, Any], key: str) -> list[tuple[int, str, Mapping[str, Any]]]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidPayload(f"response.{key}: expected a list, got {type(value).__name__}")
    items: list[tuple[int, str, Mapping[str, Any]]] = []
    for index, item in enumerate(value):
        path = f"response.{key}[{index}]"
        if not isinstance(item, dict):
            raise InvalidPayload(f"{path}: expected an object, got {type(item).__name__}")
        items.append((index, path, item))
    return items


def _url(parent: Mapping[str, Any], key: str, path: str) -> list[str]:
    """One optional URL field as a list of zero or one URL (``""`` counts as absent)."""
    value = parent.get(key)
    if value is None or value == "":
        return []
    return parse_url_list([value], field=path)


def reply_ref(body: Mapping[str, Any]) -> str | None:
    """The ``replyRef`` we registered, echoed at the top level or in the echoed ``request``: it may carry our
    callback-URL token (``token=<t>``). Read before any proof, so it never raises: the token decides."""
    request = body.get("request")
    refs = [body.get("replyRef"), request.get("replyRef") if isinstance(request, Mapping) else None]
    return next((r for r in refs if isinstance(r, str) and r), None)


def _reply_ref(body: Mapping[str, Any], request: Mapping[str, Any]) -> str | None:
    """Our own ``replyRef``: echoed at the top level or inside the echoed ``request``; both must agree."""
    top = _opt_str(body, "replyRef", "replyRef")
    nested = _opt_str(request, "replyRef", "request.replyRef")
    if top and nested and top != nested:
        raise InvalidPayload(f"replyRef fields disagree: replyRef={top!r}, request.replyRef={nested!r}")
    return top or nested or None


def _failure(
    body: Mapping[str, Any], response: Mapping[str, Any], media_errors: list[dict[str, Any]]
) -> tuple[str | None, str | None]:
    """Failure code and message: ``error`` (string or object), then ``code``, then the nested errors."""
    codes: list[str | None] = []
    messages: list[str | None] = []
    error = body.get("error")
    if isinstance(error, str):
        messages.append(error)
    elif isinstance(error, dict):
        codes += [_opaque_code(error, "code", "error.code"), _opt_str(error, "status", "error.status")]
        messages.append(_opt_str(error, "message", "error.message"))
    elif error is not None:
        raise InvalidPayload(f"error: expected a string or an object, got {type(error).__name__}")
    codes.append(_opaque_code(body, "code", "code"))
    nested = get_object(response, "error", path="response.error", required=False) or {}
    codes += [
        _opaque_code(nested, "code", "response.error.code"),
        _opt_str(nested, "status", "response.error.status"),
    ]
    messages.append(_opt_str(nested, "message", "response.error.message"))
    for entry in media_errors:
        codes.append(entry.get("code"))
        messages.append(entry.get("message"))
    code = next((c for c in codes if c and c.strip()), None)
    message = next((m for m in messages if m and m.strip()), None)
    return code, message


def _opt_str(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is None or isinstance(value, str):  # what get_str answers for these, without a second call
        return value
    return get_str(parent, key, path=path, required=False)  # raises, naming the path


def _opaque_code(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidPayload(f"{path}: expected a string or an integer, got {type(value).__name__}")
    return str(value) if str(value).strip() else None


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
