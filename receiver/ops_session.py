"""Who may use the ops pages (``/ops``, ``/ops/tasks/…``) and their actions (``POST /ops/actions/…``).

Access needs ``ADMIN_TOKEN``; without it the pages answer 404 and say so. With it: ``Authorization: Bearer
<token>``, or the ops cookie. A browser opens ``/ops?token=<token>`` once: the token is exchanged for an
HttpOnly, SameSite=Strict cookie (an expiry and a random nonce under a MAC keyed by the token, never the
token itself), valid for
every page under ``/ops``, and the browser is redirected to the page without the token, so it leaves the
address bar and the history. Anything else is refused with 401.

Actions change state, so they need the cookie session *and* its CSRF token: :func:`csrf_token` derives one
per session (a MAC of the cookie's value under the admin token), each page's forms carry it, and
:func:`require_csrf` compares it in constant time; a missing or wrong token is 403. SameSite=Strict already
keeps the cookie off cross-site requests; the token is the second lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from receiver.auth import admin_token, require_bearer, token_matches
from receiver.responses import error_headers, error_response, error_status
from veo_archiver.errors import Forbidden, Rejected, RequestError
from veo_archiver.settings import Settings

COOKIE = "veo_ops"
COOKIE_PATH = "/ops"
COOKIE_TTL_S = 12 * 3600
#: every ops answer's headers: no caching, no framing, no script at all (the pages have none)
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
}


def _mac(token: str, message: str) -> str:
    mac = hmac.new(token.encode("utf-8", "replace"), message.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def cookie_value(token: str, now: float, ttl_s: int = COOKIE_TTL_S) -> str:
    """``v2.<expiry>.<nonce>.<mac>``: the nonce makes each session's value (and so its CSRF token) its own."""
    expiry, nonce = int(now) + ttl_s, secrets.token_urlsafe(12)
    return f"v2.{expiry}.{nonce}.{_mac(token, f'veo-ops-cookie.v2.{expiry}.{nonce}')}"


def cookie_valid(value: str | None, token: str, now: float) -> bool:
    parts = (value or "").split(".")
    if len(parts) != 4 or not all(part.isascii() for part in parts):
        return False
    version, expiry_text, nonce, mac = parts
    if version != "v2" or not expiry_text.isdigit() or len(expiry_text) > 12 or len(nonce) > 64:
        return False
    expiry = int(expiry_text)
    expected = _mac(token, f"veo-ops-cookie.v2.{expiry}.{nonce}")
    return hmac.compare_digest(expected.encode(), mac.encode()) and now <= expiry


def csrf_token(settings: Settings, request: Request) -> str | None:
    """The CSRF token of this request's cookie session; None without a cookie (a bearer client: no forms)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie or not settings.admin_token:
        return None
    return _mac(settings.admin_token, f"veo-ops-csrf.v1.{cookie}")


def require_csrf(settings: Settings, request: Request, given: str | None) -> None:
    expected = csrf_token(settings, request)
    if expected is None or not given or not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise Forbidden(
            "This action needs the ops page's session and its form token: reload the page and try again.",
            reason="csrf",
        )


def refused(request: Request, exc: RequestError) -> Response:
    """An API client gets the one JSON refusal of :mod:`receiver.responses`; a browser (``Accept: text/html``)
    a small page built from the same error: same status, headers, message and reason."""
    if "text/html" not in request.headers.get("accept", ""):
        return error_response(exc)
    body = (
        "<!doctype html><title>veo-archiver ops</title>"
        f"<p>{html.escape(exc.message)}</p><p><small>{html.escape(exc.reason)}</small></p>\n"
    )
    return HTMLResponse(body, status_code=error_status(exc), headers={**HEADERS, **error_headers(exc)})


def _without_token(request: Request) -> str:
    """The address of this page as the client wrote it (a task id's ``%2F`` kept), minus ``token``."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(request.url.path)
    if not path.startswith(COOKIE_PATH) or path.startswith("//"):
        path = COOKIE_PATH
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    return path + ("?" + urlencode(rest) if rest else "")


def admit(settings: Settings, request: Request, now: float) -> Response | None:
    """``None`` when the request may see the page, the cookie exchange's redirect, or a raised refusal."""
    token = admin_token(settings, "The ops page")
    given = request.query_params.get("token")
    if given is not None:
        if not token_matches(given, token):
            raise Rejected("Wrong token.")
        response = RedirectResponse(_without_token(request), status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            cookie_value(token, now),
            max_age=COOKIE_TTL_S,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
    if not cookie_valid(request.cookies.get(COOKIE), token, now):
        hint = "The ops page needs Authorization: Bearer <ADMIN_TOKEN>, or open /ops?token=<ADMIN_TOKEN> once."
        require_bearer(request, token, hint)
    return None


def gate(settings: Settings, request: Request, now: float) -> Response | None:
    """What every ops page answers before its own content: ``None`` when the request may see it, else the
    cookie exchange's redirect or the refusal (:func:`admit`, :func:`refused`)."""
    try:
        return admit(settings, request, now)
    except RequestError as exc:
        return refused(request, exc)
