"""The SSRF guard: the address policy on its own (pure, with an injected resolver), the scheme rule, and
end to end through the real client: DNS rebinding, re-checks on every new connection.

No test leaves the machine: the ``network`` fixture stands in for ``socket.create_connection``; a "public"
address a test resolves to is mapped to the loopback file server, and any other connect fails the test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import httpcore
import httpx
import pytest

from tests.misbehaving import LoopbackOnlyNetwork, MisbehavingServer, Route
from veo_archiver.errors import DownloadRefused
from veo_archiver.sim.media import make_mp4
from workers.egress import EgressPolicy, GuardedBackend, refusal, require_http_url, system_resolver
from workers.fetch import FetchPolicy, VideoStream, build_client
from workers.transport import GuardedTransport

VIDEO = make_mp4(200_000, seed=11)
PUBLIC = "93.184.216.34"


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> LoopbackOnlyNetwork:
    return LoopbackOnlyNetwork.install(monkeypatch)


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    with MisbehavingServer() as srv:
        yield srv


class Resolver:
    """Answers from a script, one answer per call (the last one repeats), and counts the calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


# ---------------------------------------------------------------------------------------------------------
# refusal(): every class of address that is not public unicast


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.0.1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "non-global"),
        ("100.127.255.254", "non-global"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::1", "6to4 to loopback"),
        ("2002:a9fe:a9fe::1", "6to4 to cloud metadata"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("2001:db8::1", "private"),
        ("192.0.2.1", "private"),
        ("198.18.0.1", "private"),
        ("0.1.2.3", "private"),
    ],
)
def test_refused_classes(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


# ---------------------------------------------------------------------------------------------------------
# EgressPolicy.addresses(): resolve once, every answer must pass


def test_public_host_gives_its_checked_addresses() -> None:
    resolver = Resolver(["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
    policy = EgressPolicy(resolver=resolver)
    assert policy.addresses("example.com", 443) == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert resolver.calls == [("example.com", 443)]


@pytest.mark.parametrize("private", ["10.0.0.7", "127.0.0.1", "169.254.169.254", "::1", "fd00:ec2::254"])
def test_one_private_answer_among_public_ones_is_refused(private: str) -> None:
    for answer in ([PUBLIC, private], [private, PUBLIC]):
        with pytest.raises(DownloadRefused) as caught:
            EgressPolicy(resolver=Resolver(answer)).addresses("cdn.example", 443)
        assert caught.value.reason == "ssrf" and private in caught.value.message


def test_literal_addresses_skip_the_resolver() -> None:
    resolver = Resolver([PUBLIC])
    policy = EgressPolicy(resolver=resolver)
    assert policy.addresses("8.8.8.8", 80) == ["8.8.8.8"]
    assert policy.addresses("[2606:4700:4700::1111]", 443) == ["2606:4700:4700::1111"]
    with pytest.raises(DownloadRefused):
        policy.addresses("[::1]", 80)
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [([], "dns_failure"), (OSError("Name or service not known"), "dns_failure"), (["not-an-ip"], "ssrf")],
)
def test_resolver_failures_are_refusals(answer: list[str] | OSError, reason: str) -> None:
    def resolver(host: str, port: int) -> list[str]:
        if isinstance(answer, OSError):
            raise answer
        return answer

    with pytest.raises(DownloadRefused) as caught:
        EgressPolicy(resolver=resolver).addresses("cdn.example", 443)
    assert caught.value.reason == reason


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "017700000001", "127.1", "localhost"])
def test_numeric_and_local_spellings_of_loopback_are_refused(host: str) -> None:
    """The check is on what the OS resolver makes of the name, not on how the URL spells it."""
    with pytest.raises(DownloadRefused) as caught:
        EgressPolicy(resolver=system_resolver).addresses(host, 80)
    assert caught.value.reason == "ssrf" and "loopback" in caught.value.message


def test_allow_list_matches_exact_host_and_port_only() -> None:
    resolver = Resolver(["127.0.0.1"])
    policy = EgressPolicy(allow_hosts={("127.0.0.1", 8080), ("Files.Internal", 9000)}, resolver=resolver)
    assert policy.addresses("127.0.0.1", 8080) == ["127.0.0.1"]
    assert policy.addresses("files.internal", 9000) == ["127.0.0.1"]  # host names compare case-insensitively
    for host, port in [
        ("127.0.0.1", 8081),
        ("127.0.0.2", 8080),
        ("localhost", 8080),
        ("files.internal", 9001),
        ("[::1]", 8080),
        ("::ffff:127.0.0.1", 8080),
        ("other.internal", 9000),
    ]:
        with pytest.raises(DownloadRefused):
            policy.addresses(host, port)


# ---------------------------------------------------------------------------------------------------------
# schemes


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/v.mp4",
        "gopher://127.0.0.1:70/_GET%20/",
        "data:video/mp4;base64,AAAA",
        "javascript:alert(1)",
        "dict://127.0.0.1:11211/stat",
        "http://",
        "//cdn.example/v.mp4",
        "http://[::1/v.mp4",
    ],
)
def test_only_http_and_https_urls(url: str, network: LoopbackOnlyNetwork) -> None:
    with pytest.raises(DownloadRefused) as caught:
        require_http_url(url)
    assert caught.value.reason == "scheme"
    client = build_client(FetchPolicy(), EgressPolicy())
    stream = VideoStream(client, url, FetchPolicy())
    with pytest.raises(DownloadRefused) as caught:
        b"".join(stream)
    assert caught.value.reason == "scheme" and stream.error is caught.value
    assert network.connects == []


