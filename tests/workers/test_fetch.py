"""VideoStream against a server that misbehaves on purpose, into a real directory archive and real S3.

Every test streams through the same path a job uses (``archive.put_stream(key, VideoStream(...))``) and
checks the exact outcome: on success, the stored bytes hash to the source; on failure, the exact error
*object* the iterator raised comes out of ``put_stream`` (obstore does not wrap it) and nothing is left
behind: no object, no multipart upload in progress on S3, no staging file on disk.

Only loopback is ever contacted: the ``network`` fixture fails any connect to another address.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.misbehaving import LoopbackOnlyNetwork, MisbehavingServer, Route, endless
from tests.servers import SeaweedS3
from veo_archiver.errors import (
    ArchiverError,
    BadContent,
    DownloadFailed,
    DownloadRefused,
    DownloadTransient,
    StorageUnavailable,
)
from veo_archiver.sim.media import iter_mp4, make_mp4
from veo_archiver.storage_settings import StorageSettings
from workers.egress import EgressPolicy
from workers.fetch import (
    BoxWalker,
    FetchPolicy,
    VideoStream,
    build_client,
    retry_after_seconds,
)
from workers.storage import ObjectArchive, open_archive

#: what waits out deadlines or streams hundreds of MiB on purpose; the rest (local directory) is fast-lane
slow = pytest.mark.slow

MiB = 1024 * 1024
KEY = "kie/task/0.mp4"
VIDEO = make_mp4(256 * 1024, seed=7)
VIDEO_SHA = hashlib.sha256(VIDEO).hexdigest()
ETAG = Route(body=VIDEO).etag_value
HTML = b"<!DOCTYPE html><html><head><title>Access denied</title></head><body>sign in</body></html>\n" * 20


# ---------------------------------------------------------------------------------------------------------
# fixtures: the network guard, the server, the two archives


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> LoopbackOnlyNetwork:
    """Every connect httpcore makes is recorded; one to anything but loopback fails the test."""
    return LoopbackOnlyNetwork.install(monkeypatch)


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    with MisbehavingServer() as srv:
        yield srv


@dataclass
class Target:
    """An archive plus what a test needs to see *everything* in it, including what a reader would not."""

    kind: str
    archive: ObjectArchive
    list_all: Callable[[], list[str]]
    list_uploads: Callable[[], list[str]]

    def sha_of(self, key: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        for chunk in self.archive.iter_bytes(key):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def assert_empty(self) -> None:
        assert self.list_all() == [], f"partial object left in {self.kind}"
        assert self.archive.head(KEY) is None
        assert self.list_uploads() == [], "multipart upload left in progress"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "local":
        root = tmp_path / "archive"
        archive = open_archive(StorageSettings(archive_url=root.as_uri()))

        def files() -> list[str]:  # every file, so a staging leftover like "0.mp4#3" would show
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

        return Target("local", archive, files, lambda: [])
    seaweed: SeaweedS3 = request.getfixturevalue("seaweed")
    bucket: str = request.getfixturevalue("s3_bucket")
    env = seaweed.env(bucket, "videos")
    archive = open_archive(
        StorageSettings(
            archive_url=env["ARCHIVE_URL"],
            endpoint_url=env["AWS_ENDPOINT_URL"],
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region=env["AWS_REGION"],
            allow_http=True,
        )
    )
    s3 = seaweed.boto3_client()

    def objects() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))

    def uploads() -> list[str]:
        return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    return Target("s3", archive, objects, uploads)


class Fetcher:
    """One policy, one guarded client allowing only the test server's host:port."""

    def __init__(self, server: MisbehavingServer, **policy: Any) -> None:
        self.policy = FetchPolicy(**policy)
        self.client = build_client(self.policy, EgressPolicy(allow_hosts={("127.0.0.1", server.port)}))

    def archive(self, target: Target, url: str) -> VideoStream:
        """What the job does: stream into the archive, and report the download's error over storage's."""
        stream = VideoStream(self.client, url, self.policy)
        try:
            target.archive.put_stream(KEY, stream)
        except StorageUnavailable as exc:
            if stream.error is not None:
                raise stream.error from exc
            raise
        assert stream.error is None
        return stream

    def fail(self, target: Target, url: str, kind: type[ArchiverError], reason: str | None = None) -> ArchiverError:
        stream = VideoStream(self.client, url, self.policy)
        with pytest.raises(kind) as caught:
            target.archive.put_stream(KEY, stream)
        # obstore re-raises the iterator's own exception object: not wrapped, not translated
        assert caught.value is stream.error
        if reason is not None:
            assert caught.value.reason == reason, caught.value.message
        target.assert_empty()
        return caught.value


