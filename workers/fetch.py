"""Stream one video from its URL in bounded chunks, counting, hashing and checking it on the way.

``VideoStream`` is an iterator of byte chunks meant to be handed straight to :meth:`Archive.put_stream`:
memory stays flat whatever the size. A dropped connection resumes with ``Range`` (+ ``If-Range`` when the
server gave a validator); a server that ignores ranges makes the attempt fail as transient so the whole
download restarts cleanly. The first bytes must look like an MP4/QuickTime file (``ftyp`` box).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpcore
import httpx

from receiver.errors import BadContent, DownloadFailed, DownloadRefused, DownloadTransient
from receiver.urls import is_http_url
from workers.egress import EgressPolicy, GuardedBackend

log = logging.getLogger(__name__)

MiB = 1024 * 1024
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
EXPIRED_STATUS = frozenset({403, 404, 410})
VIDEO_BRANDS_OFFSET = 4
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 4 * 1024 * MiB
    chunk_bytes: int = MiB
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    #: total time for one video, whatever the server's pace (a trickle cannot hold a worker forever)
    deadline_s: float = 3600.0
    resume_attempts: int = 5
    max_redirects: int = 5
    allowed_types: tuple[str, ...] = ("video/", "application/octet-stream", "binary/octet-stream")


def build_client(policy: FetchPolicy, egress: EgressPolicy) -> httpx.Client:
    transport = httpx.HTTPTransport(retries=0)
    # httpx does not expose the network backend: swap the pool for one whose every TCP connect is guarded
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001
        ssl_context=httpx.create_ssl_context(),
        max_connections=4,
        network_backend=GuardedBackend(egress),
        retries=0,
    )
    return httpx.Client(
        transport=transport,
        follow_redirects=True,
        max_redirects=policy.max_redirects,
        timeout=httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s),
        headers={"Accept-Encoding": "identity", "User-Agent": "veo-archiver/0.1"},
    )


def looks_like_video(head: bytes) -> bool:
    """ISO base media (MP4, MOV): the first box is ``ftyp`` (a few encoders put ``wide``/``free``/``moov`` first)."""
    return len(head) >= 8 and head[VIDEO_BRANDS_OFFSET : VIDEO_BRANDS_OFFSET + 4] in (b"ftyp", b"moov", b"wide", b"free", b"mdat")


@dataclass
class VideoStream:
    """Iterate to download; afterwards ``size``, ``sha256`` and ``content_type`` describe what arrived."""

    client: httpx.Client
    url: str
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    size: int = 0
    content_type: str | None = None
    declared_length: int | None = None
    resumes: int = 0
    final_url: str | None = None
    #: the error that ended iteration, kept because the storage library may wrap what it re-raises
    error: Exception | None = None
    _sha: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    _validator: str | None = None
    _accepts_ranges: bool = False

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._download()
        except Exception as exc:
            self.error = exc
            raise

    def _download(self) -> Iterator[bytes]:
        if not is_http_url(self.url):
            raise DownloadRefused(f"not an http(s) URL: {self.url[:120]}", reason="scheme")
        started = time.monotonic()
        head_checked = False
        pending = b""
        while True:
            try:
                for chunk in self._attempt():
                    if time.monotonic() - started > self.policy.deadline_s:
                        raise DownloadTransient(f"download exceeded its {self.policy.deadline_s:.0f} s deadline")
                    if not head_checked:
                        pending += chunk
                        if len(pending) < 12:
                            continue
                        if not looks_like_video(pending[:12]):
                            raise BadContent(
                                f"not a video: first bytes {pending[:12]!r}, content-type {self.content_type}",
                                reason="not_a_video",
                            )
                        head_checked = True
                        chunk, pending = pending, b""
                    yield chunk
                if not head_checked:
                    raise BadContent(f"body of {self.size} bytes is too short to be a video", reason="not_a_video")
                break
            except (httpx.TransportError, httpcore.NetworkError) as exc:
                if not (self._accepts_ranges and self.size > 0 and self.resumes < self.policy.resume_attempts):
                    raise DownloadTransient(f"connection failed after {self.size} bytes: {exc!r}") from exc
                self.resumes += 1
                log.info("resuming download", extra={"offset": self.size, "resume": self.resumes})
        if self.declared_length is not None and self.size != self.declared_length:
            raise BadContent(
                f"received {self.size} bytes but Content-Length said {self.declared_length}", reason="length_mismatch"
            )

    def _attempt(self) -> Iterator[bytes]:
        headers: dict[str, str] = {}
        offset = self.size
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self._validator:
                headers["If-Range"] = self._validator
        with self.client.stream("GET", self.url, headers=headers) as response:
            self._check_status(response, offset)
            for chunk in response.iter_raw(self.policy.chunk_bytes):
                self.size += len(chunk)
                if self.size > self.policy.max_bytes:
                    raise BadContent(f"video is over the {self.policy.max_bytes}-byte cap", reason="too_large")
                self._sha.update(chunk)
                yield chunk

    def _check_status(self, response: httpx.Response, offset: int) -> None:
        status = response.status_code
        if status in TRANSIENT_STATUS:
            raise DownloadTransient(f"HTTP {status} from {response.url.host}", reason=f"http_{status}")
        if offset:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
            if status != 206 or match is None or int(match.group(1)) != offset:
                # the server restarted from zero (or lied): the bytes already uploaded cannot be reused
                raise DownloadTransient(f"server did not resume at byte {offset} (HTTP {status})", reason="resume_refused")
            return
        if status in EXPIRED_STATUS:
            raise DownloadFailed(f"HTTP {status} from {response.url.host}: link expired or gone", reason=f"http_{status}")
        if status != 200:
            raise DownloadFailed(f"HTTP {status} from {response.url.host}", reason=f"http_{status}")
        self.final_url = str(response.url)
        self.content_type = response.headers.get("content-type", "").split(";")[0].strip().lower() or None
        if self.content_type and not self.content_type.startswith(self.policy.allowed_types):
            raise BadContent(f"content-type {self.content_type} is not a video", reason="not_a_video")
        length = response.headers.get("content-length")
        if length is not None and length.strip().isdigit():
            self.declared_length = int(length)
            if self.declared_length > self.policy.max_bytes:
                raise BadContent(
                    f"Content-Length {self.declared_length} is over the {self.policy.max_bytes}-byte cap",
                    reason="too_large",
                )
        self._accepts_ranges = response.headers.get("accept-ranges", "").lower() == "bytes"
        self._validator = response.headers.get("etag") or response.headers.get("last-modified")
