"""The one place where an error becomes an HTTP answer, and the answer providers expect when all went well.

Every endpoint of the receiver raises an :class:`~veo_archiver.errors.ArchiverError` (or lets one through)
and :func:`error_response` renders it, registered for the whole app by :data:`EXCEPTION_HANDLERS`; the
callback path calls it directly after counting. One JSON shape for API callers::

    {"code": <status>, "msg": <message>, "reason": <reason>}

    RequestError        its ``status_code`` (400, 401, 403, 404, 408, 413, 431)
    TransientError      503 with ``Retry-After: 5``: try again later
    any other           500 (ConfigError, PermanentError: our fault, never the caller's)

The head guard (:mod:`receiver.http_edge`) answers before there is a request for the app: the same JSON,
as the bytes of a whole HTTP/1.1 answer (:func:`raw_error_response`). The HTML ops page is the only
exception: it builds its own page from the same error through :func:`error_status` and :func:`error_headers`.
The refusals only the edge raises (:class:`BearerRequired`, :class:`Forbidden`, :class:`NotFound`) are part of
the one tree in :mod:`veo_archiver.errors` like every other.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message

from veo_archiver.errors import ArchiverError, BearerRequired, RequestError, TransientError

#: the body every provider expects on success (kie.ai documents it; the others take any 2xx)
ACK = {"code": 200, "msg": "success"}
RETRY_AFTER_S = 5
BEARER_CHALLENGE = 'Bearer realm="veo-archiver"'


def error_status(exc: ArchiverError) -> int:
    if isinstance(exc, RequestError):
        return exc.status_code
    if isinstance(exc, TransientError):
        return 503
    return 500


def error_headers(exc: ArchiverError) -> dict[str, str]:
    if isinstance(exc, BearerRequired):
        return {"WWW-Authenticate": BEARER_CHALLENGE}
    if isinstance(exc, TransientError):
        return {"Retry-After": str(RETRY_AFTER_S)}
    return {}


def error_response(exc: ArchiverError) -> Response:
    """The JSON answer for ``exc``: the only function in the receiver that turns an error into HTTP."""
    status = error_status(exc)
    return JSONResponse(
        {"code": status, "msg": exc.message, "reason": exc.reason},
        status_code=status,
        headers=error_headers(exc) or None,
    )


def raw_error_response(exc: ArchiverError) -> bytes:
    """:func:`error_response` as the bytes of a whole HTTP/1.1 answer that closes its connection."""
    status = error_status(exc)
    body = json.dumps({"code": status, "msg": exc.message, "reason": exc.reason}, separators=(",", ":")).encode()
    phrase = HTTPStatus(status).phrase
    headers = "".join(f"{k.lower()}: {v}\r\n" for k, v in error_headers(exc).items())
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"{headers}connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


#: :data:`ACK` as Starlette's ``JSONResponse`` renders it (compact separators), encoded once
ACK_BODY = b'{"code":200,"msg":"success"}'
_ACK_HEADERS = [(b"content-length", str(len(ACK_BODY)).encode()), (b"content-type", b"application/json")]
_ACK_BODY_MESSAGE: Message = {"type": "http.response.body", "body": ACK_BODY}
_ACK_STARTS: dict[str, Message] = {}


def ack_message(outcome: str) -> tuple[Message, Message]:
    """The ASGI messages of ``{"code":200,"msg":"success"}`` with what the intake did in
    ``X-Archiver-Outcome``; built once per outcome (the callback path sends them thousands of times a second)."""
    start = _ACK_STARTS.get(outcome)
    if start is None:
        headers = [(b"x-archiver-outcome", outcome.encode("latin-1")), *_ACK_HEADERS]
        start = _ACK_STARTS[outcome] = {"type": "http.response.start", "status": 200, "headers": headers}
    return start, _ACK_BODY_MESSAGE


async def _handle(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ArchiverError):  # registered for ArchiverError only
        raise exc
    return error_response(exc)


#: ``Starlette(exception_handlers=EXCEPTION_HANDLERS)``: an error raised by any endpoint is answered here
EXCEPTION_HANDLERS = {ArchiverError: _handle}
