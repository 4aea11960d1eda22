"""Stream one video from its URL in bounded chunks, counting, hashing and checking it on the way.

``VideoStream`` is an iterator of byte chunks meant to be handed straight to :meth:`Archive.put_stream`:
memory stays flat whatever the size. Whatever goes wrong is raised *from the iterator*, so the storage
library abandons the upload (obstore aborts the S3 multipart upload and removes the local staging file)
and no partial object becomes visible. Checks, in the order they can fire:

* scheme (http/https only, on the URL and on every redirect hop) and the egress policy (at each TCP
  connect, see :mod:`workers.egress`); redirects are followed here, hop by hop, never reading their bodies;
* status: 429/5xx/408/425 transient (with ``retry_after`` when the server sent ``Retry-After``), 403/404/410
  and other 4xx permanent;
* ``Content-Type`` against :attr:`FetchPolicy.allowed_types`, ``Content-Length`` against the size cap,
  then the running byte count against the cap (chunked bodies have no length);
* the first bytes must be an ISO base media box (``ftyp``…), and the top-level boxes must end exactly
  where the body ends: a body shorter than its own box sizes was truncated, whatever HTTP said;
* a total deadline, which also caps each read timeout, so a trickle cannot hold a worker.

A dropped connection resumes with ``Range`` + ``If-Range`` (a strong ETag, else Last-Modified) when the
server advertised ``Accept-Ranges: bytes`` and gave a validator; the 206 must start at the right byte of
the same-sized file with the same ETag, and a resume that brings new bytes resets the resume budget.
Anything else (no range support, a 200 after ``If-Range``, a different file) fails the attempt as
transient, so the whole download restarts cleanly later.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from veo_archiver.clock import retry_after_seconds
from veo_archiver.errors import BadContent, DownloadFailed, DownloadRefused, DownloadTransient
from workers.egress import EgressPolicy, require_http_url
from workers.mp4 import BoxWalker, looks_like_video
from workers.transport import GuardedTransport

log = logging.getLogger(__name__)

MiB = 1024 * 1024
TRANSIENT_STATUS = frozenset({408, 425, 429})  # and every 5xx
EXPIRED_STATUS = frozenset({403, 404, 410})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
HEAD_BYTES = 12
DEADLINE_SLACK_S = 0.05
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 4 * 1024 * MiB
    chunk_bytes: int = MiB
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    #: total time for one video, whatever the server's pace (a trickle cannot hold a worker forever)
    deadline_s: float = 3600.0
    #: resumes in a row that bring no new byte; a resume that made progress resets the count
    resume_attempts: int = 5
    max_redirects: int = 5
    #: ``type/`` entries match a whole family, others the exact media type; a missing type is allowed
    allowed_types: tuple[str, ...] = ("video/", "application/octet-stream", "binary/octet-stream")
    #: a server's ``Retry-After`` is honoured up to this many seconds
    retry_after_cap_s: float = 900.0


def build_client(policy: FetchPolicy, egress: EgressPolicy, ssl_context: ssl.SSLContext | None = None) -> httpx.Client:
    # every TCP connect is guarded: httpx's own transport takes no network backend (workers/transport.py)
    transport = GuardedTransport(egress, ssl_context or httpx.create_ssl_context())
    return httpx.Client(
        transport=transport,
        # VideoStream follows redirects itself: httpx reads each redirect body whole into memory, and
        # would hand a file:/ftp: Location to the transport as a (retryable) transport error
        follow_redirects=False,
        # nothing from the environment: no proxy mounts (they would bypass the guarded pool; httpx 0.28
        # already skips them when a transport is given), no ~/.netrc credentials sent to a file host
        trust_env=False,
        timeout=httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s),
        headers={"Accept-Encoding": "identity", "User-Agent": "veo-archiver/0.1"},
    )


@dataclass
class VideoStream:
    """Iterate to download; afterwards ``size``, ``sha256`` and ``content_type`` describe what arrived."""

    client: httpx.Client
    url: str
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    #: the provider's host allowlist (``DOWNLOAD_HOSTS_<PROVIDER>``), applied to the URL and to every redirect hop
    host_allowed: Callable[[str], bool] | None = None
    size: int = 0
    content_type: str | None = None
    declared_length: int | None = None
    resumes: int = 0
    final_url: str | None = None
    #: the error that ended iteration: obstore 0.12 re-raises it as is; another storage library may wrap it
    error: Exception | None = None
    _sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    _boxes: BoxWalker = field(default_factory=BoxWalker)
    _validator: str | None = None
    _etag: str | None = None
    _accepts_ranges: bool = False

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        # a second iteration (a storage-level retry) starts from a clean slate
        self.size, self.resumes, self.error, self.final_url = 0, 0, None, None
        self.content_type = self.declared_length = self._validator = self._etag = None
        self._sha, self._boxes, self._accepts_ranges = hashlib.sha256(), BoxWalker(), False
        try:
            yield from self._download()
        except Exception as exc:
            self.error = exc
            raise

    def _download(self) -> Iterator[bytes]:
        require_http_url(self.url)
        deadline = time.monotonic() + self.policy.deadline_s
        # the first bytes are held back until they look like a video: nothing reaches storage before that
        head: bytes | None = b""
        stalled = 0
        while True:
            before = self.size
            cause: Exception | None = None
            try:
                for chunk in self._attempt(deadline):
                    if head is not None:
                        head += chunk
                        if len(head) < HEAD_BYTES:
                            continue
                        if not looks_like_video(head[:HEAD_BYTES]):
                            raise BadContent(
                                f"not a video: first bytes {head[:HEAD_BYTES]!r}, content-type {self.content_type}",
                                reason="not_a_video",
                            )
                        chunk, head = head, None
                    yield chunk
                if self.declared_length is None or self.size >= self.declared_length:
                    break
                # a 206 that stopped before the end of the file: ask for the rest like after a drop
                problem = f"partial response ended at byte {self.size} of {self.declared_length}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                cause = exc
            if time.monotonic() >= deadline - DEADLINE_SLACK_S:  # a read timeout capped at the deadline
                raise DownloadTransient(
                    f"download exceeded its {self.policy.deadline_s:g} s deadline after {self.size} bytes ({problem})",
                    reason="deadline",
                ) from cause
            stalled = 0 if self.size > before else stalled + 1
            if not (self._accepts_ranges and self._validator and self.size > 0):
                raise DownloadTransient(
                    f"connection failed after {self.size} bytes and the server cannot resume: {problem}",
                    reason="connection",
                ) from cause
            if stalled >= self.policy.resume_attempts:
                raise DownloadTransient(
                    f"no progress after {stalled} resumes at byte {self.size}: {problem}", reason="connection"
                ) from cause
            self.resumes += 1
            log.info("resuming download", extra={"offset": self.size, "resume": self.resumes, "problem": problem})
        if head is not None:
            raise BadContent(f"body of {self.size} bytes is too short to be a video", reason="not_a_video")
        if self.declared_length is not None and self.size != self.declared_length:
            raise DownloadTransient(
                f"received {self.size} bytes but Content-Length said {self.declared_length}",
                reason="length_mismatch",
            )
        if not self._boxes.complete:
            raise DownloadTransient(
                f"truncated: the body ends at byte {self.size} inside a box that runs to byte {self._boxes.next_box}",
                reason="truncated",
            )

    def _timeout(self, deadline: float) -> httpx.Timeout:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DownloadTransient(f"download exceeded its {self.policy.deadline_s:g} s deadline", reason="deadline")
        return httpx.Timeout(
            min(self.policy.read_timeout_s, remaining), connect=min(self.policy.connect_timeout_s, remaining)
        )

    def _attempt(self, deadline: float) -> Iterator[bytes]:
        headers: dict[str, str] = {}
        offset = self.size
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self._validator:
                headers["If-Range"] = self._validator
        url = self.url
        self._require_allowed_host(url)
        for _hop in range(self.policy.max_redirects + 1):
            try:
                request = self.client.build_request("GET", url, headers=headers, timeout=self._timeout(deadline))
            except httpx.InvalidURL as exc:  # what Python parses but httpx refuses: never retried, never a crash
                raise DownloadRefused(f"unusable URL {url[:120]!r}: {exc}", reason="invalid_url") from exc
            response = self.client.send(request, stream=True, follow_redirects=False)
            try:
                if response.status_code in REDIRECT_STATUS and "location" in response.headers:
                    url = self._redirect_target(response)  # the body is never read
                    continue
                self._check_status(response, offset)
                yield from self._body(response, deadline)
                return
            finally:
                response.close()
        raise DownloadFailed(
            f"more than {self.policy.max_redirects} redirects from {self.url[:120]}",
            reason="too_many_redirects",
        )

    def _body(self, response: httpx.Response, deadline: float) -> Iterator[bytes]:
        """The body in chunks of about ``chunk_bytes``, each byte counted, hashed and box-checked on arrival.

        On a dropped connection the bytes that did arrive are still handed on before the error, so a
        resume starts exactly after them (httpx's own ``iter_raw(chunk_size)`` would lose its buffer).
        """
        pending: list[bytes] = []
        buffered = 0
        try:
            for piece in response.iter_raw():
                if time.monotonic() > deadline:
                    raise DownloadTransient(
                        f"download exceeded its {self.policy.deadline_s:g} s deadline at byte {self.size}",
                        reason="deadline",
                    )
                if self.size + len(piece) > self.policy.max_bytes:
                    raise BadContent(f"video is over the {self.policy.max_bytes}-byte cap", reason="too_large")
                self.size += len(piece)
                self._sha.update(piece)
                self._boxes.feed(piece)
                pending.append(piece)
                buffered += len(piece)
                if buffered >= self.policy.chunk_bytes:
                    yield b"".join(pending)
                    pending, buffered = [], 0
        except httpx.TransportError:
            if pending:
                yield b"".join(pending)
            raise
        if pending:
            yield b"".join(pending)

    def _redirect_target(self, response: httpx.Response) -> str:
        location = response.headers["location"]
        try:
            target = response.url.join(location)
        except httpx.InvalidURL as exc:
            raise DownloadFailed(
                f"unusable redirect Location {location[:120]!r}: {exc}", reason="bad_redirect"
            ) from exc
        require_http_url(str(target))
        self._require_allowed_host(str(target))
        log.info("following redirect", extra={"status": response.status_code, "to_host": target.host})
        return str(target)

    def _require_allowed_host(self, url: str) -> None:
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as exc:
            raise DownloadRefused(f"unusable URL {url[:120]!r}: {exc}", reason="invalid_url") from exc
        if self.host_allowed is not None and not self.host_allowed(host):
            raise DownloadRefused(f"{host} is not in this provider's DOWNLOAD_HOSTS", reason="host_not_allowed")

    def _check_status(self, response: httpx.Response, offset: int) -> None:
        status = response.status_code
        host = response.url.host
        if status in TRANSIENT_STATUS or status >= 500:
            retry_after = retry_after_seconds(response.headers.get("retry-after"), cap=self.policy.retry_after_cap_s)
            raise DownloadTransient(f"HTTP {status} from {host}", reason=f"http_{status}", retry_after=retry_after)
        if offset:
            self._check_resumed(response, offset)
            return
        if status in EXPIRED_STATUS:
            raise DownloadFailed(f"HTTP {status} from {host}: link expired or gone", reason=f"http_{status}")
        if status != 200:
            raise DownloadFailed(f"HTTP {status} from {host}", reason=f"http_{status}")
        self.final_url = str(response.url)
        self.content_type = response.headers.get("content-type", "").split(";")[0].strip().lower() or None
        if self.content_type and not self._type_allowed(self.content_type):
            raise BadContent(f"content-type {self.content_type} is not a video", reason="not_a_video")
        length = response.headers.get("content-length")
        if length is not None and length.strip().isdigit():
            self.declared_length = int(length)
            if self.declared_length > self.policy.max_bytes:
                raise BadContent(
                    f"Content-Length {self.declared_length} is over the {self.policy.max_bytes}-byte cap",
                    reason="too_large",
                )
        self._accepts_ranges = response.headers.get("accept-ranges", "").strip().lower() == "bytes"
        etag = response.headers.get("etag")
        self._etag = etag if etag and not etag.startswith("W/") else None  # If-Range needs a strong validator
        self._validator = self._etag or response.headers.get("last-modified")

    def _check_resumed(self, response: httpx.Response, offset: int) -> None:
        status = response.status_code
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        etag = response.headers.get("etag")
        if (
            status != 206
            or match is None
            or int(match.group(1)) != offset
            or (self.declared_length is not None and match.group(3) != str(self.declared_length))
            or (self._etag is not None and etag is not None and etag != self._etag)
        ):
            # a 200 (the file changed, or ranges ignored), a wrong offset or another file: the bytes already
            # handed to storage cannot be continued
            raise DownloadTransient(
                f"server did not resume at byte {offset} (HTTP {status}, "
                f"Content-Range {response.headers.get('content-range')!r})",
                reason="resume_refused",
            )

    def _type_allowed(self, content_type: str) -> bool:
        return any(
            content_type.startswith(allowed) if allowed.endswith("/") else content_type == allowed
            for allowed in self.policy.allowed_types
        )