def assert_stored(target: Target, stream: VideoStream, data: bytes = VIDEO) -> None:
    expected = hashlib.sha256(data).hexdigest()
    assert (stream.size, stream.sha256) == (len(data), expected)
    assert target.sha_of(KEY) == (len(data), expected)
    assert target.list_uploads() == []


# ---------------------------------------------------------------------------------------------------------
# success, resume


def test_normal_download(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO))
    stream = Fetcher(server).archive(target, url)
    assert_stored(target, stream)
    assert stream.content_type == "video/mp4" and stream.final_url == url and stream.resumes == 0
    assert server.ranges("/v.mp4") == [None]


def test_drop_once_resumes_with_one_range_request(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, drop_after=100_000))
    stream = Fetcher(server).archive(target, url)
    assert_stored(target, stream)
    assert stream.resumes == 1
    assert server.ranges("/v.mp4") == [None, "bytes=100000-"]
    assert server.if_ranges("/v.mp4") == [None, ETAG]


def test_large_drop_across_s3_part_boundary_resumes(server: MisbehavingServer, target: Target) -> None:
    """20 MiB, dropped after 9 MiB: on S3 the first 8 MiB part is already uploaded when the drop comes."""
    data = make_mp4(20 * MiB, seed=3)
    url = server.add("/big.mp4", Route(body=data, drop_after=9 * MiB))
    stream = Fetcher(server).archive(target, url)
    assert_stored(target, stream, data)
    assert server.ranges("/big.mp4") == [None, f"bytes={9 * MiB}-"]


def test_drop_every_response_resumes_while_progressing(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, drop_after=40_000, drop_times=None))
    stream = Fetcher(server, resume_attempts=2).archive(target, url)
    assert_stored(target, stream)
    offsets = list(range(40_000, len(VIDEO), 40_000))
    assert server.ranges("/v.mp4") == [None] + [f"bytes={o}-" for o in offsets]
    assert stream.resumes == len(offsets)


@pytest.mark.parametrize("drop_times", [1, None], ids=["once", "always"])
def test_drop_without_range_support_is_transient(
    server: MisbehavingServer, target: Target, drop_times: int | None
) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, ranges=False, drop_after=100_000, drop_times=drop_times))
    error = Fetcher(server).fail(target, url, DownloadTransient, "connection")
    assert isinstance(error, DownloadTransient) and error.retry_after is None
    assert server.ranges("/v.mp4") == [None]  # no Range without Accept-Ranges


def test_drop_after_parts_uploaded_aborts_the_multipart_upload(server: MisbehavingServer, target: Target) -> None:
    data = make_mp4(20 * MiB, seed=4)
    url = server.add("/big.mp4", Route(body=data, ranges=False, drop_after=18 * MiB))
    Fetcher(server).fail(target, url, DownloadTransient, "connection")


def test_if_range_mismatch_gets_full_body_and_is_transient(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, drop_after=100_000, stale_if_range=True))
    Fetcher(server).fail(target, url, DownloadTransient, "resume_refused")
    assert server.ranges("/v.mp4") == [None, "bytes=100000-"]
    assert server.if_ranges("/v.mp4") == [None, ETAG]


@pytest.mark.parametrize(
    ("other", "its_etag"),
    [(make_mp4(len(VIDEO) + 1000, seed=8), False), (make_mp4(len(VIDEO), seed=8), True)],
    ids=["other-size-same-etag", "same-size-other-etag"],
)
def test_resume_from_another_version_of_the_file_is_refused(
    server: MisbehavingServer, target: Target, other: bytes, its_etag: bool
) -> None:
    """An edge that ignores If-Range answers 206 from a different file: caught by the total size in
    Content-Range, or by the 206's ETag; mixing two files' bytes must never be stored."""
    route = Route(body=VIDEO, drop_after=100_000, range_source=other, range_source_etag=its_etag)
    url = server.add("/v.mp4", route)
    Fetcher(server).fail(target, url, DownloadTransient, "resume_refused")
    assert server.ranges("/v.mp4") == [None, "bytes=100000-"]


