"""The chain of extensions a task belongs to, for ``veo-archiver show``: original → extension → extension.

Each link's parent comes from its manifest's ``extends`` (durable, once archived), else from its submission
record in Redis (:mod:`veo_archiver.records.submission`, while it waits). Whether each parent is archived is
read from the archive now, so a parent archived after its child is linked here although the child's manifest
was written without its ``manifest_key``.
"""

from __future__ import annotations

from typing import Any

import redis

from veo_archiver.records import submission
from workers import lineage
from workers.storage import Archive, read_json

#: links followed at most (a chain longer than this is cut, and says so)
MAX_LINKS = 100


def _parent(connection: redis.Redis, manifest: dict[str, Any] | None, provider: str, task_id: str) -> Any:
    extends = (manifest or {}).get("extends")
    if isinstance(extends, dict) and isinstance(extends.get("task_id"), str):
        return {"provider": str(extends.get("provider") or provider), "task_id": extends["task_id"]}
    return submission.extends_of(connection, provider, task_id)


def chain(connection: redis.Redis, archive: Archive, provider: str, task_id: str) -> list[dict[str, Any]]:
    """The links oldest first, the task last: ``{provider, task_id, manifest_key, status}`` (``manifest_key``
    and ``status`` None when not archived). One link (the task alone) when it extends nothing known."""
    links: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    current: tuple[str, str] | None = (provider, task_id)
    while current is not None and current not in seen and len(links) < MAX_LINKS:
        seen.add(current)
        key = lineage.parent_manifest_key(archive, *current)
        manifest = read_json(archive, key) if key else None
        links.append(
            {
                "provider": current[0],
                "task_id": current[1],
                "manifest_key": key if manifest is not None else None,
                "status": manifest.get("status") if manifest else None,
            }
        )
        parent = _parent(connection, manifest, *current)
        current = (parent["provider"], parent["task_id"]) if parent else None
    links.reverse()
    return links


def render(links: list[dict[str, Any]], archive: Archive) -> list[str]:
    """Nothing for a task that extends nothing; else one line per link, oldest first."""
    if len(links) < 2:
        return []
    out = ["lineage (original first):"]
    for n, link in enumerate(links):
        where = (
            f"{link['status']}, {archive.location(link['manifest_key'])}"
            if link["manifest_key"]
            else "not archived (yet)"
        )
        if link["provider"] == "useapi" and n == 0:
            where = "useapi.net mediaGenerationId (its job is not looked up)"
        role = "this task" if n == len(links) - 1 else "original" if n == 0 else "extension"
        out.append(f"  {link['provider']}/{link['task_id']}  {where}  [{role}]")
    return out
