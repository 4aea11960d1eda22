"""receiver/proxy.py: the client behind a reverse proxy is decided from the trusted hop only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from receiver.proxy import HOST_CACHE_SIZE, ProxyHeaders, TrustedProxies


def seen_by_app(trusted: list[str], peer: str, headers: list[tuple[bytes, bytes]]) -> tuple[str, str]:
    got: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.update(scope)

    scope = {"type": "http", "client": (peer, 5555), "scheme": "http", "headers": headers}
    asyncio.run(ProxyHeaders(app, trusted)(scope, None, None))  # type: ignore[arg-type]
    return got["client"][0], got["scheme"]


def test_a_forged_loopback_entry_is_not_believed_even_with_star() -> None:
    """The review's finding: with FORWARDED_ALLOW_IPS=* a sender's ``X-Forwarded-For: 127.0.0.1, …`` opened
    the loopback-only /metrics. Only the rightmost entry (what the proxy in front appended) counts."""
    client, _ = seen_by_app(["*"], "10.1.2.3", [(b"x-forwarded-for", b"127.0.0.1, 203.0.113.9")])
    assert client == "203.0.113.9"


def test_an_untrusted_peer_cannot_set_its_address() -> None:
    client, scheme = seen_by_app(
        ["127.0.0.1"], "198.51.100.7", [(b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-proto", b"https")]
    )
    assert (client, scheme) == ("198.51.100.7", "http")


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    headers = [(b"x-forwarded-for", b"127.0.0.1, 198.51.100.7, 10.0.0.2"), (b"x-forwarded-proto", b"https")]
    client, scheme = seen_by_app(["10.0.0.0/8", "127.0.0.1"], "10.0.0.3", headers)
    assert (client, scheme) == ("198.51.100.7", "https")


def test_several_header_lines_are_one_list() -> None:
    headers = [(b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-for", b"192.0.2.44")]
    assert seen_by_app(["127.0.0.1"], "127.0.0.1", headers)[0] == "192.0.2.44"


@pytest.mark.parametrize(("host", "inside"), [("10.9.9.9", True), ("11.0.0.1", False), ("::1", True), ("x", False)])
def test_trusted_networks(host: str, inside: bool) -> None:
    assert (host in TrustedProxies(["10.0.0.0/8", "::1"])) is inside


def test_answers_are_remembered_within_a_bound() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "::1"])
    for _ in range(2):  # the second round is answered from memory, the same way
        assert "10.1.2.3" in trusted and "::1" in trusted
        assert "11.0.0.1" not in trusted and "not-an-address" not in trusted
    for i in range(HOST_CACHE_SIZE + 10):  # sender-chosen X-Forwarded-For hops cannot grow it without bound
        assert f"192.0.{i // 256 % 256}.{i % 256}:{i}" not in trusted
    assert len(trusted._known) <= HOST_CACHE_SIZE
    assert "10.1.2.3" in trusted and "11.0.0.1" not in trusted
