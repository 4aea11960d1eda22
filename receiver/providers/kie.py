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

from receiver.errors import InvalidPayload, Rejected
from receiver.event import Provider, TaskEvent, TaskStatus, Verification
from receiver.payload import get_int, get_object, get_str, lower_headers, maybe_json
from receiver.urls import parse_url_list

TIMESTAMP_HEADER = "x-webhook-timestamp"
SIGNATURE_HEADER = "x-webhook-signature"
SUCCESS_CODE = 200


def sign(key: str, task_id: str, timestamp: int | str) -> str:
    """The documented signature, as kie.ai computes it (used by the verifier, the simulator and tests)."""
    mac = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def task_id_of(body: Mapping[str, Any]) -> str:
    """The callback's task id from any of its three documented places; all present ones must agree."""
    data = body.get("data")
    candidates: list[tuple[str, Any]] = [("taskId", body.get("taskId"))]
    if isinstance(data, dict):
        candidates += [("data.taskId", data.get("taskId")), ("data.task_id", data.get("task_id"))]
    present = [(path, value) for path, value in candidates if value is not None]
    if not present:
        raise InvalidPayload("taskId is missing (looked at data.taskId, data.task_id and taskId)")
    for path, value in present:
        if not isinstance(value, str) or not value.strip() or any("\ud800" <= c <= "\udfff" for c in value):
            raise InvalidPayload(f"{path}: expected a non-empty string")
    values = {value for _, value in present}
    if len(values) > 1:
        raise InvalidPayload("taskId fields disagree: " + ", ".join(f"{p}={v!r}" for p, v in present))
    return str(present[0][1])


def has_signature(headers: Mapping[str, str]) -> bool:
    lowered = lower_headers(headers)
    return TIMESTAMP_HEADER in lowered and SIGNATURE_HEADER in lowered


def verify_signature(
    headers: Mapping[str, str], task_id: str, keys: Sequence[str], *, now: float, tolerance_s: int
) -> None:
    """Raise :class:`Rejected` unless the headers carry a fresh signature of ``task_id`` by one of ``keys``."""
    lowered = lower_headers(headers)
    ts_raw = lowered.get(TIMESTAMP_HEADER)
    sig_raw = lowered.get(SIGNATURE_HEADER)
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
        raise Rejected(f"timestamp {int(ts - now)} s in the future (tolerance {tolerance_s} s)", reason="timestamp_future")
    try:
        given = base64.b64decode(sig_raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("X-Webhook-Signature is not valid base64", reason="signature_malformed") from None
    if len(given) != hashlib.sha256().digest_size:
        raise Rejected("X-Webhook-Signature has the wrong length for HMAC-SHA256", reason="signature_malformed")
    message = f"{task_id}.{ts_text}".encode()
    matched = False
    for key in keys:  # every key is tried (rotation); no early exit, to keep timing independent of which
        expected = hmac.new(key.encode(), message, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise Rejected("signature does not match any configured key", reason="signature_mismatch")


def parse(body: Mapping[str, Any], *, verification: Verification) -> TaskEvent:
    """Turn a decoded kie.ai callback body into a :class:`TaskEvent`."""
    task_id = task_id_of(body)
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
            provider=Provider.KIE.value,
            task_id=task_id,
            status=TaskStatus.SUCCEEDED,
            result_urls=tuple(urls),
            kind=kind,
            extra=extra,
            verification=verification,
            provider_status=str(code),
        )
    return TaskEvent(
        provider=Provider.KIE.value,
        task_id=task_id,
        status=TaskStatus.FAILED,
        failure_code=str(code),
        failure_message=msg or None,
        kind=kind,
        extra=extra,
        verification=verification,
        provider_status=str(code),
    )
