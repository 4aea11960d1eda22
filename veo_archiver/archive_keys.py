"""Object keys in the archive: ``{provider}/{task id}/0.mp4 … manifest.json``, the layout downstream reads."""

from __future__ import annotations

from urllib.parse import quote, unquote

_SAFE = "-_."


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
    return unquote(segment)


def task_prefix(provider: str, task_id: str) -> str:
    return f"{provider}/{encode_task_id(task_id)}"


def video_key(provider: str, task_id: str, index: int) -> str:
    return f"{task_prefix(provider, task_id)}/{index}.mp4"


def manifest_key(provider: str, task_id: str) -> str:
    return f"{task_prefix(provider, task_id)}/manifest.json"


def callback_key(provider: str, task_id: str, status: str) -> str:
    return f"{task_prefix(provider, task_id)}/callback-{status}.json"
