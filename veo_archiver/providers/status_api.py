"""What every provider's status API call needs: a checked base URL and bearer headers (config errors only)."""

from __future__ import annotations

from urllib.parse import urlsplit

from veo_archiver.errors import ConfigError
from veo_archiver.urls import is_http_url


def api_base(label: str, base_url: str) -> str:
    if not isinstance(base_url, str) or not is_http_url(base_url) or urlsplit(base_url).query:
        raise ConfigError(f"{label} base URL must be an http(s) URL without a query, not {base_url!r}")
    return base_url.rstrip("/")


def bearer_headers(label: str, api_key: str) -> dict[str, str]:
    # printable ASCII without spaces: a key can never inject a header
    if not isinstance(api_key, str) or not api_key or not all(" " < c < "\x7f" for c in api_key):
        raise ConfigError(f"{label} API key must be non-empty printable ASCII without spaces")
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