@pytest.mark.parametrize("url", ["http://cdn.example/v.mp4", "https://cdn.example:8443/a?b=c", "HTTPS://CDN.EXAMPLE/"])
def test_http_and_https_urls_pass(url: str) -> None:
    require_http_url(url)


# ---------------------------------------------------------------------------------------------------------
# the backend: connect to what was checked, nothing else


def test_backend_refuses_before_any_connect(network: LoopbackOnlyNetwork) -> None:
    backend = GuardedBackend(EgressPolicy(resolver=Resolver(["10.0.0.5"])))
    with pytest.raises(DownloadRefused):
        backend.connect_tcp("intranet.example", 80, timeout=1)
    with pytest.raises(DownloadRefused):
        backend.connect_unix_socket("/var/run/docker.sock")
    assert network.connects == []


def test_backend_connects_to_the_checked_address(server: MisbehavingServer, network: LoopbackOnlyNetwork) -> None:
    network.nat[(PUBLIC, server.port)] = ("127.0.0.1", server.port)
    resolver = Resolver([PUBLIC], ["127.0.0.1"])
    stream = GuardedBackend(EgressPolicy(resolver=resolver)).connect_tcp("cdn.example", server.port, timeout=5)
    stream.close()
    assert resolver.calls == [("cdn.example", server.port)]
    assert network.connects == [(PUBLIC, server.port)]


def test_dns_rebinding_cannot_swap_the_address_after_the_check(
    server: MisbehavingServer, network: LoopbackOnlyNetwork
) -> None:
    """The resolver answers a public address, then 127.0.0.1. A guard that checks one answer and lets the
    connect resolve again (by name: the network stand-in resolves names with the same resolver, like the
    OS would) would resolve twice and reach 127.0.0.1; the guarded client resolves once and connects to
    the address it checked."""
    server.add("/v.mp4", Route(body=VIDEO))
    network.nat[(PUBLIC, server.port)] = ("127.0.0.1", server.port)  # the "public" host is our file server
    resolver = Resolver([PUBLIC], ["127.0.0.1"])
    network.resolver = resolver
    policy = FetchPolicy()
    client = build_client(policy, EgressPolicy(resolver=resolver))
    stream = VideoStream(client, f"http://rebind.example:{server.port}/v.mp4", policy)
    assert b"".join(stream) == VIDEO
    assert resolver.calls == [("rebind.example", server.port)]
    assert network.connects == [(PUBLIC, server.port)]


def test_every_new_connection_is_checked_again(server: MisbehavingServer, network: LoopbackOnlyNetwork) -> None:
    """The first connection drops; the resume needs a new one, and by then the name points at 127.0.0.1."""
    server.add("/v.mp4", Route(body=VIDEO, drop_after=50_000))
    network.nat[(PUBLIC, server.port)] = ("127.0.0.1", server.port)
    resolver = Resolver([PUBLIC], ["127.0.0.1"])
    policy = FetchPolicy()
    stream = VideoStream(
        build_client(policy, EgressPolicy(resolver=resolver)),
        f"http://rebind.example:{server.port}/v.mp4",
        policy,
    )
    with pytest.raises(DownloadRefused) as caught:
        b"".join(stream)
    assert caught.value.reason == "ssrf" and "127.0.0.1" in caught.value.message
    assert len(resolver.calls) == 2
    assert network.connects == [(PUBLIC, server.port)]
    assert server.ranges("/v.mp4") == [None]


def test_guarded_pool_is_the_only_transport(network: LoopbackOnlyNetwork) -> None:
    """No proxy from the environment may bypass the guarded pool (trust_env is off)."""
    transport = GuardedTransport(EgressPolicy(), httpx.create_ssl_context())
    assert isinstance(transport.pool, httpcore.ConnectionPool) and isinstance(transport.backend, GuardedBackend)
    client = build_client(FetchPolicy(), EgressPolicy())
    assert client.trust_env is False and not client.follow_redirects
    with pytest.raises(DownloadRefused):  # what only the guarded backend raises, from the client itself
        client.get("http://10.1.2.3/v.mp4")
    assert network.connects == []


def test_proxy_environment_is_ignored(
    server: MisbehavingServer, network: LoopbackOnlyNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{server.port}")
    resolver = Resolver(["10.9.8.7"])
    policy = FetchPolicy()
    stream = VideoStream(build_client(policy, EgressPolicy(resolver=resolver)), "http://intranet.example/v.mp4", policy)
    with pytest.raises(DownloadRefused):
        b"".join(stream)
    assert sum(server.hits.values()) == 0 and network.connects == []


def test_system_resolver_gives_unique_addresses() -> None:
    answers = system_resolver("127.0.0.1", 80)
    assert answers == ["127.0.0.1"]  # one entry, although getaddrinfo answers once per socket type
