"""Servers for bench/ack_stack.py: the receiver or the bare handler on a chosen uvicorn stack, 1..N processes.

    python bench/ack_servers.py receiver --port 8001 --loop uvloop --http httptools --processes 2
    python bench/ack_servers.py bare     --port 8002 --loop asyncio --http h11

``receiver`` is ``receiver.app.create_app(Settings.from_env(os.environ))`` with JSON logs at LOG_LEVEL, served by
uvicorn with the kwargs ``veo-archiver serve`` passes (see ``UVICORN_KWARGS``) plus ``loop`` and ``http``. ``bare``
is bench/ack_apps.py's bare Starlette handler on the same stack: the reference.

With ``--processes N`` the parent forks N children, each binding its own listening socket on the same port with
``SO_REUSEPORT`` (the kernel spreads connections evenly) and running its own event loop; the parent only waits.
``--ready-dir DIR``: each child touches ``DIR/<pid>`` once it accepts connections. ``--no-hiredis`` hides the
``hiredis`` module from redis-py (its pure-Python parser and packer are used even when hiredis is installed).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

if "--no-hiredis" in sys.argv:
    sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py then reports HIREDIS_AVAILABLE False

import benchlib  # noqa: F401  # puts the repo root on sys.path

#: what ``receiver.server.config`` (``veo-archiver serve``) passes to uvicorn.Config besides app, host, port,
#: loop and http (the last two vary here); X-Forwarded-* are read by the app itself (receiver/proxy.py)
UVICORN_KWARGS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "proxy_headers": False,
    "timeout_graceful_shutdown": 10,
    "h11_max_incomplete_event_size": 64 * 1024,
}


def build_app(kind: str) -> Any:
    from veo_archiver.logs import configure as configure_logging

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), json_lines=True)
    if kind == "bare":
        from ack_apps import bare_app

        return bare_app()
    from receiver.app import create_app
    from veo_archiver.settings import Settings

    return create_app(Settings.from_env(os.environ))


def serve_one(kind: str, host: str, port: int, loop: str, http: str, ready_dir: str | None) -> None:
    import uvicorn

    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening socket
    # says so (proto 0 means Nagle + delayed ACKs: 40 ms per answer); uvicorn binding itself gets it right
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    from receiver import server

    # the header-timeout protocol of ``serve`` on the chosen parser (receiver/server.py)
    protocol = server.protocol_class(10.0, http)
    config = uvicorn.Config(build_app(kind), host=host, port=port, loop=loop, http=protocol, **UVICORN_KWARGS)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if ready_dir:
                Path(ready_dir, str(os.getpid())).touch()

    Server(config).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("receiver", "bare"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--http", default="h11", choices=("h11", "httptools"))
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--ready-dir", default=None)
    parser.add_argument("--no-hiredis", action="store_true")
    args = parser.parse_args()
    if args.processes == 1:
        serve_one(args.kind, args.host, args.port, args.loop, args.http, args.ready_dir)
        return
    children: list[int] = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            try:
                serve_one(args.kind, args.host, args.port, args.loop, args.http, args.ready_dir)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break


if __name__ == "__main__":
    main()
