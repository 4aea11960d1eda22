"""Whether the receiver's TCP port is free, asked before ``up`` or ``serve`` prints or starts anything: a port
held by another program is a one-line error naming it and ``--port`` (with a free one to try), not a banner
followed by ``[Errno 98]`` in a child's log."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

from veo_archiver.errors import ConfigError

#: how many ports above a taken one are tried for the suggestion
SUGGEST_WITHIN = 50


def port_taken(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on (``None``: it can), found by binding it as uvicorn will
    (``SO_REUSEADDR``: a port in TIME_WAIT is free, one with a listener is not)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc
    return None


def check_port(host: str, port: int, *, command: str) -> None:
    """A :class:`ConfigError` naming the port and ``--port`` (with a free one to try) when it is taken."""
    problem = port_taken(host, port)
    if problem is None:
        return
    free = next((p for p in range(port + 1, min(port + SUGGEST_WITHIN, 65536)) if port_taken(host, p) is None), None)
    hint = f"`veo-archiver {command} --port {free}`" if free else f"`veo-archiver {command} --port PORT`"
    reason = problem.strerror or str(problem)
    raise ConfigError(f"port {port} on {host} is not available ({reason}): pick another with {hint}")


def wait_listening(host: str, port: int, *, alive: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout_s``, asked while ``alive()`` holds (the
    receiver's process runs, no stop was asked for)."""
    try:
        if ipaddress.ip_address(host.strip("[]")).is_unspecified:  # 0.0.0.0 or ::, reached on loopback
            host = "::1" if ":" in host else "127.0.0.1"
    except ValueError:
        pass  # a name: connect to it as it is
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.1)
    return False