def test_no_validator_means_no_resume(server: MisbehavingServer, target: Target) -> None:
    """Without an ETag or Last-Modified, a resumed body could come from a different file: start over later."""
    url = server.add("/v.mp4", Route(body=VIDEO, etag=False, drop_after=100_000))
    Fetcher(server).fail(target, url, DownloadTransient, "connection")
    assert server.ranges("/v.mp4") == [None]


# ---------------------------------------------------------------------------------------------------------
# truncation and length lies


def test_chunked_body_cut_off_is_transient(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, chunked=True, ranges=False, drop_after=100_000))
    Fetcher(server).fail(target, url, DownloadTransient, "connection")


def test_complete_response_of_a_truncated_file_is_caught_by_the_box_sizes(
    server: MisbehavingServer, target: Target
) -> None:
    """HTTP is satisfied (chunked, properly terminated) but the mdat box says more bytes should follow."""
    url = server.add("/v.mp4", Route(body=VIDEO[:100_000], chunked=True))
    Fetcher(server).fail(target, url, DownloadTransient, "truncated")


@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no-ranges"])
def test_content_length_larger_than_body(server: MisbehavingServer, target: Target, ranges: bool) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, declared_length=len(VIDEO) + 5000, ranges=ranges))
    # with ranges the resume asks past the real end: 416, which cannot continue the upload
    Fetcher(server).fail(target, url, DownloadTransient, "resume_refused" if ranges else "connection")
    assert server.ranges("/v.mp4") == ([None, f"bytes={len(VIDEO)}-"] if ranges else [None])


def test_content_length_smaller_than_body(server: MisbehavingServer, target: Target) -> None:
    """HTTP stops at the declared length; the MP4 box sizes show the body was cut short."""
    url = server.add("/v.mp4", Route(body=VIDEO, declared_length=len(VIDEO) - 5000))
    Fetcher(server).fail(target, url, DownloadTransient, "truncated")


# ---------------------------------------------------------------------------------------------------------
# statuses


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_link_is_permanent(server: MisbehavingServer, target: Target, status: int) -> None:
    url = server.add("/v.mp4", Route(body=b"<Error>AccessDenied</Error>", status=status, content_type="text/xml"))
    Fetcher(server).fail(target, url, DownloadFailed, f"http_{status}")


def test_503_twice_then_200(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, fail_first=[503, 503]))
    fetcher = Fetcher(server)
    for _ in range(2):
        error = fetcher.fail(target, url, DownloadTransient, "http_503")
        assert isinstance(error, DownloadTransient) and error.retry_after is None
    assert_stored(target, fetcher.archive(target, url))
    assert server.hits["/v.mp4"] == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("86400", 120.0), ("0", 0.0), ("soon", None)],
    ids=["seconds", "capped", "zero", "garbage"],
)
def test_429_carries_retry_after(
    server: MisbehavingServer, target: Target, header: str, expected: float | None
) -> None:
    url = server.add("/v.mp4", Route(body=b"slow down", status=429, headers={"Retry-After": header}))
    error = Fetcher(server, retry_after_cap_s=120.0).fail(target, url, DownloadTransient, "http_429")
    assert isinstance(error, DownloadTransient) and error.retry_after == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 90))
    assert retry_after_seconds(date, cap=900, now=now) == 90.0
    assert retry_after_seconds(date, cap=60, now=now) == 60.0
    past = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now - 90))
    assert retry_after_seconds(past, cap=900, now=now) == 0.0
    assert retry_after_seconds(None, cap=900) is None


# ---------------------------------------------------------------------------------------------------------
# redirects and SSRF


def test_redirect_to_allowed_host_is_followed(server: MisbehavingServer, target: Target) -> None:
    final = server.add("/cdn/v.mp4", Route(body=VIDEO))
    url = server.add("/signed", Route(status=302, location="/cdn/v.mp4"))
    stream = Fetcher(server).archive(target, url)
    assert_stored(target, stream)
    assert stream.final_url == final


def test_redirect_body_is_never_read(server: MisbehavingServer, target: Target) -> None:
    """httpx's own redirect following reads each redirect body whole: an endless one would never return."""
    server.add("/cdn/v.mp4", Route(body=VIDEO))
    url = server.add("/signed", Route(status=302, location="/cdn/v.mp4", stream=endless(), content_type="text/html"))
    started = time.monotonic()
    assert_stored(target, Fetcher(server).archive(target, url))
    assert time.monotonic() - started < 10
    assert server.body_bytes_sent["/signed"] < 32 * MiB


