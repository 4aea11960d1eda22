"""Helpers shared by the benchmarks in this folder (not a benchmark itself).

- :func:`machine_description`: the header every benchmark prints (date, CPU, load, versions);
- :class:`DiskFileServer`: a threaded HTTP/1.1 file host on 127.0.0.1 that streams files from disk with
  ``sendfile`` (Content-Length, a precomputed strong ETag, Accept-Ranges and ``Range`` requests), so the
  stand-in CDN costs the machine as little CPU as possible;
- :func:`write_mp4`: a generated MP4 (``veo_archiver.sim.media.iter_mp4``) written to disk, with its sha256;
- :func:`vm_status_mib`: VmHWM/VmRSS of a process from /proc;
- :func:`pct`: a percentile of a list of numbers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.server
import importlib.metadata
import os
import platform
import re
import sys
import threading
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the checkout whose receiver/ and workers/ are imported: this one, or BENCH_REPO (a scratch copy holding a
#: candidate change; the benchmarks' ``--repo`` sets it for the processes under test)
CODE_ROOT = Path(os.environ.get("BENCH_REPO") or REPO_ROOT).resolve()
if str(CODE_ROOT) not in sys.path:
    sys.path.insert(0, str(CODE_ROOT))

MIB = 1024 * 1024
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


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
    ]
    return "\n".join(lines + (extra or []))


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


def write_mp4(path: Path, size: int, *, seed: int = 0) -> str:
    """Write a valid MP4 of exactly ``size`` bytes (ftyp + moov + one mdat) and return its sha256."""
    from veo_archiver.sim.media import iter_mp4

    digest = hashlib.sha256()
    with path.open("wb") as f:
        for chunk in iter_mp4(size, seed=seed, chunk=4 * MIB):
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: DiskFileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        entry = self.server.files.get(self.path.split("?", 1)[0])
        if entry is None:
            self.send_error(404)
            return
        path, size, etag = entry
        start, end, status = 0, size - 1, 200
        match = _RANGE.match(self.headers.get("Range", ""))
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
        with self.server.lock:
            self.server.served += 1


class DiskFileServer(http.server.ThreadingHTTPServer):
    """``with DiskFileServer() as s: url = s.add("/v/0.mp4", path, etag)``: files streamed from disk."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, tuple[Path, int, str]] = {}
        self.lock = threading.Lock()
        self.served = 0
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def add(self, url_path: str, path: Path, etag: str) -> str:
        self.files[url_path] = (path, path.stat().st_size, f'"{etag[:32]}"')
        return f"http://127.0.0.1:{self.port}{url_path}"

    def __enter__(self) -> DiskFileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
