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
