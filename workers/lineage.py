"""What an archived extension says of its parent: ``extends`` in its manifest and its outcome entry.

No callback names the task an extension continues; a task submitted through the archiver has it in its
submission record (:mod:`veo_archiver.records.submission`). When the job archives such a task it writes::

    "extends": {"provider": "kie", "task_id": "<parent>", "manifest_key": "kie/<parent>/manifest.json"}

``manifest_key`` (relative to the archive, like the manifest's file keys) is there only when the parent's
manifest already exists; a parent archived after its child is linked at read time (``veo-archiver show``
looks the chain up in the archive). A task not submitted here, or whose record expired, has no ``extends``;
nor has one archived while Redis could not be read (the record still links it for ``show``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from veo_archiver import archive_keys
from veo_archiver.records import submission
from workers.storage import Archive

log = logging.getLogger(__name__)


def parent_manifest_key(archive: Archive, provider: str, task_id: str) -> str | None:
    """The parent's manifest key when it is archived; useapi.net parents are named by ``mediaGenerationId``,
    which is not how its tasks are keyed, so they are never looked up."""
    if provider == "useapi":
        return None
    key = archive_keys.manifest_key(provider, task_id)
    return key if archive.head(key) is not None else None


def extends(archive: Archive, connection: redis.Redis | None, provider: str, task_id: str) -> dict[str, Any] | None:
    """The ``extends`` of the task's manifest, or None (no record, or no Redis: a job run outside RQ)."""
    if connection is None:
        return None
    try:
        parent = submission.extends_of(connection, provider, task_id)
    except redis.RedisError as exc:
        # best effort: the video matters more than the link, and `show` still finds the parent in the
        # submission record (kept 30 days) while the manifest goes without `extends`
        log.warning("lineage not read (redis: %s); archiving without `extends`", exc, extra={"task_id": task_id})
        return None
    if parent is None:
        return None
    found: dict[str, Any] = dict(parent)
    key = parent_manifest_key(archive, parent["provider"], parent["task_id"])
    if key is not None:
        found["manifest_key"] = key
    return found


def for_outcome(extends: Any, object_key: Callable[[str], str]) -> dict[str, Any] | None:
    """The manifest's ``extends`` as the outcome entry carries it: ``manifest_key`` as the full object key, like
    the entry's own ``manifest``."""
    if not isinstance(extends, dict):
        return None
    out = dict(extends)
    if isinstance(out.get("manifest_key"), str):
        out["manifest_key"] = object_key(out["manifest_key"])
    return out
