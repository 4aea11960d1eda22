"""Who may use the admin surfaces (``GET /metrics``, ``GET /ops``, ``POST /tasks``): the one bearer check.

``ADMIN_TOKEN`` is the one admin secret. A request proves it with ``Authorization: Bearer <token>``, compared
in constant time (:func:`hmac.compare_digest`); any other scheme, a missing header or a wrong token is
:class:`~receiver.responses.BearerRequired` (401, with the Bearer challenge). Without ``ADMIN_TOKEN`` the
admin features are off (:class:`~receiver.responses.NotFound`, reason ``disabled``), except ``/metrics``,
which then serves loopback clients only (:class:`~receiver.responses.Forbidden`, reason ``loopback_only``)
unless ``METRICS_PUBLIC=true`` opens it to anyone. The ops page's cookie exchange stays in
:mod:`receiver.ops_page` and uses :func:`require_bearer` for the header part.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from veo_archiver.env_values import is_loopback_host
from veo_archiver.errors import BearerRequired, Forbidden, NotFound
from veo_archiver.settings import Settings


def token_matches(given: str, token: str) -> bool:
    """``given`` is the admin ``token``, compared in constant time; an empty token never matches."""
    if not given or not token:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8", "replace"))


def bearer_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>`` (scheme case-insensitive), compared in constant time."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and token_matches(given.strip(), token)


def admin_token(settings: Settings, feature: str) -> str:
    """The configured ``ADMIN_TOKEN``; without one ``feature`` does not exist (404 ``disabled``)."""
    if not settings.admin_token:
        raise NotFound(f"{feature} is disabled: set ADMIN_TOKEN to enable it", reason="disabled")
    return settings.admin_token


def require_bearer(request: Request, token: str, hint: str) -> None:
    """Raise :class:`BearerRequired` with ``hint`` unless the request carries the bearer ``token``."""
    if not bearer_matches(request.headers.get("authorization"), token):
        raise BearerRequired(hint)


def require_admin(settings: Settings, request: Request, *, feature: str) -> None:
    """The admin check of an API endpoint: ``ADMIN_TOKEN`` configured and sent as a bearer token."""
    token = admin_token(settings, feature)
    require_bearer(request, token, f"{feature} needs Authorization: Bearer <ADMIN_TOKEN>")


def require_scraper(settings: Settings, request: Request) -> None:
    """Who may read ``/metrics``: anyone with ``METRICS_PUBLIC``, else the bearer token, else loopback only."""
    if settings.metrics_public:
        return
    if settings.admin_token:
        require_bearer(request, settings.admin_token, "metrics need Authorization: Bearer <ADMIN_TOKEN>")
        return
    host = request.client.host if request.client else ""
    if not is_loopback_host(host):
        raise Forbidden(
            "metrics are served to loopback clients only: set ADMIN_TOKEN (then scrape with a bearer token) "
            "or METRICS_PUBLIC=true",
            reason="loopback_only",
        )