@pytest.mark.parametrize(
    "location",
    [
        "http://10.0.0.1/v.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://192.168.1.1:8080/",
        "http://[::ffff:127.0.0.1]:{port}/v.mp4",
        "http://localhost:{port}/v.mp4",
        "http://127.0.0.1:{other}/v.mp4",
    ],
)
def test_redirect_to_private_address_is_refused_before_connecting(
    server: MisbehavingServer, target: Target, network: LoopbackOnlyNetwork, location: str
) -> None:
    with MisbehavingServer() as other:  # a real listener: a connect to it would show up in its hits
        other.add("/v.mp4", Route(body=VIDEO))
        location = location.format(port=server.port, other=other.port)
        url = server.add("/signed", Route(status=302, location=location))
        Fetcher(server).fail(target, url, DownloadRefused, "ssrf")
        assert sum(other.hits.values()) == 0
        ours = [c for c in network.connects if c[1] in (server.port, other.port)]
    assert ours == [("127.0.0.1", server.port)]  # the first hop only


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/v.mp4", "gopher://127.0.0.1:70/_x"])
def test_redirect_to_other_scheme_is_refused(server: MisbehavingServer, target: Target, location: str) -> None:
    url = server.add("/signed", Route(status=302, location=location))
    Fetcher(server).fail(target, url, DownloadRefused, "scheme")


def test_the_provider_host_allowlist_applies_to_every_redirect_hop(server: MisbehavingServer, target: Target) -> None:
    """DOWNLOAD_HOSTS_<PROVIDER> is checked on the URL and on each hop: a CDN redirect to another host is refused
    before any connection to it, while a hop on an allowed host is followed."""
    fetcher = Fetcher(server)
    final = server.add("/cdn/v.mp4", Route(body=VIDEO))
    onward = server.add("/signed", Route(status=302, location="/cdn/v.mp4"))
    stream = VideoStream(fetcher.client, onward, fetcher.policy, host_allowed=lambda host: host == "127.0.0.1")
    target.archive.put_stream(KEY, stream)
    assert stream.final_url == final

    away = server.add("/away", Route(status=302, location=f"http://localhost:{server.port}/cdn/v.mp4"))
    hits = server.hits["/cdn/v.mp4"]
    refused = VideoStream(fetcher.client, away, fetcher.policy, host_allowed=lambda host: host == "127.0.0.1")
    with pytest.raises(DownloadRefused) as caught:
        target.archive.put_stream("videos/other.mp4", refused)
    assert caught.value.reason == "host_not_allowed"
    assert server.hits["/cdn/v.mp4"] == hits  # the refused hop was never fetched

    first = VideoStream(fetcher.client, final, fetcher.policy, host_allowed=lambda host: host == "cdn.example.com")
    with pytest.raises(DownloadRefused):
        target.archive.put_stream("videos/third.mp4", first)


@pytest.mark.parametrize("url", ["http://0177.0.0.1/v.mp4", "http://" + "a" * 70_000 + ".com/", "http://[::1/"])
def test_urls_httpx_refuses_are_dead_letters_not_crashes(server: MisbehavingServer, target: Target, url: str) -> None:
    """URLs Python parses but httpx rejects crashed the job (httpx.InvalidURL) and ended as crashed after three
    retries; the receiver refuses them now, and a worker that meets one anyway refuses it at once."""
    fetcher = Fetcher(server)
    with pytest.raises(DownloadRefused) as caught:
        target.archive.put_stream(KEY, VideoStream(fetcher.client, url, fetcher.policy))
    assert caught.value.reason in ("invalid_url", "scheme", "ssrf")


def test_redirect_loop_is_permanent(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/a", Route(status=302, location="/b"))
    server.add("/b", Route(status=307, location="/a"))
    Fetcher(server, max_redirects=4).fail(target, url, DownloadFailed, "too_many_redirects")
    assert server.hits["/a"] + server.hits["/b"] == 5


# ---------------------------------------------------------------------------------------------------------
# content checks


def test_html_page_is_not_a_video(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=HTML, content_type="text/html; charset=utf-8"))
    Fetcher(server).fail(target, url, BadContent, "not_a_video")


