"""Submitting a task to a provider through the archiver: one pure request builder per provider. No I/O.

:func:`build` takes the caller's JSON body for one provider operation and returns the request to send: the
provider's endpoint under its (configurable) API base, bearer headers with its API key, and the body with the
callback field pointed at this receiver. Every field the caller sent is kept, except the ones the archiver
must own for the task to reach it:

========  ===========================================  ====================================  ==========================
provider  endpoint (generate / extend / 4k)            fields set                            parent of an extend
========  ===========================================  ====================================  ==========================
kie       /api/v1/veo/generate, /extend, /get-4k-video ``callBackUrl``                       ``taskId``
apixo     /api/v1/generateTask/veo-3-1[-extend]        ``callback_url``, ``request_type``    ``input.taskId``
useapi    /v1/google-flow/videos[/extend]              ``replyUrl``, ``async: true``         ``mediaGenerationId``
evolink   /v1/videos/generations                       ``callback_url``                      ``base_video_task_id``
========  ===========================================  ====================================  ==========================

useapi.net's default mode is synchronous (its server holds the request until the video is done), so the
archiver asks for ``async: true``: the answer comes at once and the video arrives by ``replyUrl``.

:func:`task_id_of` reads the new task's id from the provider's answer; ``None`` means the provider did not
create a task (kie.ai and APIXO answer HTTP 200 with an error ``code`` in the body).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veo_archiver.errors import InvalidPayload, NotFound
from veo_archiver.providers.status_api import api_base, bearer_headers

GENERATE = "generate"
EXTEND = "extend"
FOUR_K = "4k"

#: the operations each provider offers through ``/submit``, and each one's path under the API base
PATHS: dict[str, dict[str, str]] = {
    "kie": {GENERATE: "/api/v1/veo/generate", EXTEND: "/api/v1/veo/extend", FOUR_K: "/api/v1/veo/get-4k-video"},
    "apixo": {GENERATE: "/api/v1/generateTask/veo-3-1", EXTEND: "/api/v1/generateTask/veo-3-1-extend"},
    "useapi": {GENERATE: "/v1/google-flow/videos", EXTEND: "/v1/google-flow/videos/extend"},
    "evolink": {GENERATE: "/v1/videos/generations", EXTEND: "/v1/videos/generations"},
}
LABELS = {"kie": "kie.ai", "apixo": "APIXO", "useapi": "useapi.net", "evolink": "EvoLink"}
#: where an extend body names the task it extends (a path of keys)
PARENT_FIELDS: dict[str, tuple[str, ...]] = {
    "kie": ("taskId",),
    "apixo": ("input", "taskId"),
    "useapi": ("mediaGenerationId",),
    "evolink": ("base_video_task_id",),
}
#: the 4K request names its source video too (kie.ai only); it is derived, not an extension
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {"kie": ("taskId",)}


@dataclass(frozen=True)
class SubmitRequest:
    provider: str
    operation: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    #: the task an extend continues (its id as the provider's extend endpoint takes it); None otherwise
    parent: str | None


def operations(provider: str) -> tuple[str, ...]:
    return tuple(PATHS.get(provider, {}))


def check_operation(provider: str, operation: str) -> None:
    if provider not in PATHS:
        raise NotFound(f"unknown provider {provider!r}; expected one of {', '.join(PATHS)}", reason="unknown_provider")
    if operation not in PATHS[provider]:
        raise NotFound(
            f"{provider} has no operation {operation!r}; expected one of {', '.join(PATHS[provider])}",
            reason="unknown_operation",
        )


def _dig(body: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _required_id(body: Mapping[str, Any], path: tuple[str, ...], why: str) -> str:
    value = _dig(body, path)
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"body.{'.'.join(path)}: {why} (a non-empty string)", reason="missing_parent")
    return value


def _callback_fields(provider: str, body: dict[str, Any], callback_url: str) -> None:
    if provider == "kie":
        body["callBackUrl"] = callback_url
    elif provider == "apixo":
        body["request_type"] = "callback"
        body["callback_url"] = callback_url
    elif provider == "useapi":
        body["replyUrl"] = callback_url
        body["async"] = True
    else:
        body["callback_url"] = callback_url


def build(
    provider: str, operation: str, body: Mapping[str, Any], *, callback_url: str, base_url: str, api_key: str
) -> SubmitRequest:
    """The request that submits ``body`` to ``provider``'s ``operation``, its callback aimed at ``callback_url``.

    Raises NotFound for an unknown provider or operation, InvalidPayload for a body that is not an object or
    an extend (or 4K) that names no parent, ConfigError for a bad base URL or key."""
    check_operation(provider, operation)
    if not isinstance(body, Mapping):
        raise InvalidPayload("body: expected a JSON object", reason="invalid_body")
    label = LABELS[provider]
    sent = dict(body)
    parent = None
    if operation == EXTEND:
        parent = _required_id(sent, PARENT_FIELDS[provider], f"an extend names the {label} task it continues")
    elif operation == FOUR_K:
        _required_id(sent, SOURCE_FIELDS[provider], f"a 4K request names the {label} task to upscale")
    if provider == "evolink" and operation == GENERATE and "base_video_task_id" in sent:
        raise InvalidPayload("body.base_video_task_id: that is an extend; submit it as `evolink extend`")
    _callback_fields(provider, sent, callback_url)
    headers = {**bearer_headers(label, api_key), "Content-Type": "application/json"}
    url = f"{api_base(label, base_url)}{PATHS[provider][operation]}"
    return SubmitRequest(provider, operation, url, headers, sent, parent)


def accepted(provider: str, status_code: int, answer: Any) -> bool:
    """Whether the provider accepted the submission (kie.ai and APIXO say so in the body's ``code``)."""
    if not 200 <= status_code < 300 or not isinstance(answer, Mapping):
        return False
    return provider not in ("kie", "apixo") or answer.get("code") in (200, "200")


def task_id_of(provider: str, status_code: int, answer: Any) -> str | None:
    """The new task's id in an accepted answer; None when the provider refused or named no task."""
    if not accepted(provider, status_code, answer):
        return None
    value: Any
    if provider in ("kie", "apixo"):  # {"code": 200, "msg"|"message": ..., "data": {"taskId": ...}}
        value = _dig(answer, ("data", "taskId"))
    elif provider == "useapi":  # the job record; third-party clients type the sync answer's id as jobId
        value = answer.get("jobid") or answer.get("jobId")
    else:
        value = answer.get("id")
    return value if isinstance(value, str) and value.strip() else None
