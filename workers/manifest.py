"""The manifest: the commit marker of an archived task, written last, read by downstream pipelines.

Schema (``schema`` = 1)::

    {"schema": 1, "provider": "kie", "task_id": "<original id>", "status": "succeeded" | "failed",
     "failure": {"code": "400", "message": "..."} | null,
     "files": [{"index": 0, "source_url": "...", "key": "kie/<id>/0.mp4", "size": 123, "sha256": "...",
                "content_type": "video/mp4"}],
     "received_at": "...Z", "archived_at": "...Z", "verification": "signature",
     "callback": {"key": "kie/<id>/callback-succeeded.json", "delivery_id": "...", "redis": "veo:deliveries:..."},
     "extra": {...}, "job_id": "...", "provider_status": "...", "kind": "...",
     "confirmed": {"via": "provider_api", "at": "...Z"} | null, "urls_verified": true | false,
     "claimed": {"status": "...", "result_urls": [...]}}

``urls_verified`` is true only when the result URLs were authenticated: the body came with our callback-URL
token or a Standard Webhooks signature (both cover the body), or the URLs were confirmed through the
provider's status API. A kie.ai HMAC signature covers the task id and time, not the URLs: without
``KIE_API_KEY`` such a manifest says false. ``confirmed`` and ``claimed`` are set by :mod:`workers.jobs`:
``claimed`` is present only when the provider's
status API disagreed with the callback (the manifest then describes the provider's answer, and ``claimed``
what the callback said).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from veo_archiver.event import TaskEvent, Verification

SCHEMA = 1


@dataclass(frozen=True)
class FileRecord:
    index: int
    source_url: str
    key: str
    size: int
    sha256: str
    content_type: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source_url": self.source_url,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
        }


def build(
    event: TaskEvent,
    files: list[FileRecord],
    *,
    received_at: str,
    archived_at: str,
    callback: dict[str, Any],
    job_id: str | None,
) -> dict[str, Any]:
    failure = None
    if event.failure_code is not None or event.failure_message is not None:
        failure = {"code": event.failure_code, "message": event.failure_message}
    return {
        "schema": SCHEMA,
        "provider": event.provider,
        "task_id": event.task_id,
        "status": event.status.value,
        "provider_status": event.provider_status,
        "kind": event.kind,
        "failure": failure,
        "files": [f.to_json() for f in files],
        "received_at": received_at,
        "archived_at": archived_at,
        "verification": event.verification.value,
        "callback": callback,
        "extra": event.extra,
        "job_id": job_id,
    }


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"


def urls_verified(event: TaskEvent, *, confirmed: bool) -> bool:
    """Whether anything authenticated the result URLs this manifest archives (see the module docstring)."""
    if confirmed or event.verification in (Verification.TOKEN, Verification.PROVIDER_API):
        return True
    return event.verification is Verification.SIGNATURE and event.provider.startswith("standard-")
