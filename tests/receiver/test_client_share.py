"""receiver/limits.py's per-client share of the request slots, on a tiny inline app that holds each request until
told to finish; the client is the one :class:`receiver.proxy.ProxyHeaders` decides, as in the real stack."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from receiver.limits import ConcurrencyLimit, client_key
from receiver.proxy import ProxyHeaders
from veo_archiver.errors import ConfigError
from veo_archiver.settings import Settings


class Held:
    """An ASGI app that answers 200 once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.inside = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.inside += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_client_keys() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("not-an-address:x") == "not-an-address:x"


def test_one_client_holds_at_most_its_share_and_others_still_get_in() -> None:
    async def scenario() -> None:
        app = Held()
        shed: list[str] = []
        limited = ConcurrencyLimit(app, limit=6, per_client=2, on_shed=shed.append)
        stack = ProxyHeaders(limited, trusted=["10.0.0.1"])

        def client(peer: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(stack, client=(peer, 1234)), base_url="http://r")

        async with client("198.51.100.1") as flooder, client("10.0.0.1") as proxy, client("198.51.100.2") as other:
            flood = [asyncio.create_task(flooder.post("/callbacks/kie")) for _ in range(2)]
            forwarded = [
                asyncio.create_task(proxy.post("/callbacks/kie", headers={"X-Forwarded-For": "203.0.113.7"}))
                for _ in range(2)
            ]
            while app.inside < 4:
                await asyncio.sleep(0.01)
            refused = await flooder.post("/callbacks/kie")
            assert (refused.status_code, refused.json()["reason"]) == (503, "client_concurrency")
            assert refused.headers["retry-after"] == "5"
            # the client behind the proxy is 203.0.113.7, at its share too; the proxy's own address is not it
            behind = await proxy.post("/callbacks/kie", headers={"X-Forwarded-For": "203.0.113.7"})
            assert behind.json()["reason"] == "client_concurrency"
            third = asyncio.create_task(other.post("/callbacks/kie"))
            while app.inside < 5:
                await asyncio.sleep(0.01)
            assert limited.by_client == {"198.51.100.1": 2, "203.0.113.7": 2, "198.51.100.2": 1}
            app.release.set()
            answers = await asyncio.gather(*flood, *forwarded, third)
            assert [a.status_code for a in answers] == [200] * 5
            assert limited.by_client == {} and limited.in_flight == 0  # every slot given back
            assert shed == ["client_concurrency", "client_concurrency"]

    asyncio.run(scenario())


def test_the_global_bound_still_applies_and_a_request_without_address_has_no_share() -> None:
    async def scenario() -> None:
        app = Held()
        shed: list[str] = []
        limited = ConcurrencyLimit(app, limit=2, per_client=1, on_shed=shed.append)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(limited, client=None), base_url="http://r") as c:  # type: ignore[arg-type]
            held = [asyncio.create_task(c.post("/callbacks/kie")) for _ in range(2)]  # no address: no share
            while app.inside < 2:
                await asyncio.sleep(0.01)
            refused = await c.post("/callbacks/kie")
            assert refused.json()["reason"] == "overloaded"
            app.release.set()
            await asyncio.gather(*held)
        assert shed == ["concurrency"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("env", "share"),
    [
        ({}, 64),
        ({"MAX_REQUESTS_PER_CLIENT": ""}, 64),
        ({"MAX_REQUESTS_PER_CLIENT": "12"}, 12),
        ({"MAX_CONCURRENT_REQUESTS": "40"}, 10),
        ({"MAX_CONCURRENT_REQUESTS": "2"}, 1),
    ],
)
def test_max_requests_per_client_setting(env: dict[str, str], share: int) -> None:
    assert Settings.from_env(env).max_requests_per_client == share


@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_max_requests_per_client_is_validated(bad: str) -> None:
    with pytest.raises(ConfigError, match="MAX_REQUESTS_PER_CLIENT"):
        Settings.from_env({"MAX_REQUESTS_PER_CLIENT": bad})
