r"""MP4 files for the simulators: generated stand-ins and a real, playable sample.

Two kinds:

- :func:`make_mp4` / :func:`iter_mp4`: a structurally valid MP4 (ftyp + moov/mvhd + random mdat) of any
  exact size, generated deterministically and streamed without holding it whole. Its moov has no track, so a
  player finds no stream in it (``ffprobe`` reports ``nb_streams=0``): right for sizes, hashes and
  transfer tests, not for looking at.
- :func:`sample_mp4` / :func:`sample_mp4_padded`: ``sample.mp4``, shipped as package data beside this
  module: 3 s of ffmpeg's ``testsrc2`` pattern, 320x180 at 25 fps, H.264 (High profile) in yuv420p, moov
  before mdat (faststart), 43,975 bytes. It plays in any browser or player. It was made once with::

      ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=320x180:rate=25:duration=3 \
          -c:v libx264 -preset veryslow -crf 30 -pix_fmt yuv420p -g 25 -bf 0 -threads 1 \
          -map_metadata -1 -fflags +bitexact -flags:v +bitexact -movflags +faststart \
          veo_archiver/sim/sample.mp4

  With Debian 12's ffmpeg 5.1.9 (libx264 0.164.3095) that command gives the same bytes on every run
  (sha256 ``30fcd11318323521f6c463441b425ef423fff0145fa370aecaa4c0c08a5dab3a``); another ffmpeg or libx264
  version gives an equivalent file, not necessarily the same bytes.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator
from importlib import resources

CHUNK = 1024 * 1024
SAMPLE = "sample.mp4"


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _header(duration_s: int = 8) -> bytes:
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41")
    timescale = 1000
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        struct.pack(">B3xIIII", 0, 0, 0, timescale, duration_s * timescale)
        + struct.pack(">IH10x", 0x10000, 0x100)
        + matrix
        + b"\x00" * 24
        + struct.pack(">I", 2),
    )
    return ftyp + _box(b"moov", mvhd)


def iter_mp4(size: int, *, seed: int = 0, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield an MP4 of exactly ``size`` bytes (at least the header) in chunks, without holding it whole."""
    header = _header()
    mdat_len = max(size - len(header), 8)
    yield header + struct.pack(">I", mdat_len) + b"mdat"
    remaining = mdat_len - 8
    rng = random.Random(seed)
    while remaining > 0:
        n = min(chunk, remaining)
        yield rng.randbytes(n)
        remaining -= n


def make_mp4(size: int = 256 * 1024, *, seed: int = 0) -> bytes:
    return b"".join(iter_mp4(size, seed=seed))


def sha256_of(chunks: Iterator[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


def sample_mp4() -> bytes:
    """The shipped ``sample.mp4`` (a real, playable H.264 MP4; see the module docstring)."""
    return (resources.files("veo_archiver.sim") / SAMPLE).read_bytes()


def sample_mp4_padded(size_kib: int | None = None) -> bytes:
    """The sample, grown to at least ``size_kib`` KiB by a top-level ``free`` box appended at its end.

    A ``free`` box is skipped by every reader, so the file stays valid and plays the same; only its size
    changes. ``None``, or a size not above the sample's, gives the sample unchanged.
    """
    sample = sample_mp4()
    if size_kib is None:
        return sample
    missing = size_kib * 1024 - len(sample)
    if missing <= 0:
        return sample
    box_len = max(missing, 8)  # a box is at least its 8-byte header
    if box_len > 0xFFFFFFFF:
        raise ValueError(f"size_kib={size_kib}: a single free box holds at most 4 GiB")
    return sample + struct.pack(">I", box_len) + b"free" + bytes(box_len - 8)
