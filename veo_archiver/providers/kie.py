"""kie.ai Veo 3.1 callbacks (generate, extend, 4K): signature rule and payload parsing. Pure.

Signature (https://docs.kie.ai/common-api/webhook-verification), opt-in per account:
``X-Webhook-Signature = base64(HMAC-SHA256(webhookHmacKey, taskId + "." + X-Webhook-Timestamp))``.
Only the task id and the timestamp are signed, not the body: a worker confirms URLs through
``record-info`` when an API key is configured. The docs disagree on where the task id lives
(``data.taskId``, ``data.task_id``, top-level ``taskId``): all three are accepted, and when several are
present they must agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from veo_archiver.errors import InvalidPayload, PermanentError, Rejected
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.payload import as_object, header_value, hmac_sha256, is_task_id_text, maybe_json, task_id_value
from veo_archiver.providers.base import ProviderSpec
from veo_archiver.providers.shape import (
    Code,
    Flag,
    Int,
    JsonText,
    Obj,
    OptObj,
    OptStr,
    Raw,
    Scalar,
    Shape,
    Strings,
    TaskId,
    Urls,
)
from veo_archiver.providers.status_api import api_base, bearer_headers

TIMESTAMP_HEADER = "x-webhook-timestamp"
SIGNATURE_HEADER = "x-webhook-signature"
SUCCESS_CODE = 200
_SHA256_SIZE = hashlib.sha256().digest_size  # once: each hashlib.sha256() costs an OpenSSL digest fetch


def sign(key: str, task_id: str, timestamp: int | str) -> str:
    """The documented signature, as kie.ai computes it (used by the verifier, the simulator and tests)."""
    mac = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def task_id_of(body: Mapping[str, Any]) -> str:
    """The callback's task id from any of its three documented places; all present ones must agree."""
    data = body.get("data")
    if not isinstance(data, dict):
        data = {}
    top, nested, snake = body.get("taskId"), data.get("taskId"), data.get("task_id")
    if top is None and snake is None and is_task_id_text(nested):
        return str(nested)  # the usual callback: data.taskId alone, and well formed
    places = (("taskId", top), ("data.taskId", nested), ("data.task_id", snake))
    present = [(path, value) for path, value in places if value is not None]
    if not present:
        raise InvalidPayload("taskId is missing (looked at data.taskId, data.task_id and taskId)")
    for path, value in present:
        if not is_task_id_text(value):
            raise InvalidPayload(f"{path}: expected a non-empty string")
    first = present[0][1]
    if len(present) > 1 and any(value != first for _, value in present):
        raise InvalidPayload("taskId fields disagree: " + ", ".join(f"{p}={v!r}" for p, v in present))
    return str(first)