def test_html_labelled_as_video_is_not_a_video(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=HTML, content_type="video/mp4"))
    Fetcher(server).fail(target, url, BadContent, "not_a_video")


@pytest.mark.parametrize(
    ("content_type", "allowed"),
    [
        ("video/mp4", True),
        ("video/quicktime", True),
        ("application/octet-stream", True),
        ("binary/octet-stream", True),
        (None, True),
        ("application/octet-stream-x", False),
        ("text/plain", False),
        ("application/json", False),
    ],
)
def test_allowed_types(server: MisbehavingServer, tmp_path: Path, content_type: str | None, allowed: bool) -> None:
    archive = open_archive(StorageSettings(archive_url=str(tmp_path / "a")))
    target = Target("local", archive, lambda: [], lambda: [])
    url = server.add("/v", Route(body=VIDEO, content_type=content_type))
    if allowed:
        assert Fetcher(server).archive(target, url).content_type == content_type
    else:
        Fetcher(server).fail(target, url, BadContent, "not_a_video")


def test_content_length_over_the_cap_is_refused_before_the_body(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO))
    Fetcher(server, max_bytes=len(VIDEO) - 1).fail(target, url, BadContent, "too_large")


def test_chunked_body_over_the_cap(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, chunked=True))
    Fetcher(server, max_bytes=len(VIDEO) - 1).fail(target, url, BadContent, "too_large")


@slow
def test_endless_body_stops_at_the_cap_with_flat_memory(server: MisbehavingServer, target: Target) -> None:
    """256 MiB of a body that never ends, no Content-Length: stopped at the cap, memory far below it."""
    cap = 256 * MiB
    url = server.add("/v.mp4", Route(stream=endless(head=make_mp4(4096)), chunked=True))
    fetcher = Fetcher(server, max_bytes=cap)
    with PeakRss() as peak:
        fetcher.fail(target, url, BadContent, "too_large")
    assert peak.growth < 96 * MiB, f"memory grew by {peak.growth / MiB:.0f} MiB while streaming {cap // MiB} MiB"
    assert server.body_bytes_sent["/v.mp4"] < cap + 32 * MiB  # the client stopped reading


@slow
def test_streamed_large_video_with_flat_memory(server: MisbehavingServer, target: Target) -> None:
    size = 128 * MiB
    url = server.add("/v.mp4", Route(stream=lambda: iter_mp4(size, seed=5), declared_length=size, ranges=False))
    with PeakRss() as peak:
        stream = Fetcher(server).archive(target, url)
    digest = hashlib.sha256()
    for chunk in iter_mp4(size, seed=5):
        digest.update(chunk)
    assert (stream.size, stream.sha256) == (size, digest.hexdigest())
    assert target.sha_of(KEY) == (size, digest.hexdigest())
    assert peak.growth < 96 * MiB, f"memory grew by {peak.growth / MiB:.0f} MiB while streaming {size // MiB} MiB"


# ---------------------------------------------------------------------------------------------------------
# time


@slow
def test_trickle_beyond_the_deadline_is_transient(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, trickle=(1000, 0.1)))
    started = time.monotonic()
    Fetcher(server, deadline_s=1.0).fail(target, url, DownloadTransient, "deadline")
    assert time.monotonic() - started < 20  # the 1 s deadline, not the trickle's ~26 s


@slow
def test_stall_after_headers_is_bounded_by_the_deadline_not_the_read_timeout(
    server: MisbehavingServer, target: Target
) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, trickle=(20_000, 60.0)))
    started = time.monotonic()
    Fetcher(server, deadline_s=1.0, read_timeout_s=60.0).fail(target, url, DownloadTransient, "deadline")
    assert time.monotonic() - started < 20  # the 1 s deadline, not the 60 s read timeout


def test_trickle_within_the_deadline_succeeds(server: MisbehavingServer, target: Target) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, trickle=(32 * 1024, 0.02)))
    assert_stored(target, Fetcher(server, deadline_s=30.0).archive(target, url))


# ---------------------------------------------------------------------------------------------------------
# how errors reach the job


