"""Who the client is behind a reverse proxy: decided from the trusted proxy hop only.

uvicorn's own proxy-header handling believes the *leftmost* ``X-Forwarded-For`` entry when every address is
trusted (``FORWARDED_ALLOW_IPS=*``), and that entry is whatever the sender wrote: ``X-Forwarded-For:
127.0.0.1`` then opened the loopback-only ``/metrics`` and faked the stored ``remote`` address. Here:

- the headers are read only when the connecting peer is a trusted proxy (``FORWARDED_ALLOW_IPS``: addresses,
  networks, or ``*``);
- the client is the rightmost ``X-Forwarded-For`` entry that is not itself a trusted proxy (a chain of
  trusted proxies is walked from the right). With ``*`` only the rightmost entry is believed: the one the
  proxy in front appended; everything to its left was written by the sender;
- ``X-Forwarded-Proto`` is taken from the same hop (its rightmost value).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


#: distinct peer addresses whose answer :class:`TrustedProxies` remembers before it starts afresh
HOST_CACHE_SIZE = 4096


class TrustedProxies:
    def __init__(self, entries: Sequence[str]) -> None:
        self.everyone = "*" in entries
        self.networks: list[Network] = []
        self.names: set[str] = set()
        # host -> trusted: parsing an address and testing every network costs microseconds per request, and
        # a receiver sees few distinct peers (its proxies); bounded, as X-Forwarded-For hops are sender-chosen
        self._known: dict[str, bool] = {}
        for entry in entries:
            if entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry)  # a unix socket path or a host name, matched literally

    def __contains__(self, host: str) -> bool:
        if self.everyone or host in self.names:
            return True
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= HOST_CACHE_SIZE:
                self._known.clear()
            known = self._known[host] = self._in_networks(host)
        return known

    def _in_networks(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_of(self, forwarded_for: str) -> str | None:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if not hops:
            return None
        if self.everyone:
            return hops[-1]
        for hop in reversed(hops):
            if hop not in self:
                return hop
        return hops[0]


class ProxyHeaders:
    """ASGI middleware: rewrites ``scope["client"]`` and ``scope["scheme"]`` from a trusted proxy's headers."""

    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if peer and peer[0] in self.trusted:
                forwarded_for: list[str] = []
                proto: str | None = None
                for name, value in scope["headers"]:
                    if name == b"x-forwarded-for":
                        forwarded_for.append(value.decode("latin-1"))
                    elif name == b"x-forwarded-proto":
                        proto = value.decode("latin-1").split(",")[-1].strip().lower()
                client = self.trusted.client_of(",".join(forwarded_for)) if forwarded_for else None
                if client:
                    scope = {**scope, "client": (client, 0)}
                if proto in ("http", "https"):
                    scope = {**scope, "scheme": proto}
        await self.app(scope, receive, send)
