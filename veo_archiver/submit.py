"""Submit a task to a provider through the archiver, so it is tracked from birth: the one implementation behind
``POST /submit/{provider}/{operation}`` (:mod:`receiver.submission`) and ``veo-archiver submit``.

:meth:`Submitter.submit` builds the provider's request (:mod:`veo_archiver.providers.submission`: the caller's
body, its callback field aimed at this receiver), POSTs it with the provider's API key, and answers with a
:class:`SubmitAnswer` (HTTP status + JSON body, the contract in the README, "Submitting through the archiver"):

- accepted (200): the provider's answer unchanged under ``provider_response``, plus the archiver's view:
  ``task_id``, ``tracked`` (registered in :mod:`veo_archiver.records.tracked` at once, so the reconciliation
  sweep archives it if no callback comes), ``extends`` (the parent of an extend, kept in
  :mod:`veo_archiver.records.submission` for the archive job);
- refused by the provider: its HTTP status (502 when it answered 2xx with an error ``code`` in the body) and
  its body, ``reason: provider_error``; nothing tracked;
- no answer: 504 ``provider_timeout`` (the request was sent: the provider may have created the task) or
  502/504 ``provider_unreachable`` (nothing was sent); ``retry_safe`` says which.

No provider documents an idempotency key of its own, so a retried POST to a provider can create a second task.
With an ``Idempotency-Key`` the archiver remembers, for a day, the first answer that may stand for a task at
the provider (accepted, or timed out after sending), keyed by provider, operation and key, and returns it to a
retry instead of submitting again; a retry while the first is in flight gets 409 ``submit_in_progress``, and the
same key with another body 400 ``idempotency_key_reused``. Refusals and requests that never left are
forgotten, so their retry goes to the provider.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import InvalidPayload, QueueUnavailable
from veo_archiver.providers import submission as provider_requests
from veo_archiver.records import submission as submissions
from veo_archiver.records import tracked
from veo_archiver.settings import Settings

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 24 * 3600
MAX_IDEMPOTENCY_KEY_CHARS = 255
#: how long an in-flight claim outlives the provider's timeout (a crashed submitter frees its key)
_CLAIM_MARGIN_S = 30


@dataclass(frozen=True)
class SubmitAnswer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    #: the first answer to this Idempotency-Key, returned again
    replayed: bool = False


def _error(status: int, reason: str, msg: str, **more: Any) -> SubmitAnswer:
    return SubmitAnswer(status, {"code": status, "msg": msg, "reason": reason, "tracked": False, **more})


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPayload("body: expected a JSON object", reason="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidPayload("body: expected a JSON object", reason="invalid_body")
    return body


def check_idempotency_key(key: str) -> str:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not all(" " <= c < "\x7f" for c in key):
        raise InvalidPayload(
            f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
            reason="invalid_idempotency_key",
        )
    return key


def prepare(
    settings: Settings, provider: str, operation: str, raw_body: bytes, *, callback_url: str
) -> tuple[dict[str, Any], provider_requests.SubmitRequest]:
    """The caller's body and the request to send, checked without any I/O: raises NotFound/InvalidPayload
    for an operation, a body or a parent we refuse, ConfigError without the provider's API key."""
    provider_requests.check_operation(provider, operation)
    tracked.check_provider(settings, provider)  # the key to submit with, and to poll with later
    body = parse_body(raw_body)
    configured = settings.providers[provider]
    assert configured.api_key is not None
    request = provider_requests.build(
        provider,
        operation,
        body,
        callback_url=callback_url,
        base_url=configured.api_base,
        api_key=configured.api_key,
    )
    return body, request


