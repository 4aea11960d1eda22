"""A loopback file host, like a provider's CDN: serves registered files with Content-Length, ETag and
byte ranges, and counts requests so a simulator can tell when the archiver has fetched a video.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class HostedFile:
    data: bytes
    content_type: str = "video/mp4"

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.data).hexdigest()[:32] + '"'


class FileHost:
    """``with FileHost() as host: url = host.add("/v/0.mp4", data)``; serves on 127.0.0.1 in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files: dict[str, HostedFile] = {}
        self.hits: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        #: optional per-path override: handler(request_handler, hosted_file) -> True when it answered itself
        self.behaviours: dict[str, Callable[[BaseHTTPRequestHandler, HostedFile | None], bool]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, path: str, data: bytes, content_type: str = "video/mp4") -> str:
        self.files[path] = HostedFile(data, content_type)
        return self.base_url + path

    def dispatch(self, request: BaseHTTPRequestHandler, method: str) -> bool:
        """Hook for subclasses that serve more than files (e.g. a provider's status API): called before
        any file handling; return True when the request was answered. The plain host answers nothing."""
        return False

    def __enter__(self) -> FileHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                if not host.dispatch(self, "POST"):
                    self.send_error(404)

            def do_GET(self) -> None:
                if host.dispatch(self, "GET"):
                    return
                path = self.path.split("?", 1)[0]
                with host._lock:
                    host.hits[path] += 1
                hosted = host.files.get(path)
                behaviour = host.behaviours.get(path)
                if behaviour is not None and behaviour(self, hosted):
                    return
                if hosted is None:
                    self.send_error(404)
                    return
                self.serve(hosted)
                with host._lock:
                    host.completed[path] += 1

            def serve(self, hosted: HostedFile, *, ranges: bool = True) -> None:
                data = hosted.data
                start, end = 0, len(data) - 1
                status = 200
                match = _RANGE.match(self.headers.get("Range", ""))
                if_range = self.headers.get("If-Range")
                if ranges and match and (if_range is None or if_range == hosted.etag):
                    start = int(match.group(1))
                    end = int(match.group(2)) if match.group(2) else end
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start : end + 1]
                self.send_response(status)
                self.send_header("Content-Type", hosted.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", hosted.etag)
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
