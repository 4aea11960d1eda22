"""The simulators' sample video is a real, playable H.264 MP4, also once padded with a ``free`` box."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from veo_archiver.sim.media import sample_mp4, sample_mp4_padded

KiB = 1024


def top_level_boxes(data: bytes) -> list[tuple[bytes, int]]:
    """``(type, size)`` of each top-level box; fails on a box that overruns the file."""
    boxes: list[tuple[bytes, int]] = []
    pos = 0
    while pos < len(data):
        assert pos + 8 <= len(data), f"truncated box header at {pos}"
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:  # 64-bit size follows the type
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
        assert size >= 8, f"box {kind!r} at {pos} has size {size}"
        assert pos + size <= len(data), f"box {kind!r} at {pos} runs past the end of the file"
        boxes.append((kind, size))
        pos += size
    return boxes


def test_sample_is_ftyp_first_and_moov_before_mdat() -> None:
    data = sample_mp4()
    assert 20 * KiB <= len(data) <= 80 * KiB
    kinds = [kind for kind, _ in top_level_boxes(data)]
    assert kinds[0] == b"ftyp"
    assert kinds.index(b"moov") < kinds.index(b"mdat"), kinds  # faststart: playable while it downloads


def test_padded_sample_ends_in_a_free_box() -> None:
    sample = sample_mp4()
    padded = sample_mp4_padded(200)
    assert len(padded) >= 200 * KiB
    assert padded.startswith(sample)
    boxes = top_level_boxes(padded)
    assert boxes[-1] == (b"free", len(padded) - len(sample))
    assert padded[len(sample) + 8 :] == bytes(len(padded) - len(sample) - 8)


@pytest.mark.parametrize("size_kib", [None, 0, 1, 42])
def test_padding_to_no_more_than_the_sample_returns_it_unchanged(size_kib: int | None) -> None:
    assert sample_mp4_padded(size_kib) == sample_mp4()


def test_padding_to_just_above_the_sample_still_gives_a_whole_box() -> None:
    sample = sample_mp4()
    target_kib = len(sample) // KiB + 1  # fewer than 8 bytes may be missing: the box is still 8 bytes
    padded = sample_mp4_padded(target_kib)
    assert len(padded) >= target_kib * KiB
    assert top_level_boxes(padded)[-1][0] == b"free"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install ffmpeg)")
    return path


@pytest.mark.parametrize("size_kib", [None, 200], ids=["sample", "padded-200KiB"])
def test_ffprobe_finds_an_h264_video_stream_and_ffmpeg_decodes_it(tmp_path: Path, size_kib: int | None) -> None:
    ffprobe = _tool("ffprobe")
    ffmpeg = _tool("ffmpeg")
    path = tmp_path / "video.mp4"
    path.write_bytes(sample_mp4_padded(size_kib))

    probe = subprocess.run(
        [ffprobe, "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stderr == ""
    streams = json.loads(probe.stdout)["streams"]
    video = [s for s in streams if s.get("codec_type") == "video"]
    assert video, streams
    assert video[0]["codec_name"] == "h264"
    assert (video[0]["width"], video[0]["height"]) == (320, 180)

    decode = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert decode.returncode == 0, decode.stderr
    assert decode.stderr == "", decode.stderr  # -v error: any output is a decoding error
