"""ISO base media (MP4/QuickTime) checks made while the bytes stream past: pure, bounded memory."""

from __future__ import annotations

from veo_archiver.errors import BadContent

VIDEO_BRANDS_OFFSET = 4


def looks_like_video(head: bytes) -> bool:
    """ISO base media (MP4, MOV): first box ``ftyp`` (some encoders put ``wide``/``free``/``moov`` first)."""
    return len(head) >= 8 and head[VIDEO_BRANDS_OFFSET : VIDEO_BRANDS_OFFSET + 4] in (
        b"ftyp",
        b"moov",
        b"wide",
        b"free",
        b"mdat",
    )


class BoxWalker:
    """Follows the top-level ISO-BMFF box headers as bytes go past, holding at most 16 bytes.

    A whole file is a run of boxes that ends exactly at the end of the body (or with a last box of size
    0, "to the end"). A body that stops inside a box was cut short, even if its Content-Length agreed.
    """

    def __init__(self) -> None:
        self.seen = 0
        self.next_box = 0
        self.header = b""
        self.to_end = False

    def feed(self, chunk: bytes) -> None:
        start = self.seen
        self.seen += len(chunk)
        while not self.to_end:
            at = self.next_box + len(self.header)
            if at >= self.seen:
                return
            want = 16 if len(self.header) >= 8 and self.header[:4] == b"\0\0\0\1" else 8
            self.header += chunk[at - start : at - start + want - len(self.header)]
            if len(self.header) < want:
                return
            size = int.from_bytes(self.header[:4], "big")
            if size == 1 and want == 8:
                continue  # a 64-bit size follows the type
            if size == 0:
                self.to_end = True
                return
            if size == 1:
                size = int.from_bytes(self.header[8:16], "big")
            if size < len(self.header):
                raise BadContent(
                    f"malformed box {self.header[4:8]!r} of {size} bytes at offset {self.next_box}",
                    reason="not_a_video",
                )
            self.next_box += size
            self.header = b""

    @property
    def complete(self) -> bool:
        return self.to_end or (self.next_box == self.seen and not self.header)


#: ``ftyp`` brands of QuickTime files; any other ``ftyp`` (isom, mp41, mp42, avc1, dash, …) is MP4
QUICKTIME_BRAND = b"qt  "
MP4 = ("video/mp4", ".mp4")
QUICKTIME = ("video/quicktime", ".mov")


def media_type(first_bytes: bytes) -> tuple[str, str]:
    """``(content_type, extension)`` of an ISO base media file from its first bytes (at least the ``ftyp`` box).

    A ``qt  `` major brand, or ``qt  `` as the only compatible brand, is QuickTime; any other ``ftyp`` is MP4.
    Without ``ftyp``, a first ``wide`` box (classic QuickTime) is QuickTime; anything else is MP4."""
    box = first_bytes[VIDEO_BRANDS_OFFSET : VIDEO_BRANDS_OFFSET + 4]
    if box == b"wide":
        return QUICKTIME
    if box != b"ftyp" or len(first_bytes) < 12:
        return MP4
    major = first_bytes[8:12]
    if major == QUICKTIME_BRAND:
        return QUICKTIME
    size = int.from_bytes(first_bytes[:4], "big")
    compatible = first_bytes[16 : min(size, len(first_bytes))]
    brands = {compatible[i : i + 4] for i in range(0, len(compatible) - 3, 4)}
    if brands == {QUICKTIME_BRAND}:
        return QUICKTIME
    return MP4