def signature_headers(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The ``X-Webhook-Timestamp`` and ``X-Webhook-Signature`` values (any case), ``None`` where absent."""
    return header_value(headers, TIMESTAMP_HEADER), header_value(headers, SIGNATURE_HEADER)


def has_signature(headers: Mapping[str, str]) -> bool:
    timestamp, signature = signature_headers(headers)
    return timestamp is not None and signature is not None


def verify_signature(
    headers: Mapping[str, str], task_id: str, keys: Sequence[str], *, now: float, tolerance_s: int
) -> None:
    """Raise :class:`Rejected` unless the headers hold a fresh signature of ``task_id`` by one of ``keys``."""
    ts_raw, sig_raw = signature_headers(headers)
    check_signature(ts_raw, sig_raw, task_id, keys, now=now, tolerance_s=tolerance_s)


def check_signature(
    ts_raw: str | None, sig_raw: str | None, task_id: str, keys: Sequence[str], *, now: float, tolerance_s: int
) -> None:
    """:func:`verify_signature` on the header values already read by :func:`signature_headers`."""
    if ts_raw is None or sig_raw is None:
        missing = [h for h, v in ((TIMESTAMP_HEADER, ts_raw), (SIGNATURE_HEADER, sig_raw)) if v is None]
        raise Rejected(f"missing signature header(s): {', '.join(missing)}", reason="signature_missing")
    ts_text = ts_raw.strip()
    if not (ts_text.isascii() and ts_text.isdigit()) or len(ts_text) > 12:
        raise Rejected("X-Webhook-Timestamp is not a Unix time in seconds", reason="timestamp_malformed")
    ts = int(ts_text)
    if ts < now - tolerance_s:
        raise Rejected(f"stale timestamp: {int(now - ts)} s old (tolerance {tolerance_s} s)", reason="timestamp_stale")
    if ts > now + tolerance_s:
        raise Rejected(
            f"timestamp {int(ts - now)} s in the future (tolerance {tolerance_s} s)",
            reason="timestamp_future",
        )
    try:  # base64.b64decode(validate=True) without its Python wrappers: the same strict decoding, in C
        given = binascii.a2b_base64(sig_raw.strip(), strict_mode=True)
    except (binascii.Error, ValueError):
        raise Rejected("X-Webhook-Signature is not valid base64", reason="signature_malformed") from None
    if len(given) != _SHA256_SIZE:
        raise Rejected("X-Webhook-Signature has the wrong length for HMAC-SHA256", reason="signature_malformed")
    message = f"{task_id}.{ts_text}".encode()
    matched = False
    for key in keys:  # every key is tried (rotation); no early exit, to keep timing independent of which
        matched |= hmac.compare_digest(hmac_sha256(key.encode(), message), given)
    if not matched:
        raise Rejected("signature does not match any configured key", reason="signature_mismatch")


class _CallbackInfo(Shape):
    resolution = Raw("resolution")
    origin_urls = Urls("originUrls")
    image_urls = Urls("imageUrls")
    result_urls = Urls("resultUrls")  # read for a successful task only


class _CallbackData(Shape):
    info = OptObj(_CallbackInfo, "info")
    prompt_json = Raw("promptJson")


class _Envelope(Shape):
    """What every kie.ai body opens with: ``code`` (200 = success) and ``msg``."""

    code = Int("code")
    msg = OptStr("msg")


class Callback(_Envelope):
    data = Obj(_CallbackData, "data")


#: ``data`` members a callback's event keeps as sent, when present (``null`` included)
_CALLBACK_EXTRAS = ("fallbackFlag", "creditsConsumed", "callbackType")


def parse(body: Mapping[str, Any], *, verification: Verification) -> TaskEvent:
    """Turn a decoded kie.ai callback body into a :class:`TaskEvent`."""
    return event_from(body, task_id_of(body), verification=verification)


def event_from(body: Mapping[str, Any], task_id: str, *, verification: Verification) -> TaskEvent:
    """:func:`parse`, given the ``task_id_of(body)`` a signature check has already read."""
    callback = Callback(body)
    code, msg, data = callback.code, callback.msg or "", callback.data
    info = data.info
    extra: dict[str, Any] = {"code": code, "msg": msg}
    extra |= {name: data.raw[name] for name in _CALLBACK_EXTRAS if name in data.raw}
    if "promptJson" in data.raw:
        extra["prompt"] = maybe_json(data.prompt_json)
    if isinstance(info.resolution, str):
        extra["resolution"] = info.resolution
    extra |= _nonempty(origin_urls=info.origin_urls, image_urls=info.image_urls)
    lowered = msg.lower()
    kind = "4k" if (info.image_urls or "4k" in lowered) else ("extend" if "extension" in lowered else None)
    succeeded = code == SUCCESS_CODE
    return TaskEvent(
        provider="kie",
        task_id=task_id,
        status=TaskStatus.SUCCEEDED if succeeded else TaskStatus.FAILED,
        result_urls=tuple(info.result_urls) if succeeded else (),
        failure_code=None if succeeded else str(code),
        failure_message=None if succeeded else msg or None,
        kind=kind,
        extra=extra,
        verification=verification,
        provider_status=str(code),
    )


def _nonempty(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value}


# --------------------------------------------------------------------------------------------------------
# status API: GET /api/v1/veo/record-info (https://docs.kie.ai/veo3-api/get-veo-3-video-details), the
# "authoritative source of truth" a worker confirms a callback against.

RECORD_INFO_PATH = "/api/v1/veo/record-info"
#: body ``code`` 422 texts that mean the task does not exist (or is older than the 14 days record-info covers)
UNKNOWN_TASK_MESSAGES = ("record is null", "temporarily supports records within 14 days")
_UNKNOWN_TASK_CODE = 422
# successFlag: 0 generating, 1 success, 2 failed, 3 generation failed (the schema enum stops at 2)
_SUCCESS_FLAGS = {
    0: TaskStatus.IN_PROGRESS,
    1: TaskStatus.SUCCEEDED,
    2: TaskStatus.FAILED,
    3: TaskStatus.FAILED,
}


def status_request(base_url: str, task_id: str, api_key: str) -> tuple[str, dict[str, str]]:
    """URL and headers of ``GET {base}/api/v1/veo/record-info?taskId=…``."""
    tid = task_id_value(task_id, "taskId")
    url = f"{api_base('kie.ai', base_url)}{RECORD_INFO_PATH}?taskId={quote(tid, safe='')}"
    return url, bearer_headers("kie.ai", api_key)


class _RecordResponse(Shape):
    task_id = Raw("taskId")  # compared with the task asked about, when present
    result_urls = Urls("resultUrls")
    origin_urls = Urls("originUrls")
    full_result_urls = Urls("fullResultUrls")
    image_urls = Urls("imageUrls")
    resolution = OptStr("resolution")


# createTime/completeTime are documented as numbers but shown as "YYYY-MM-DD HH:MM:SS" (time zone
# unstated): kept as they are
class _Record(Shape):
    task_id = TaskId("taskId")
    response = OptObj(_RecordResponse, "response")
    success_flag = Int("successFlag")
    result_urls = Urls("resultUrls")  # the schema puts them in data.response; the quickstart reads them here
    fallback_flag = Flag("fallbackFlag")
    create_time = Scalar("createTime", "a string or a number")
    complete_time = Scalar("completeTime", "a string or a number")
    param_json = JsonText("paramJson")
    media_ids = Strings("mediaIds")
    error_code = Code("errorCode", "an integer")
    error_message = OptStr("errorMessage")


class RecordInfo(_Envelope):
    data = Obj(_Record, "data")


def parse_status(body: Mapping[str, Any], task_id: str) -> TaskEvent:
    """Turn a record-info answer for ``task_id`` into a :class:`TaskEvent` verified by the provider API."""
    data = _record_for(RecordInfo(as_object(body)), task_id)
    flag, response = data.success_flag, data.response
    status = _SUCCESS_FLAGS.get(flag, TaskStatus.UNKNOWN)
    urls, top_urls = response.result_urls, data.result_urls  # both checked, whatever the status
    extra: dict[str, Any] = {"successFlag": flag}
    extra |= _nonempty(
        origin_urls=response.origin_urls,
        full_result_urls=response.full_result_urls,
        image_urls=response.image_urls,
        resolution=response.resolution,
    )
    extra |= _present(
        fallbackFlag=data.fallback_flag,
        createTime=data.create_time,
        completeTime=data.complete_time,
        prompt=data.param_json,
        mediaIds=data.media_ids,
    )
    failed = status is TaskStatus.FAILED
    error_code, error_message = data.error_code, data.error_message
    return TaskEvent(
        provider="kie",
        task_id=task_id,
        status=status,
        result_urls=tuple(urls or top_urls) if status is TaskStatus.SUCCEEDED else (),
        failure_code=error_code if failed else None,
        failure_message=error_message if failed and error_message and error_message.strip() else None,
        kind="4k" if data.media_ids is not None or "image_urls" in extra else None,
        extra=extra,
        verification=Verification.PROVIDER_API,
        provider_status=str(flag),
    )


def _record_for(answer: RecordInfo, task_id: str) -> _Record:
    """The answer's ``data``, once the answer is known to be a success and about ``task_id``."""
    code, msg = answer.code, answer.msg or ""
    if code != SUCCESS_CODE:
        if code == _UNKNOWN_TASK_CODE and any(m in msg.lower() for m in UNKNOWN_TASK_MESSAGES):
            raise PermanentError(f"kie.ai knows no task {task_id!r}: {msg[:200]!r}", reason="unknown_task")
        raise InvalidPayload(f"code: record-info answered {code} {msg[:200]!r}")
    data = answer.data
    if data.task_id != task_id:
        raise InvalidPayload(f"data.taskId: the answer is for task {data.task_id!r}, not {task_id!r}")
    inner_id = data.response.task_id
    if inner_id is not None and inner_id != task_id:
        raise InvalidPayload(f"data.response.taskId: the answer is for task {inner_id!r}, not {task_id!r}")
    return data


def _present(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


SPEC = ProviderSpec(
    name="kie",
    label="kie.ai",
    api_key_var="KIE_API_KEY",
    default_api_base="https://api.kie.ai",
    url_lifetime_s=14 * 24 * 3600,  # files are kept 14 days
    parse=parse,
    status_requests=lambda base, task_id, key: [status_request(base, task_id, key)],
    parse_status=parse_status,
)
