"""The one exception tree of veo-archiver, split by what the caller should do next.

    ArchiverError
    ├── ConfigError            operator misconfiguration: refuse to start, say which variable
    ├── NothingToDo            an operator command named something that is not there
    ├── RequestError           the caller sent something we will never accept (4xx, never retried by us)
    │   ├── Rejected           401: missing/failed signature or token, stale timestamp
    │   │   └── BearerRequired 401 from the admin check, with a Bearer challenge
    │   ├── InvalidPayload     400: malformed body or a field of the wrong type
    │   ├── PayloadTooLarge    413: body over the configured bound
    │   ├── RequestTimeout     408: body not received within REQUEST_READ_TIMEOUT
    │   ├── HeadersTooLarge    431: request line and headers over MAX_HEADER_BYTES
    │   ├── Forbidden          403: an admin surface open to loopback only
    │   └── NotFound           404: unknown provider, source, or a disabled admin surface
    ├── TransientError         try again later (503 at the edge, a scheduled retry in a worker)
    │   ├── QueueUnavailable   Redis could not take the job
    │   ├── Overloaded         the receiver is at its bound of requests or body bytes in flight
    │   ├── DownloadTransient  connection drop, timeout, 429, 5xx, truncated or length-mismatched body
    │   └── StorageUnavailable object store unreachable or 5xx
    └── PermanentError         retrying cannot help: dead-letter with the reason
        ├── DownloadRefused    refused by the SSRF guard or scheme rules
        ├── DownloadFailed     4xx from the file host, URL expired
        └── BadContent         too large, not a video

Foreign exceptions (redis, httpx, obstore) are translated at the edge with ``raise … from exc``.
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Root of every error veo-archiver raises on purpose."""

    #: short machine-readable reason, used in HTTP answers, dead letters and metrics labels
    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class ConfigError(ArchiverError):
    reason = "config"


class NothingToDo(ArchiverError):
    """An operator named something that is not there (no such dead letter, no stored delivery)."""

    reason = "not_found"


class RequestError(ArchiverError):
    status_code = 400
    #: the task id the refused request named, when it was read before the refusal (kie.ai's body, whose
    #: signature failed): unproven, for the operator's refusal record only (``show``, the task page)
    claimed_task_id: str | None = None


class Rejected(RequestError):
    status_code = 401
    reason = "unauthenticated"


class InvalidPayload(RequestError):
    status_code = 400
    reason = "invalid_payload"


class PayloadTooLarge(RequestError):
    status_code = 413
    reason = "payload_too_large"


class RequestTimeout(RequestError):
    status_code = 408
    reason = "request_timeout"


class HeadersTooLarge(RequestError):
    status_code = 431
    reason = "headers_too_large"


class BearerRequired(Rejected):
    """401 from the admin check: missing, malformed or wrong ``Authorization: Bearer <ADMIN_TOKEN>`` (the
    answer carries a Bearer challenge)."""


class Forbidden(RequestError):
    status_code = 403
    reason = "forbidden"


class NotFound(RequestError):
    status_code = 404
    reason = "not_found"


class TransientError(ArchiverError):
    reason = "transient"


class QueueUnavailable(TransientError):
    reason = "queue_unavailable"


class Overloaded(TransientError):
    """The receiver is at its bound of requests or body bytes in flight: 503, the sender retries."""

    reason = "overloaded"


class DownloadTransient(TransientError):
    reason = "download_transient"
    #: the server's ``Retry-After`` in seconds (capped by the fetch policy), when it sent one
    retry_after: float | None = None

    def __init__(self, message: str, *, reason: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class StorageUnavailable(TransientError):
    reason = "storage_unavailable"


class PermanentError(ArchiverError):
    reason = "permanent"


class DownloadRefused(PermanentError):
    reason = "download_refused"


class DownloadFailed(PermanentError):
    reason = "download_failed"


class BadContent(PermanentError):
    reason = "bad_content"
