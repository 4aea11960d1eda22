"""SSRF guard for downloads: which addresses a worker may connect to, checked at connect time.

A callback body can point anywhere, so every URL (and every redirect hop) is resolved here, *every*
address it resolves to must be public, and the connection is opened to an address that was checked:
there is no window between the check and the connect for DNS rebinding. The hook is an httpcore network
backend, so it sees each TCP connection httpx opens, including those for redirects.

``DOWNLOAD_ALLOW_HOSTS`` (``host:port`` entries) is the only way to let a private or loopback target
through; tests use it for files served on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore

from veo_archiver.errors import DownloadRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# Cloud metadata endpoints that are not covered by the private/link-local ranges.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.170.2")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be fetched from, or ``None`` when it is a public unicast address.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
    ``2002::/16``) are judged by the IPv4 address they lead to.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped)
        if address in NAT64:
            return refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None and (why := refusal(address.sixtofour)) is not None:
            return f"6to4 to {why}"
        if address.is_site_local:
            return "site-local address"
    if address in METADATA_ADDRESSES:
        return "cloud metadata address"
    for label, flag in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return f"{label} address"
    if not address.is_global:
        return "non-global address"  # e.g. CGNAT 100.64.0.0/10
    return None


def require_http_url(url: str) -> None:
    """Refuse anything but an absolute http(s) URL with a host (file:, ftp:, gopher:, data: …)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise DownloadRefused(f"not a URL: {url[:120]!r}", reason="scheme") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise DownloadRefused(f"not an http(s) URL: {url[:120]!r}", reason="scheme")


class EgressPolicy:
    def __init__(self, allow_hosts: Iterable[tuple[str, int]] = (), resolver: Resolver = system_resolver) -> None:
        self.allow_hosts = frozenset((h.lower(), p) for h, p in allow_hosts)
        self._resolver = resolver

    def allowed_private(self, host: str, port: int) -> bool:
        return (host.lower().strip("[]"), port) in self.allow_hosts

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` and return the addresses to connect to; refuse if any of them is not public."""
        bare = host.strip("[]")
        try:
            literal: IPAddress | None = ipaddress.ip_address(bare)
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [str(literal)]
        else:
            try:
                candidates = list(self._resolver(bare, port))
            except (OSError, UnicodeError) as exc:
                raise DownloadRefused(f"cannot resolve {host}: {exc}", reason="dns_failure") from exc
        if not candidates:
            raise DownloadRefused(f"{host} resolves to no address", reason="dns_failure")
        if self.allowed_private(bare, port):
            return candidates
        for text in candidates:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise DownloadRefused(f"{host} resolved to unparsable address {text!r}", reason="ssrf") from None
            why = refusal(address)
            if why is not None:
                raise DownloadRefused(
                    f"{host}:{port} resolves to {address} ({why}); add it to DOWNLOAD_ALLOW_HOSTS to allow",
                    reason="ssrf",
                )
        return candidates


class GuardedBackend(httpcore.SyncBackend):
    """httpcore backend that connects only to addresses :class:`EgressPolicy` approved a moment before.

    The name is resolved once per connection and the socket is opened to one of *those* addresses, never
    to the name again, so a DNS answer that changes between the check and the connect cannot be used.
    """

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self._policy.addresses(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise DownloadRefused(f"unix socket {path} is not a download target", reason="ssrf")
