"""The manifest: the commit marker of an archived task, written last, read by downstream pipelines.

Schema (``schema`` = 1)::

    {"schema": 1, "provider": "kie", "task_id": "<original id>", "status": "succeeded" | "failed",
     "failure": {"code": "400", "message": "..."} | null,
     "files": [{"index": 0, "source_url": "...", "key": "kie/<id>/0.mp4", "object_key": "archive/kie/<id>/0.mp4",
                "size": 123, "sha256": "...", "content_type": "video/mp4"}],
     "archive": {"backend": "s3", "bucket": "videos", "prefix": "archive", "url": "s3://videos/archive"},
     "received_at": "...Z", "archived_at": "...Z", "verification": "signature",
     "callback": {"key": "kie/<id>/callback-succeeded.json", "object_key": "archive/kie/<id>/callback-….json",
                  "location": "s3://videos/archive/kie/<id>/callback-….json", "delivery_id": "...",
                  "redis": "veo:deliveries:..."},
     "extra": {...}, "job_id": "...", "run": 1, "provider_status": "...", "kind": "...",
     "confirmed": {"via": "provider_api", "at": "...Z"} | null, "urls_verified": true | false,
     "claimed": {"status": "...", "result_urls": [...]},
     "renditions": {"1080p": {"status": "archived" | "partial" | "unavailable", "at": "...Z", "polls": 3,
                              "missing": [], "reason": "...", "message": "..."}}}

``renditions`` and the ``files[]`` entries with ``"rendition": "1080p"`` (key ``kie/<id>/0-1080p.mp4``) are
added later, by :mod:`workers.rendition_1080p` (``KIE_FETCH_1080P``); the original entries stay as they were,
and an entry without ``rendition`` is an original.

**Self-contained.** ``object_key`` is the full key in the store (archive prefix included): the same key the
``veo:outcomes`` entry and ``veo-archiver manifests --json`` give as the file's ``key``. ``archive`` says where
the keys live (:meth:`workers.storage.Archive.where`: the backend, its bucket, container or directory, the
prefix, a custom endpoint; never a credential). ``key`` keeps its meaning (relative to the archive prefix),
so these are added fields and ``schema`` stays 1: a reader of an older manifest (without them) prepends the
prefix itself. ``run`` is the job's run that wrote it (:mod:`veo_archiver.records.dead_letter`); its outcome's
``outcome_id`` counts it.

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
from collections.abc import Callable, Mapping
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
    object_key: Callable[[str], str],
    archive: Mapping[str, str],
    run: int = 1,
) -> dict[str, Any]:
    """The manifest of ``event``; ``object_key`` maps a key to its full key in the store, ``archive`` is where
    the store is (:meth:`workers.storage.Archive.where`)."""
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
        "files": [{**f.to_json(), "object_key": object_key(f.key)} for f in files],
        "archive": dict(archive),
        "received_at": received_at,
        "archived_at": archived_at,
        "verification": event.verification.value,
        "callback": {**callback, "object_key": object_key(callback["key"])} if "key" in callback else callback,
        "extra": event.extra,
        "job_id": job_id,
        "run": run,
    }


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"


def urls_verified(event: TaskEvent, *, confirmed: bool) -> bool:
    """Whether anything authenticated the result URLs this manifest archives (see the module docstring)."""
    if confirmed or event.verification in (Verification.TOKEN, Verification.PROVIDER_API):
        return True
    return event.verification is Verification.SIGNATURE and event.provider.startswith("standard-")
