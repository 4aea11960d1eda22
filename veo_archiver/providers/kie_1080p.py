"""kie.ai's 1080p rendition: ``GET /api/v1/veo/get-1080p-video?taskId=&index=``, its request and its answer. Pure.

The endpoint has no callback (https://docs.kie.ai/veo3-api/get-veo-3-1080-p-video): the 1080p file is made
after the task succeeds (about 1–3 minutes) and the answer is "non-200" until it is ready; the docs advise
polling every 20–30 s. The ready answer is::

    {"code": 200, "msg": "success", "data": {"resultUrl": "https://tempfile.aiquickdraw.com/p/….mp4"}}

"Non-200" is read both ways, as the docs do not say which they mean: an HTTP status other than 200, or a body
``code`` other than 200 (kie.ai answers most errors as HTTP 200 with the code in the body). :func:`parse` maps
an answer to one of three :class:`Verdict` kinds:

- ``ready``: the URL of the 1080p file;
- ``pending``: not ready yet (any other non-200, an answer without ``resultUrl``, an unreadable body, rate
  limits and 5xx): poll again until the bound;
- ``unavailable``: will never come: our key is refused (401/403), or kie.ai knows no such task (body 422
  "record is null", or records past its 14 days). A fallback-model task is never polled (its videos "can't be
  upscaled"): :func:`upscalable` says so from the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from veo_archiver.errors import InvalidPayload
from veo_archiver.payload import task_id_value
from veo_archiver.providers.kie import SUCCESS_CODE, UNKNOWN_TASK_MESSAGES
from veo_archiver.providers.shape import Int, OptObj, OptStr, Shape, Url
from veo_archiver.providers.status_api import api_base, bearer_headers

GET_1080P_PATH = "/api/v1/veo/get-1080p-video"
RENDITION = "1080p"
#: HTTP statuses that say our key is refused: waiting will not help
_AUTH_STATUSES = frozenset({401, 403})
#: the kinds of kie.ai task that have a 1080p version: generate (kind None) and extend; not 4K
UPSCALABLE_KINDS = (None, "extend")


class Kind(StrEnum):
    READY = "ready"
    PENDING = "pending"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    #: the 1080p file's URL (ready only)
    url: str | None = None
    #: why it is not ready or never will be: ``http_404``, ``code_422``, ``no_url``, ``unknown_task``…
    reason: str = ""
    #: kie.ai's own words, cut short
    message: str = ""


def request(base_url: str, task_id: str, index: int, api_key: str) -> tuple[str, dict[str, str]]:
    """URL and headers of ``GET {base}/api/v1/veo/get-1080p-video?taskId=…&index=…``."""
    tid = task_id_value(task_id, "taskId")
    url = f"{api_base('kie.ai', base_url)}{GET_1080P_PATH}?taskId={quote(tid, safe='')}&index={int(index)}"
    return url, bearer_headers("kie.ai", api_key)


class _Data(Shape):
    result_url = Url("resultUrl")


class Answer(Shape):
    code = Int("code")
    msg = OptStr("msg")
    data = OptObj(_Data, "data")


def parse(http_status: int, body: Any) -> Verdict:
    """What one answer of the endpoint says (``body`` is the decoded JSON, or None when it was not JSON)."""
    if http_status in _AUTH_STATUSES:
        return Verdict(Kind.UNAVAILABLE, reason="api_key_refused", message=f"HTTP {http_status}: check KIE_API_KEY")
    if http_status != 200:
        return Verdict(Kind.PENDING, reason=f"http_{http_status}")
    if not isinstance(body, Mapping):
        return Verdict(Kind.PENDING, reason="unreadable", message=f"expected a JSON object, got {type(body).__name__}")
    answer = Answer(body)
    try:
        code, msg = answer.code, (answer.msg or "")[:200]
        if code in _AUTH_STATUSES:
            return Verdict(Kind.UNAVAILABLE, reason="api_key_refused", message=msg)
        if code != SUCCESS_CODE:
            if any(text in msg.lower() for text in UNKNOWN_TASK_MESSAGES):
                return Verdict(Kind.UNAVAILABLE, reason="unknown_task", message=msg)
            return Verdict(Kind.PENDING, reason=f"code_{code}", message=msg)
        urls = answer.data.result_url
    except InvalidPayload as exc:
        return Verdict(Kind.PENDING, reason="unreadable", message=exc.message[:200])
    if not urls:
        return Verdict(Kind.PENDING, reason="no_url", message=msg)
    return Verdict(Kind.READY, url=urls[0])


def upscalable(manifest: Mapping[str, Any]) -> str | None:
    """None when the archived task may have a 1080p version, else why not (``fallback``, ``kind_4k``)."""
    kind = manifest.get("kind")
    if kind not in UPSCALABLE_KINDS:
        return f"kind_{kind}"
    extra = manifest.get("extra")
    extra = extra if isinstance(extra, Mapping) else {}
    if extra.get("fallbackFlag") is True or "fallback model" in str(extra.get("msg") or "").lower():
        return "fallback"
    return None
