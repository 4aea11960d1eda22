"""Confirmation with the provider's status API: the confirmed state and URLs replace what the callback
claimed (:mod:`workers.status_client` asks; the job calls this before archiving, and again for a fresh URL
when a download's link expired)."""

from __future__ import annotations

import logging
from dataclasses import replace

from veo_archiver.errors import DownloadTransient
from veo_archiver.event import TaskEvent, TaskStatus
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def confirm(ctx: WorkerContext, event: TaskEvent) -> TaskEvent:
    """The provider's answer for the task; one not finished yet is a transient error (the job retries)."""
    confirmed = ctx.status.fetch(event.provider, event.task_id)
    if confirmed.status in (TaskStatus.IN_PROGRESS, TaskStatus.UNKNOWN):
        raise DownloadTransient(
            f"provider reports the task as {confirmed.provider_status!r}, not finished yet", reason="not_ready"
        )
    if confirmed.status is not event.status or confirmed.result_urls != event.result_urls:
        log.warning(
            "provider status API disagrees with the callback; using the provider's answer",
            extra={
                "provider": event.provider,
                "task_id": event.task_id,
                "claimed": event.status.value,
                "confirmed": confirmed.status.value,
            },
        )
    return replace(
        confirmed,
        extra={**event.extra, **confirmed.extra},
        verification=event.verification,
        kind=event.kind or confirmed.kind,
    )
