"""The httpx transport of every download: httpcore's connection pool over the egress guard.

httpx's own ``HTTPTransport`` builds its pool inside and offers no way to give it a network backend, so
:class:`GuardedTransport` is the small public equivalent: an ``httpx.BaseTransport`` that owns an
``httpcore.ConnectionPool(network_backend=GuardedBackend(egress))`` (every TCP connect checked by
:mod:`workers.egress`), converts the request and the streamed response between the two libraries, and maps
httpcore's exceptions to httpx's of the same name (:data:`EXCEPTIONS`; httpx's own table is private).
Anything else raised below (the guard's :class:`~veo_archiver.errors.DownloadRefused`) passes through as is.
Public APIs only; tested with httpx 0.28 and httpcore 1.0.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

import httpcore
import httpx

from workers.egress import EgressPolicy, GuardedBackend

#: httpcore's exceptions and the httpx ones of the same name; the most specific class of an error wins
EXCEPTIONS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextlib.contextmanager
def httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as httpx's (``from`` the original)."""
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            mapped = EXCEPTIONS.get(kind)
            if mapped is not None:
                raise mapped(str(exc)) from exc
        raise


class _Body(httpx.SyncByteStream):
    """A response body streamed from httpcore; closing it closes the httpcore response (and frees its
    connection, or drops it when the body was not read to the end)."""

    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        with httpx_errors():
            yield from self._response.iter_stream()

    def close(self) -> None:
        with httpx_errors():
            self._response.close()


class GuardedTransport(httpx.BaseTransport):
    def __init__(self, egress: EgressPolicy, ssl_context: ssl.SSLContext, *, max_connections: int = 4) -> None:
        self.backend = GuardedBackend(egress)
        self.pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            network_backend=self.backend,
            retries=0,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        assert isinstance(request.stream, httpx.SyncByteStream)  # always, from a sync client
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,  # "timeout" (connect, read, write, pool) among them
        )
        with httpx_errors():
            response = self.pool.handle_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.pool.close()
