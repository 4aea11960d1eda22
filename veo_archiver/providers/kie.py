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
from veo_archiver.payload import (
    get_int,
    get_object,
    get_str,
    header_value,
    hmac_sha256,
    is_task_id_text,
    maybe_json,
    task_id_value,
)
from veo_archiver.providers.base import ProviderSpec
from veo_archiver.providers.status_api import api_base, bearer_headers
from veo_archiver.urls import parse_url_list

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


def parse(body: Mapping[str, Any], *, verification: Verification) -> TaskEvent:
    """Turn a decoded kie.ai callback body into a :class:`TaskEvent`."""
    return event_from(body, task_id_of(body), verification=verification)


def event_from(body: Mapping[str, Any], task_id: str, *, verification: Verification) -> TaskEvent:
    """:func:`parse`, given the ``task_id_of(body)`` a signature check has already read."""
    code = get_int(body, "code", path="code")
    assert code is not None
    msg = get_str(body, "msg", path="msg", required=False) or ""
    data = get_object(body, "data", path="data")
    assert data is not None
    info = get_object(data, "info", path="data.info", required=False) or {}
    extra: dict[str, Any] = {"code": code, "msg": msg}
    for name in ("fallbackFlag", "creditsConsumed", "callbackType"):
        if name in data:
            extra[name] = data[name]
    if "promptJson" in data:
        extra["prompt"] = maybe_json(data["promptJson"])
    if isinstance(info.get("resolution"), str):
        extra["resolution"] = info["resolution"]
    origin_urls = parse_url_list(info.get("originUrls"), field="data.info.originUrls")
    if origin_urls:
        extra["origin_urls"] = origin_urls
    image_urls = parse_url_list(info.get("imageUrls"), field="data.info.imageUrls")
    if image_urls:
        extra["image_urls"] = image_urls
    kind = "4k" if (image_urls or "4k" in msg.lower()) else ("extend" if "extension" in msg.lower() else None)
    if code == SUCCESS_CODE:
        urls = parse_url_list(info.get("resultUrls"), field="data.info.resultUrls")
        return TaskEvent(
            provider="kie",
            task_id=task_id,
            status=TaskStatus.SUCCEEDED,
            result_urls=tuple(urls),
            kind=kind,
            extra=extra,
            verification=verification,
            provider_status=str(code),
        )
    return TaskEvent(
        provider="kie",
        task_id=task_id,
        status=TaskStatus.FAILED,
        failure_code=str(code),
        failure_message=msg or None,
        kind=kind,
        extra=extra,
        verification=verification,
        provider_status=str(code),
    )


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


def parse_status(body: Mapping[str, Any], task_id: str) -> TaskEvent:
    """Turn a record-info answer for ``task_id`` into a :class:`TaskEvent` verified by the provider API."""
    if not isinstance(body, Mapping):
        raise InvalidPayload(f"body: expected a JSON object, got {type(body).__name__}")
    code = get_int(body, "code", path="code")
    assert code is not None
    msg = get_str(body, "msg", path="msg", required=False) or ""
    if code != SUCCESS_CODE:
        if code == _UNKNOWN_TASK_CODE and any(m in msg.lower() for m in UNKNOWN_TASK_MESSAGES):
            raise PermanentError(f"kie.ai knows no task {task_id!r}: {msg[:200]!r}", reason="unknown_task")
        raise InvalidPayload(f"code: record-info answered {code} {msg[:200]!r}")
    data = get_object(body, "data", path="data")
    assert data is not None
    got = task_id_value(data.get("taskId"), "data.taskId")
    if got != task_id:
        raise InvalidPayload(f"data.taskId: the answer is for task {got!r}, not {task_id!r}")
    response = get_object(data, "response", path="data.response", required=False) or {}
    inner_id = response.get("taskId")
    if inner_id is not None and inner_id != task_id:
        raise InvalidPayload(f"data.response.taskId: the answer is for task {inner_id!r}, not {task_id!r}")
    flag = get_int(data, "successFlag", path="data.successFlag")
    assert flag is not None
    status = _SUCCESS_FLAGS.get(flag, TaskStatus.UNKNOWN)
    # the schema puts resultUrls in data.response; the quickstart's polling code reads data.resultUrls
    urls = parse_url_list(response.get("resultUrls"), field="data.response.resultUrls")
    top_urls = parse_url_list(data.get("resultUrls"), field="data.resultUrls")

    extra: dict[str, Any] = {"successFlag": flag}
    for key, name in (
        ("originUrls", "origin_urls"),
        ("fullResultUrls", "full_result_urls"),
        ("imageUrls", "image_urls"),
    ):
        found = parse_url_list(response.get(key), field=f"data.response.{key}")
        if found:
            extra[name] = found
    resolution = get_str(response, "resolution", path="data.response.resolution", required=False)
    if resolution:
        extra["resolution"] = resolution
    fallback = data.get("fallbackFlag")
    if fallback is not None:
        if not isinstance(fallback, bool):
            raise InvalidPayload(f"data.fallbackFlag: expected a boolean, got {type(fallback).__name__}")
        extra["fallbackFlag"] = fallback
    # documented as numbers but shown as "YYYY-MM-DD HH:MM:SS" (time zone unstated): kept as they are
    for key in ("createTime", "completeTime"):
        value = data.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise InvalidPayload(f"data.{key}: expected a string or a number, got {type(value).__name__}")
            extra[key] = value
    param_json = data.get("paramJson")
    if param_json is not None:
        if not isinstance(param_json, str | dict):
            raise InvalidPayload(f"data.paramJson: expected a JSON string, got {type(param_json).__name__}")
        extra["prompt"] = maybe_json(param_json)
    media_ids = data.get("mediaIds")
    if media_ids is not None:
        if not isinstance(media_ids, list) or not all(isinstance(m, str) for m in media_ids):
            raise InvalidPayload("data.mediaIds: expected a list of strings")
        extra["mediaIds"] = media_ids
    error_code = data.get("errorCode")
    if error_code is not None and (isinstance(error_code, bool) or not isinstance(error_code, str | int)):
        raise InvalidPayload(f"data.errorCode: expected an integer, got {type(error_code).__name__}")
    error_message = get_str(data, "errorMessage", path="data.errorMessage", required=False)
    failed = status is TaskStatus.FAILED
    failure_code = str(error_code) if error_code is not None and str(error_code).strip() else None
    return TaskEvent(
        provider="kie",
        task_id=task_id,
        status=status,
        result_urls=tuple(urls or top_urls) if status is TaskStatus.SUCCEEDED else (),
        failure_code=failure_code if failed else None,
        failure_message=error_message if failed and error_message and error_message.strip() else None,
        kind="4k" if media_ids is not None or "image_urls" in extra else None,
        extra=extra,
        verification=Verification.PROVIDER_API,
        provider_status=str(flag),
    )


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
