"""The receiver's HTTP edge pieces on a tiny inline app: the one error mapping, the one bounded body reader,
the one bearer check. No Redis: nothing here reaches past the request."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator, MutableMapping
from http import HTTPStatus
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from receiver import auth, body
from receiver.responses import ACK, EXCEPTION_HANDLERS, ack_message, error_response, raw_error_response
from veo_archiver.errors import (
    ArchiverError,
    BearerRequired,
    ConfigError,
    Forbidden,
    HeadersTooLarge,
    InvalidPayload,
    NotFound,
    PayloadTooLarge,
    PermanentError,
    QueueUnavailable,
    Rejected,
    RequestError,
    RequestTimeout,
    TransientError,
)
from veo_archiver.settings import Settings

LIMIT = 64
ADMIN = "responses-admin-token-7c1e"

#: every refusal the receiver can raise, with the status and default reason the edge documents
REFUSALS: dict[type[RequestError], tuple[int, str]] = {
    RequestError: (400, "error"),
    Rejected: (401, "unauthenticated"),
    BearerRequired: (401, "unauthenticated"),
    InvalidPayload: (400, "invalid_payload"),
    PayloadTooLarge: (413, "payload_too_large"),
    RequestTimeout: (408, "request_timeout"),
    HeadersTooLarge: (431, "headers_too_large"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
}


def subclasses(cls: type[RequestError]) -> Iterator[type[RequestError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


def test_every_request_error_is_documented_here() -> None:
    assert {RequestError, *subclasses(RequestError)} == set(REFUSALS)


@pytest.mark.parametrize("cls", list(REFUSALS))
def test_a_refusal_answers_its_status_in_the_one_json_shape(cls: type[RequestError]) -> None:
    status, reason = REFUSALS[cls]
    response = error_response(cls("what went wrong"))
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {"code": status, "msg": "what went wrong", "reason": reason}
    assert response.headers["content-type"] == "application/json"
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("exc", [HeadersTooLarge("headers over 10 bytes"), QueueUnavailable("redis is down")])
def test_the_raw_answer_is_the_same_json_as_a_whole_http_response(exc: ArchiverError) -> None:
    """What the head guard writes before there is an app request: the same status, headers and body."""
    head, _, body = raw_error_response(exc).partition(b"\r\n\r\n")
    expected = error_response(exc)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == f"HTTP/1.1 {expected.status_code} {HTTPStatus(expected.status_code).phrase}"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    assert headers.get("retry-after") == expected.headers.get("retry-after")
    assert json.loads(body) == json.loads(bytes(expected.body))


def test_a_reason_given_at_the_raise_is_the_reason_answered() -> None:
    response = error_response(InvalidPayload("no task id", reason="missing_task_id"))
    assert (response.status_code, json.loads(bytes(response.body))["reason"]) == (400, "missing_task_id")


def test_only_the_bearer_refusal_carries_the_bearer_challenge() -> None:
    assert error_response(BearerRequired("token")).headers["www-authenticate"] == 'Bearer realm="veo-archiver"'
    assert "www-authenticate" not in error_response(Rejected("bad signature")).headers


@pytest.mark.parametrize("exc", [TransientError("later"), QueueUnavailable("redis is down")])
def test_transient_errors_are_503_with_retry_after(exc: TransientError) -> None:
    response = error_response(exc)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert json.loads(bytes(response.body)) == {"code": 503, "msg": exc.message, "reason": exc.reason}


@pytest.mark.parametrize("exc", [ConfigError("no key"), PermanentError("bug"), ArchiverError("root")])
def test_other_errors_are_ours_500(exc: ArchiverError) -> None:
    response = error_response(exc)
    assert response.status_code == 500 and json.loads(bytes(response.body))["reason"] == exc.reason


def test_the_ack_is_the_exact_bytes_providers_expect() -> None:
    start, body = ack_message("accepted")
    assert body == {"type": "http.response.body", "body": b'{"code":200,"msg":"success"}'}
    assert json.loads(body["body"]) == ACK == {"code": 200, "msg": "success"}
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"x-archiver-outcome"] == b"accepted"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert ack_message("duplicate")[0] is ack_message("duplicate")[0]  # built once per outcome
    assert dict(ack_message("duplicate")[0]["headers"])[b"x-archiver-outcome"] == b"duplicate"


# ------------------------------------------------------------------------------------------- the inline app


def inline_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings(admin_token=ADMIN)

    async def echo(request: Request) -> Response:
        data = await body.read_bounded(request, LIMIT)
        return JSONResponse({"size": len(data)})

    async def admin(request: Request) -> Response:
        auth.require_admin(settings, request, feature="The thing")
        return JSONResponse({"ok": True})

    async def transient(request: Request) -> Response:
        raise QueueUnavailable("redis is down")

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/admin", admin, methods=["GET"]),
            Route("/transient", transient, methods=["GET"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )


def test_an_error_raised_by_an_endpoint_is_answered_by_the_one_mapping() -> None:
    with TestClient(inline_app()) as client:
        response = client.get("/transient")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json() == {"code": 503, "msg": "redis is down", "reason": "queue_unavailable"}


def test_a_body_within_the_bound_is_read_whole() -> None:
    with TestClient(inline_app()) as client:
        assert client.post("/echo", content=b"x" * LIMIT).json() == {"size": LIMIT}
        assert client.post("/echo", content=(b"x" * 16 for _ in range(4))).json() == {"size": LIMIT}


def test_an_over_long_content_length_is_413_before_reading() -> None:
    with TestClient(inline_app()) as client:
        response = client.post("/echo", content=b"{}", headers={"content-length": str(LIMIT + 1)})
    assert response.status_code == 413
    assert response.json()["reason"] == "payload_too_large"
    assert f"body of {LIMIT + 1} bytes" in response.json()["msg"]  # refused on the declared length


def test_a_chunked_body_past_the_bound_is_413() -> None:
    chunks = [b"y" * 16] * 5  # 80 bytes, no Content-Length: counted while streaming
    with TestClient(inline_app()) as client:
        response = client.post("/echo", content=iter(chunks))
    assert response.status_code == 413
    assert response.json() == {
        "code": 413,
        "msg": f"body is over the {LIMIT}-byte limit",
        "reason": "payload_too_large",
    }


def call(app: Starlette, headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]) -> tuple[int, bytes]:
    """Drive the ASGI app by hand: what TestClient cannot send (a disconnect mid-body, raw header bytes)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    incoming = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(incoming, {"type": "http.disconnect"})

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_client_that_disconnects_mid_body_gets_a_clean_400() -> None:
    status, answer = call(
        inline_app(),
        [(b"content-length", b"40")],
        [{"type": "http.request", "body": b"x" * 10, "more_body": True}, {"type": "http.disconnect"}],
    )
    assert status == 400 and json.loads(answer)["reason"] == "client_disconnect"


