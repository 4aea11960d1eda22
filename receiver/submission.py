"""``POST /submit/{provider}/{operation}``: submit a task to a provider through the archiver (admin token).

The body is the provider's own request body; the archiver points its callback field at this receiver, sends it
with the provider's API key and tracks the task it creates (:mod:`veo_archiver.submit`, shared with
``veo-archiver submit``; the contract is in the README, "Submitting through the archiver"). An
``Idempotency-Key`` header makes a retry return the first answer. The answer carries ``Idempotent-Replayed:
true`` when it is that first answer again.

The callback URL's base is ``PUBLIC_BASE_URL``, else the URL this request came in on (as
:class:`receiver.proxy.ProxyHeaders` saw it). kie.ai gets ``{base}/callbacks/kie`` (it signs its callbacks
itself) unless only ``CALLBACK_SIGNING_KEYS`` is configured; the unsigned providers get a minted token URL
(:mod:`receiver.tokens`) valid as long as the submission is remembered, unless ``OPEN_PROVIDERS`` names them.

Like ``POST /tasks`` it uses a synchronous Redis client and HTTP client in Starlette's thread pool, built on
first use: nothing from the app's lifespan.
"""

from __future__ import annotations

import time

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import tokens
from receiver.auth import require_admin
from receiver.body import read_bounded
from veo_archiver.errors import ConfigError
from veo_archiver.providers.submission import check_operation
from veo_archiver.records.submission import SUBMISSION_TTL_S
from veo_archiver.settings import Settings
from veo_archiver.submit import SubmitAnswer, Submitter
from veo_archiver.urls import is_http_url

MAX_BODY_BYTES = 256 * 1024


def callback_url_for(settings: Settings, base_url: str, provider: str, *, now: float) -> str:
    """The callback URL to give ``provider`` for one submission, on this receiver at ``base_url``."""
    base = base_url.rstrip("/")
    if not is_http_url(base):
        raise ConfigError(f"callback base URL must be http(s), not {base_url!r}: set PUBLIC_BASE_URL")
    if provider == "kie" and (settings.kie_hmac_keys or settings.kie_allow_unsigned):
        return f"{base}/callbacks/kie"
    if provider != "kie" and settings.providers[provider].open:
        return f"{base}/callbacks/{provider}"
    if not settings.callback_signing_keys:
        needs = "KIE_WEBHOOK_HMAC_KEYS or CALLBACK_SIGNING_KEYS" if provider == "kie" else "CALLBACK_SIGNING_KEYS"
        raise ConfigError(f"{provider} callbacks would be refused by this receiver: set {needs}")
    token = tokens.mint(provider, settings.callback_signing_keys, now=now, ttl_s=SUBMISSION_TTL_S)
    return tokens.callback_url(base, provider, token)


def answer_response(answer: SubmitAnswer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


class SubmitEndpoint:
    """``connection`` and ``submitter`` are injectable for tests; else built on first use from the settings."""

    def __init__(
        self, settings: Settings, connection: redis.Redis | None = None, submitter: Submitter | None = None
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._submitter = submitter

    def _get_submitter(self) -> Submitter:
        if self._submitter is None:
            connection = self._connection or redis.Redis.from_url(
                self._settings.redis_url,
                socket_timeout=self._settings.enqueue_timeout_s,
                socket_connect_timeout=2.0,
            )
            self._submitter = Submitter(self._settings, connection)
        return self._submitter

    async def post(self, request: Request) -> Response:
        require_admin(self._settings, request, feature="Submission")
        provider, operation = request.path_params["provider"], request.path_params["operation"]
        check_operation(provider, operation)
        body = await read_bounded(request, MAX_BODY_BYTES, timeout=self._settings.request_read_timeout_s)
        base = self._settings.public_base_url or str(request.base_url)
        callback = callback_url_for(self._settings, base, provider, now=time.time())
        answer = await run_in_threadpool(
            self._get_submitter().submit,
            provider,
            operation,
            body,
            callback_url=callback,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        return answer_response(answer)


def submit_route(settings: Settings, connection: redis.Redis | None = None) -> Route:
    return Route("/submit/{provider}/{operation}", SubmitEndpoint(settings, connection).post, methods=["POST"])
