"""Confirm a callback with the provider's own status API before trusting its URLs.

This is the only defence against a tampered kie.ai body (its signature covers the task id, not the URLs)
and against a leaked callback URL for the unsigned providers. It is used when the provider's API key is
configured; the confirmed state replaces the callback's claim. It is also how a fresh URL is obtained
after a result link expired (403/404/410) and how the reconciliation sweep reads tasks whose callback
never came.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx

from veo_archiver.errors import DownloadTransient, InvalidPayload, PermanentError
from veo_archiver.event import TaskEvent
from veo_archiver.providers import REGISTRY
from veo_archiver.providers.base import StatusRequest
from veo_archiver.redact import redact_event
from veo_archiver.settings import ProviderSettings

log = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class StatusClient:
    """Reads task state from the providers' status APIs (base URLs configurable, for simulators)."""

    def __init__(
        self,
        providers: dict[str, ProviderSettings],
        client: httpx.Client | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._providers = providers
        self._client = client or httpx.Client(timeout=httpx.Timeout(20.0, connect=10.0), verify=ssl_context or True)

    def can_confirm(self, provider: str) -> bool:
        settings = self._providers.get(provider)
        return settings is not None and settings.api_key is not None and provider in REGISTRY

    def fetch(self, provider: str, task_id: str) -> TaskEvent:
        """The provider's current view of ``task_id`` (verification ``provider_api``).

        Raises DownloadTransient when the API is unreachable or busy, PermanentError when it refuses our key
        or does not know the task.
        """
        settings = self._providers[provider]
        assert settings.api_key is not None
        spec = REGISTRY[provider]
        requests = spec.status_requests(settings.api_base, task_id, settings.api_key)
        for request in requests[:-1]:
            try:
                return self._fetch(provider, task_id, request)
            except PermanentError as exc:
                if exc.reason != "unknown_task":
                    raise
        return self._fetch(provider, task_id, requests[-1])

    def _fetch(self, provider: str, task_id: str, request: StatusRequest) -> TaskEvent:
        url, headers = request
        try:
            response = self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise DownloadTransient(f"{provider} status API unreachable: {exc!r}", reason="status_api") from exc
        if response.status_code in TRANSIENT_STATUS:
            raise DownloadTransient(f"{provider} status API answered HTTP {response.status_code}", reason="status_api")
        if response.status_code in (401, 403):
            raise PermanentError(
                f"{provider} status API refused our API key (HTTP {response.status_code}): check the key",
                reason="status_api_auth",
            )
        if response.status_code == 404:
            raise PermanentError(f"{provider} does not know task {task_id!r}", reason="unknown_task")
        try:
            body: Any = response.json()
        except ValueError:
            raise DownloadTransient(
                f"{provider} status API answered non-JSON (HTTP {response.status_code})", reason="status_api"
            ) from None
        if not isinstance(body, dict):
            raise DownloadTransient(f"{provider} status API answered a {type(body).__name__}", reason="status_api")
        try:
            # the provider echoes what we registered (useapi.net: replyRef, which may carry our token): stored
            # copies of this event (manifest, outcome) must not keep a token, as for callbacks
            return redact_event(REGISTRY[provider].parse_status(body, task_id))
        except InvalidPayload as exc:
            raise PermanentError(
                f"{provider} status API answer unreadable: {exc.message}", reason="status_api"
            ) from exc

    def close(self) -> None:
        self._client.close()