def _fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Submitter:
    """Submits through one Redis connection and one HTTP client (both injectable; the client is closed by
    :meth:`close` only when built here)."""

    def __init__(
        self,
        settings: Settings,
        connection: redis.Redis,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._redis = connection
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=httpx.Timeout(settings.submit_timeout_s, connect=10.0))
        self._clock = clock

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def submit(
        self,
        provider: str,
        operation: str,
        raw_body: bytes,
        *,
        callback_url: str,
        idempotency_key: str | None = None,
    ) -> SubmitAnswer:
        """Submit ``raw_body`` (the caller's JSON) to ``provider``'s ``operation``, its callback aimed at
        ``callback_url``. Raises NotFound/InvalidPayload for a request we refuse before sending anything,
        QueueUnavailable when Redis cannot hold the idempotency claim."""
        body, request = prepare(self._settings, provider, operation, raw_body, callback_url=callback_url)
        claim = None
        if idempotency_key is not None:
            claim = redis_keys.submit_idempotency_key(provider, operation, check_idempotency_key(idempotency_key))
            earlier = self._claim(claim, _fingerprint(body))
            if earlier is not None:
                return earlier
        answer, keep = self._send(request)
        if claim is not None:
            self._settle(claim, _fingerprint(body), answer, keep=keep)
        return answer

    # -- the provider -----------------------------------------------------------------------------------

    def _send(self, request: provider_requests.SubmitRequest) -> tuple[SubmitAnswer, bool]:
        """The answer, and whether it may stand for a task at the provider (kept for an Idempotency-Key)."""
        label = provider_requests.LABELS[request.provider]
        fields = {"provider": request.provider, "operation": request.operation}
        try:
            response = self._client.post(request.url, json=request.body, headers=request.headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            log.warning("submission not sent: %r", exc, extra=fields)
            status = 504 if isinstance(exc, httpx.TimeoutException) else 502
            msg = f"{label} could not be reached ({type(exc).__name__}); nothing was sent: retrying is safe"
            return _error(status, "provider_unreachable", msg, retry_safe=True), False
        except httpx.TimeoutException as exc:
            log.warning("submission timed out after sending: %r", exc, extra=fields)
            msg = (
                f"{label} did not answer within {self._settings.submit_timeout_s:g} s; the request was sent, so "
                "the task may exist: a retry with the same Idempotency-Key returns this answer, a new key submits again"
            )
            return _error(504, "provider_timeout", msg, retry_safe=False), True
        except httpx.HTTPError as exc:
            log.warning("submission lost after sending: %r", exc, extra=fields)
            msg = f"the connection to {label} failed after the request was sent ({type(exc).__name__})"
            return _error(502, "provider_connection_lost", msg, retry_safe=False), True
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        if not provider_requests.accepted(request.provider, response.status_code, answer):
            status = response.status_code if response.status_code >= 400 else 502
            msg = f"{label} refused the submission (HTTP {response.status_code})"
            refused = _error(
                status, "provider_error", msg, provider_status=response.status_code, provider_response=answer
            )
            return refused, False
        return self._accepted(request, response.status_code, answer), True

    def _accepted(self, request: provider_requests.SubmitRequest, provider_status: int, answer: Any) -> SubmitAnswer:
        task_id = provider_requests.task_id_of(request.provider, provider_status, answer)
        now = self._clock()
        view: dict[str, Any] = {
            "code": 200,
            "msg": "submitted",
            "provider": request.provider,
            "operation": request.operation,
            "task_id": task_id,
            "tracked": False,
            "registered_at": None,
            "extends": None,
            "provider_status": provider_status,
            "provider_response": answer,
        }
        if task_id is None:
            view["msg"] = "submitted, but the provider's answer names no task id: not tracked"
            return SubmitAnswer(200, view)
        sub = submissions.Submission(request.provider, task_id, request.operation, now, request.parent)
        view["extends"] = sub.extends()
        try:
            tracked.check_task_id(task_id)
            registration = tracked.register(self._redis, [tracked.TaskRef(request.provider, task_id)], now=now)[0]
            submissions.record(self._redis, sub)
        except (redis.RedisError, InvalidPayload) as exc:
            # the task exists at the provider: say so, and why it is not tracked (track it by hand)
            log.error("submitted but not tracked: %s", exc, extra={"provider": request.provider, "task_id": task_id})
            view["msg"] = f"submitted, but not tracked: {exc}; run `veo-archiver track {request.provider} <task id>`"
            return SubmitAnswer(200, view)
        view["tracked"] = True
        view["registered_at"] = iso(registration.registered_at)
        log.info("submitted and tracked", extra={"provider": request.provider, "task_id": task_id})
        return SubmitAnswer(200, view)

    # -- Idempotency-Key --------------------------------------------------------------------------------

    def _claim(self, key: str, fingerprint: str) -> SubmitAnswer | None:
        """None: this call holds the key and submits. Otherwise the answer to give instead."""
        pending = json.dumps({"state": "pending", "fingerprint": fingerprint})
        ttl = int(self._settings.submit_timeout_s) + _CLAIM_MARGIN_S
        try:
            if self._redis.set(key, pending, nx=True, ex=ttl):
                return None
            raw: Any = self._redis.get(key)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"redis could not hold the Idempotency-Key: {exc}") from exc
        try:
            stored = json.loads(raw) if raw is not None else None
        except (ValueError, UnicodeDecodeError):
            stored = None
        if not isinstance(stored, dict):  # expired between SET and GET, or unreadable: ask for a retry
            return _error(409, "submit_in_progress", "this Idempotency-Key is being settled: retry in a moment")
        if stored.get("fingerprint") != fingerprint:
            raise InvalidPayload(
                "Idempotency-Key: already used with another body for this provider and operation",
                reason="idempotency_key_reused",
            )
        if stored.get("state") != "done":
            return _error(
                409, "submit_in_progress", "a submission with this Idempotency-Key is in flight: retry in a moment"
            )
        return SubmitAnswer(int(stored["status"]), dict(stored["body"]), replayed=True)

    def _settle(self, key: str, fingerprint: str, answer: SubmitAnswer, *, keep: bool) -> None:
        try:
            if keep:
                done = {"state": "done", "fingerprint": fingerprint, "status": answer.status, "body": answer.body}
                self._redis.set(key, json.dumps(done), ex=IDEMPOTENCY_TTL_S)
            else:
                self._redis.delete(key)
        except redis.RedisError as exc:  # the answer stands; only a retry's replay is lost
            log.warning("could not record the Idempotency-Key's answer: %s", exc)