def test_job_reraises_the_download_error(server: MisbehavingServer, target: Target) -> None:
    """workers.videos streams with ``put_stream`` and re-raises ``stream.error``: the caller sees the
    download's own exception (reason intact), whatever the storage layer did with it."""
    from veo_archiver.event import TaskEvent, TaskStatus
    from workers import videos

    url = server.add("/v.mp4", Route(body=VIDEO, status=403))
    fetcher = Fetcher(server)
    settings = types.SimpleNamespace(providers={})
    ctx = types.SimpleNamespace(
        archive=target.archive, client=fetcher.client, fetch_policy=fetcher.policy, settings=settings
    )
    event = TaskEvent(provider="kie", task_id="task", status=TaskStatus.SUCCEEDED, result_urls=(url,))
    with pytest.raises(DownloadFailed) as caught:
        videos.stream(ctx, event, 0, url)  # type: ignore[arg-type]
    assert caught.value.reason == "http_403"
    target.assert_empty()


def test_wrapped_iterator_error_is_recovered_from_stream_error(server: MisbehavingServer, tmp_path: Path) -> None:
    """If a storage library wraps the iterator's exception, ``stream.error`` still has the original."""

    class WrappingArchive:
        def put_stream(self, key: str, chunks: Any) -> None:
            try:
                for _ in chunks:
                    pass
            except Exception as exc:
                raise StorageUnavailable(f"upload failed: {exc}") from exc

    url = server.add("/v.mp4", Route(body=HTML, content_type="video/mp4"))
    fetcher = Fetcher(server)
    target = Target("wrapping", WrappingArchive(), lambda: [], lambda: [])  # type: ignore[arg-type]
    with pytest.raises(BadContent) as caught:
        fetcher.archive(target, url)
    assert caught.value.reason == "not_a_video"
    assert isinstance(caught.value.__cause__, StorageUnavailable)


def test_stream_can_be_iterated_again_from_scratch(server: MisbehavingServer) -> None:
    url = server.add("/v.mp4", Route(body=VIDEO, fail_first=[503]))
    fetcher = Fetcher(server)
    stream = VideoStream(fetcher.client, url, fetcher.policy)
    with pytest.raises(DownloadTransient):
        b"".join(stream)
    assert b"".join(stream) == VIDEO
    assert (stream.size, stream.sha256, stream.error) == (len(VIDEO), VIDEO_SHA, None)


# ---------------------------------------------------------------------------------------------------------
# the box walker on its own


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


@pytest.mark.parametrize("step", [1, 3, 7, 8, 16, 1000])
def test_box_walker_any_chunking(step: int) -> None:
    large = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + 40) + b"x" * 40  # 64-bit size
    whole = _box(b"ftyp", b"isom" * 3) + large + _box(b"free", b"") + _box(b"moov", b"m" * 30)
    cuts = [
        (whole, True),
        (whole[:-1], False),
        (whole[:-37], False),
        (whole[:-38], True),
        (whole[:30], False),
    ]
    for body, complete in [*cuts, (whole + b"\0" * 8, True)]:
        walker = BoxWalker()
        for i in range(0, len(body), step):
            walker.feed(body[i : i + step])
        assert walker.complete is complete, (len(body), step)


def test_box_walker_rejects_impossible_sizes() -> None:
    with pytest.raises(BadContent):
        BoxWalker().feed(_box(b"ftyp", b"isom") + struct.pack(">I", 3) + b"junk")


# ---------------------------------------------------------------------------------------------------------


class PeakRss:
    """Peak resident memory above the level at entry, sampled every few milliseconds."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.growth = 0

    def __enter__(self) -> PeakRss:
        self._base = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.growth = max(self.growth, self._process.memory_info().rss - self._base)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_stale_local_staging_file_from_a_killed_writer_is_removed_before_the_next_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from veo_archiver.storage_settings import StorageSettings
    from workers.storage import open_archive

    archive = open_archive(StorageSettings(archive_url=str(tmp_path)))
    (tmp_path / "kie" / "t").mkdir(parents=True)
    leftover = tmp_path / "kie" / "t" / "0.mp4#1"
    leftover.write_bytes(b"\0" * 1024)  # what a SIGKILLed multipart write leaves behind
    unrelated = tmp_path / "kie" / "t" / "0.mp4#notes"
    unrelated.write_bytes(b"x")
    archive.put_stream("kie/t/0.mp4", iter([b"\0\0\0\x08free", b"data"]))
    assert not leftover.exists() and unrelated.exists()
    assert (tmp_path / "kie" / "t" / "0.mp4").read_bytes() == b"\0\0\0\x08freedata"