@pytest.mark.parametrize("declared", [b"\xb2", b"1e3", b"-5", b" 12 "])
def test_an_odd_content_length_leaves_the_count_to_the_stream(declared: bytes) -> None:
    status, answer = call(inline_app(), [(b"content-length", declared)], [{"type": "http.request", "body": b"{}"}])
    assert (status, json.loads(answer)) == (200, {"size": 2})


# ------------------------------------------------------------------------------------------- the bearer check


def test_the_bearer_check_accepts_only_the_right_bearer_token() -> None:
    assert auth.bearer_matches(f"Bearer {ADMIN}", ADMIN)
    assert auth.bearer_matches(f"bearer  {ADMIN} ", ADMIN)  # the scheme is case-insensitive (RFC 7235)
    for header in (None, "", "Bearer", "Bearer ", f"Bearer {ADMIN}x", f"Basic {ADMIN}", ADMIN, f"Token {ADMIN}"):
        assert not auth.bearer_matches(header, ADMIN), header
    assert not auth.bearer_matches("Bearer ", "")  # an empty configured token never matches


def test_the_bearer_check_compares_in_constant_time() -> None:
    # no timing test: the code says it. The bearer check hands the token to token_matches, which compares
    # with hmac.compare_digest and nothing else
    assert "token_matches(" in inspect.getsource(auth.bearer_matches)
    assert "hmac.compare_digest(" in inspect.getsource(auth.token_matches)
    assert "==" not in inspect.getsource(auth.token_matches)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"Bearer {ADMIN}"}, 200),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {ADMIN}"}, 401),
        ({}, 401),
    ],
)
def test_the_admin_check_on_an_endpoint(headers: dict[str, str], status: int) -> None:
    with TestClient(inline_app()) as client:
        response = client.get("/admin", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["reason"] == "unauthenticated"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_without_an_admin_token_the_admin_endpoint_is_404_disabled() -> None:
    with TestClient(inline_app(Settings(admin_token=None))) as client:
        response = client.get("/admin", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404
    assert response.json()["reason"] == "disabled" and "ADMIN_TOKEN" in response.json()["msg"]


def scrape_request(settings: Settings, host: str, authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "headers": headers, "client": (host, 5000)})


def test_who_may_scrape_metrics() -> None:
    with_token, without = Settings(admin_token=ADMIN), Settings(admin_token=None)
    auth.require_scraper(with_token, scrape_request(with_token, "203.0.113.9", f"Bearer {ADMIN}"))
    with pytest.raises(BearerRequired):  # loopback does not help once a token is configured
        auth.require_scraper(with_token, scrape_request(with_token, "127.0.0.1"))
    auth.require_scraper(without, scrape_request(without, "::1"))
    with pytest.raises(Forbidden) as refused:
        auth.require_scraper(without, scrape_request(without, "203.0.113.9", f"Bearer {ADMIN}"))
    assert refused.value.reason == "loopback_only" and refused.value.status_code == 403
    for public in (Settings(admin_token=ADMIN, metrics_public=True), Settings(metrics_public=True)):
        auth.require_scraper(public, scrape_request(public, "203.0.113.9"))
