"""Parse the URL lists providers send, in every form they have been documented to send them.

kie.ai alone documents four forms for ``resultUrls``: a JSON array, a JSON string holding an array
(``'["u"]'``), a bracketed non-JSON string (``'[u1, u2]'``) and a bare URL string. Pure functions.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from veo_archiver.errors import InvalidPayload


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_url_list(value: Any, *, field: str) -> list[str]:
    """Return the http(s) URLs in ``value``, in order, without duplicates.

    ``None`` and ``""`` give ``[]``. Anything that is not a list or a string, and any element that is not an
    http(s) URL, raises :class:`InvalidPayload` naming ``field``: a result list we cannot read must not be
    mistaken for an empty one.
    """
    if value is None:
        return []
    items: list[Any]
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                decoded = json.loads(text)
            except (ValueError, RecursionError):
                if not text.endswith("]"):
                    raise InvalidPayload(f"{field}: unterminated list {text[:80]!r}") from None
                inner = text[1:-1]
                decoded = [part.strip().strip("\"'").strip() for part in inner.split(",")]
                decoded = [part for part in decoded if part]
            if not isinstance(decoded, list):
                raise InvalidPayload(f"{field}: expected a list of URLs")
            items = decoded
        else:
            items = [text]
    else:
        raise InvalidPayload(f"{field}: expected a list of URLs or a string, got {type(value).__name__}")
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str) or not is_http_url(item.strip()):
            raise InvalidPayload(f"{field}: not an http(s) URL: {str(item)[:120]!r}")
        url = item.strip()
        if url not in urls:
            urls.append(url)
    return urls
