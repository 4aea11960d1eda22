"""The download transport (workers/transport.py) against the loopback misbehaving server: requests and
streamed responses convert both ways, closing a response frees or drops its connection, timeouts travel in
the request, and httpcore's errors come out as httpx's of the same name."""

from __future__ import annotations

from collections.abc import Iterator

import httpcore
import httpx
import pytest

from tests.misbehaving import LoopbackOnlyNetwork, MisbehavingServer, Route
from veo_archiver.sim.media import make_mp4
from workers.egress import EgressPolicy
from workers.transport import EXCEPTIONS, GuardedTransport, httpx_errors

VIDEO = make_mp4(300_000, seed=3)


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> LoopbackOnlyNetwork:
    return LoopbackOnlyNetwork.install(monkeypatch)


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    with MisbehavingServer() as srv:
        yield srv


def _client(server: MisbehavingServer) -> httpx.Client:
    egress = EgressPolicy(allow_hosts={("127.0.0.1", server.port)})
    return httpx.Client(transport=GuardedTransport(egress, httpx.create_ssl_context()), trust_env=False)


def test_streamed_response_and_connection_reuse(server: MisbehavingServer, network: LoopbackOnlyNetwork) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO))
    with _client(server) as client:
        with client.stream("GET", url, headers={"Range": "bytes=10-"}) as response:
            assert response.status_code == 206 and response.headers["content-range"].startswith("bytes 10-")
            assert response.http_version == "HTTP/1.1"
            assert b"".join(response.iter_raw()) == VIDEO[10:]
        assert client.get(url).content == VIDEO  # read to the end: the same connection serves again
        assert len(network.connects) == 1
        with client.stream("GET", url) as response:
            next(response.iter_raw())  # closed with most of the body unread: that connection is dropped
        assert client.get(url).content == VIDEO
        assert len(network.connects) == 2
    assert server.ranges("/v.mp4")[0] == "bytes=10-"


def test_timeouts_travel_with_the_request(server: MisbehavingServer) -> None:
    url = server.add("/slow.mp4", Route(body=VIDEO, trickle=(1000, 1.0)))
    with _client(server) as client:
        with client.stream("GET", url, timeout=httpx.Timeout(5.0, read=0.2)) as response:
            with pytest.raises(httpx.ReadTimeout) as caught:
                b"".join(response.iter_raw())
    assert isinstance(caught.value.__cause__, httpcore.ReadTimeout)
    assert caught.value.request.url == url  # httpx fills in the request, as for its own transport


def test_a_closed_port_is_httpx_connect_error(server: MisbehavingServer) -> None:
    egress = EgressPolicy(allow_hosts={("127.0.0.1", 9)})
    with httpx.Client(transport=GuardedTransport(egress, httpx.create_ssl_context())) as client:
        with pytest.raises(httpx.ConnectError):
            client.get("http://127.0.0.1:9/v.mp4")


@pytest.mark.parametrize("core", list(EXCEPTIONS))
def test_every_httpcore_error_maps_to_the_httpx_one_of_the_same_name(core: type[Exception]) -> None:
    with pytest.raises(httpx.TransportError) as caught:
        with httpx_errors():
            raise core("boom")
    assert type(caught.value).__name__ == core.__name__ and str(caught.value) == "boom"
    assert caught.value.__cause__.__class__ is core


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError):
        with httpx_errors():
            raise KeyError("not httpcore's")
