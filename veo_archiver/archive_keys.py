"""Object keys in the archive: ``{provider}/{task id}/0.mp4 … manifest.json``, the layout downstream reads.

The task-id segment is :func:`encode_task_id` (reversible) unless that is longer than
:data:`MAX_SEGMENT_BYTES`: then :func:`task_segment` shortens it to a readable prefix, ``~`` and the SHA-256
of the whole id (most filesystems refuse a name over 255 bytes; the manifest keeps the original id).
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, unquote

_SAFE = "-_."
#: longest task-id segment kept as it is (a local archive's filesystem allows 255 bytes per name)
MAX_SEGMENT_BYTES = 200
#: the receiver refuses longer task ids (400 ``task_id_too_long``); no provider's ids come near
MAX_TASK_ID_CHARS = 1024
_DIGEST_HEX = 64


def encode_task_id(task_id: str) -> str:
    """Encode a provider task id as one safe, reversible path segment.

    Letters, digits, ``-``, ``_`` and ``.`` stay as they are; every other byte is percent-encoded (useapi ids
    carry ``:``, ``@`` and ``*``). The segments ``.`` and ``..`` are encoded in full so no id can climb
    out of its directory on a local archive.
    """
    if not task_id:
        raise ValueError("empty task id")
    encoded = quote(task_id, safe=_SAFE)
    encoded = encoded.replace("~", "%7E")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return encoded


def decode_task_id(segment: str) -> str:
    """The task id of an :func:`encode_task_id` segment (a shortened one, with ``~``, keeps only a prefix)."""
    return unquote(segment)


def task_segment(task_id: str) -> str:
    """The archive path segment of a task: :func:`encode_task_id`, shortened past :data:`MAX_SEGMENT_BYTES`.

    A shortened segment is ``{prefix}~{sha256 hex of the id}``: ``~`` never appears in an encoded id (it is
    escaped as ``%7E``), so a shortened segment cannot collide with a kept one, and two ids share a segment
    only if their SHA-256 collide. Ids that fit keep their segment: existing archive keys do not change.
    """
    encoded = encode_task_id(task_id)
    if len(encoded) <= MAX_SEGMENT_BYTES:  # ASCII: characters are bytes
        return encoded
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()
    prefix = encoded[: MAX_SEGMENT_BYTES - 1 - _DIGEST_HEX]
    cut = prefix.rfind("%", len(prefix) - 2)
    if cut >= 0:  # never end the prefix inside a %XX escape
        prefix = prefix[:cut]
    return f"{prefix}~{digest}"


def task_prefix(provider: str, task_id: str) -> str:
    return f"{provider}/{task_segment(task_id)}"


def video_key(provider: str, task_id: str, index: int, ext: str = ".mp4") -> str:
    """Video ``index`` of a task; ``ext`` is decided from the downloaded bytes (``.mp4`` or ``.mov``)."""
    return f"{task_prefix(provider, task_id)}/{index}{ext}"


def rendition_key(provider: str, task_id: str, index: int, rendition: str, ext: str = ".mp4") -> str:
    """Another rendition of video ``index`` (kie.ai's ``1080p``), beside the original: ``{index}-{rendition}{ext}``."""
    return f"{task_prefix(provider, task_id)}/{index}-{rendition}{ext}"


#: every extension a video key may carry (:func:`workers.mp4.media_type` decides which)
VIDEO_EXTENSIONS = (".mp4", ".mov")


def manifest_key(provider: str, task_id: str) -> str:
    return f"{task_prefix(provider, task_id)}/manifest.json"


def callback_key(provider: str, task_id: str, status: str) -> str:
    return f"{task_prefix(provider, task_id)}/callback-{status}.json"
