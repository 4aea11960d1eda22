"""Small, structurally valid MP4 files (ftyp + moov/mvhd + mdat), generated deterministically."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator

CHUNK = 1024 * 1024


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
