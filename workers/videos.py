"""One video of a task into the archive: :func:`reuse` an object already at the video's key (checked, never
rewritten), or :func:`download` it: :func:`stream` it from the result URL straight into storage, and when the
link expired (403/404/410) ask the provider for a fresh URL once (:func:`workers.confirm.confirm`)."""

from __future__ import annotations

import hashlib
import itertools
import logging
import time

from veo_archiver import archive_keys
from veo_archiver.errors import BadContent, DownloadFailed, StorageUnavailable
from veo_archiver.event import TaskEvent
from workers.attempt import JobHandle
from workers.confirm import confirm
from workers.context import WorkerContext
from workers.fetch import VideoStream
from workers.manifest import FileRecord
from workers.mp4 import looks_like_video, media_type
from workers.progress import ProgressWriter

log = logging.getLogger(__name__)

EXPIRED_REASONS = frozenset({"http_403", "http_404", "http_410"})
#: bytes read before the upload starts, to decide the media type (the ``ftyp`` box with its brands)
HEAD_BYTES = 64


def reuse(
    ctx: WorkerContext, event: TaskEvent, index: int, url: str, record: FileRecord | None, *, rendition: str = ""
) -> FileRecord | None:
    """An object already at the video's key (either extension) is never rewritten: it is re-used, after
    checking it. ``rendition`` (kie.ai's ``1080p``) names another rendition's key (:func:`_key`)."""
    for ext in archive_keys.VIDEO_EXTENSIONS:
        key = _key(event, index, ext, rendition)
        stored = ctx.archive.head(key)
        if stored is not None:
            break
    else:
        return None
    if record is not None and record.key == key and record.size == stored.size:
        return record
    digest = hashlib.sha256()
    head = b""
    size = 0
    for chunk in ctx.archive.iter_bytes(key):
        if len(head) < 12:
            head += chunk[: 12 - len(head)]
        digest.update(chunk)
        size += len(chunk)
    if size != stored.size or not looks_like_video(head):
        raise BadContent(f"object at {key} is not the video it should be ({size} bytes)", reason="archive_conflict")
    log.info(
        "video already in the archive; reused", extra={"provider": event.provider, "task_id": event.task_id, "key": key}
    )
    content_type, _ = media_type(head)
    return FileRecord(
        index=index, source_url=url, key=key, size=size, sha256=digest.hexdigest(), content_type=content_type
    )


def download(
    ctx: WorkerContext, event: TaskEvent, index: int, url: str, job: JobHandle | None = None
) -> tuple[FileRecord, TaskEvent]:
    try:
        return stream(ctx, event, index, url, job), event
    except DownloadFailed as exc:
        if exc.reason not in EXPIRED_REASONS or not ctx.status.can_confirm(event.provider):
            raise
        fresh = confirm(ctx, event)
        if len(fresh.result_urls) <= index or fresh.result_urls[index] == url:
            raise DownloadFailed(f"{exc.message}; the provider has no fresher URL", reason=exc.reason) from exc
        new_url = fresh.result_urls[index]
        log.info(
            "link expired; provider gave a fresh URL",
            extra={"provider": event.provider, "task_id": event.task_id, "index": index},
        )
        return stream(ctx, fresh, index, new_url, job), fresh


def _key(event: TaskEvent, index: int, ext: str, rendition: str) -> str:
    if rendition:
        return archive_keys.rendition_key(event.provider, event.task_id, index, rendition, ext)
    return archive_keys.video_key(event.provider, event.task_id, index, ext)


def stream(
    ctx: WorkerContext, event: TaskEvent, index: int, url: str, job: JobHandle | None = None, *, rendition: str = ""
) -> FileRecord:
    provider = ctx.settings.providers.get(event.provider)
    # the provider's host allowlist is applied by the stream to the URL and to every redirect hop
    stream = VideoStream(ctx.client, url, ctx.fetch_policy, host_allowed=provider.host_allowed if provider else None)
    started = time.monotonic()
    chunks = iter(stream)
    head = b""
    for chunk in chunks:  # the first bytes decide the type, hence the key, before the upload starts
        head += chunk
        if len(head) >= HEAD_BYTES:
            break
    content_type, ext = media_type(head)
    key = _key(event, index, ext, rendition)
    progress = ProgressWriter.of_job(
        job, provider=event.provider, task_id=event.task_id, file=index, files=len(event.result_urls), clock=ctx.clock
    )
    try:
        ctx.archive.put_stream(key, progress.track(itertools.chain([head], chunks), stream), content_type=content_type)
    except StorageUnavailable as exc:
        if stream.error is not None:  # the download failed inside the upload: report the download's error
            raise stream.error from exc
        raise
    finally:
        progress.close()  # the file ended, archived or not: its progress entry goes
    if stream.error is not None:
        raise stream.error
    elapsed = time.monotonic() - started
    log.info(
        "video archived",
        extra={
            "provider": event.provider,
            "task_id": event.task_id,
            "key": key,
            "bytes": stream.size,
            "seconds": round(elapsed, 3),
            "resumes": stream.resumes,
        },
    )
    return FileRecord(
        index=index, source_url=url, key=key, size=stream.size, sha256=stream.sha256, content_type=content_type
    )
