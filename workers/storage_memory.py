"""An :class:`~workers.storage.Archive` held in a dict, for fast tests of the job's logic.

It keeps the real archive's semantics (see :class:`workers.storage.Archive`): a streamed object appears only
once its chunks are exhausted, an error raised by the chunks propagates as is (as obstore does) and leaves
nothing behind, ``put_if_absent`` never replaces, a missing object reads as ``None``, and each object keeps
the content type the S3 archive would give it. It also counts writes per key, so a test can tell a reused
object from a rewritten one. Workers code rather than test code so that anything may build one; nothing in
production does.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from veo_archiver.errors import StorageUnavailable
from workers.storage import ListedObject, StoredObject, content_type_for


@dataclass(frozen=True)
class MemoryObject:
    data: bytes
    content_type: str


class MemoryArchive:
    """``MemoryArchive()``: an empty archive; ``objects`` maps each key to what is stored there, ``modified``
    to when it was last written (``clock``: epoch seconds)."""

    def __init__(self, base_url: str = "memory://archive", clock: Callable[[], float] = time.time) -> None:
        self.objects: dict[str, MemoryObject] = {}
        self.modified: dict[str, float] = {}
        self.clock = clock
        #: completed writes per key (a refused ``put_if_absent`` is not one)
        self.writes: Counter[str] = Counter()
        self._base_url = base_url.rstrip("/")
        self._lock = threading.Lock()

    def _store(self, key: str, data: bytes, *, replace: bool, content_type: str | None = None) -> bool:
        with self._lock:
            if not replace and key in self.objects:
                return False
            self.objects[key] = MemoryObject(data, content_type or content_type_for(key))
            self.modified[key] = self.clock()
            self.writes[key] += 1
            return True

    def location(self, key: str) -> str:
        return f"{self._base_url}/{key}"

    def object_key(self, key: str) -> str:
        return key

    def where(self) -> dict[str, str]:
        return {"backend": "memory", "prefix": "", "url": self._base_url}

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None) -> None:
        data = b"".join(bytes(chunk) for chunk in chunks)  # an error here propagates; nothing is stored
        self._store(key, data, replace=True, content_type=content_type)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._store(key, bytes(data), replace=True)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._store(key, bytes(data), replace=False)

    def get_bytes(self, key: str) -> bytes | None:
        stored = self.objects.get(key)
        return None if stored is None else stored.data

    def iter_bytes(self, key: str, chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
        stored = self.objects.get(key)
        if stored is None:  # obstore raises NotFoundError here, which ObjectArchive translates the same way
            raise StorageUnavailable(f"reading {key}: not found")
        for start in range(0, len(stored.data), chunk_bytes):
            yield stored.data[start : start + chunk_bytes]

    def head(self, key: str) -> StoredObject | None:
        stored = self.objects.get(key)
        return None if stored is None else StoredObject(key=key, size=len(stored.data))

    def iter_objects(self, prefix: str = "") -> Iterator[ListedObject]:
        segments = prefix.strip("/")
        with self._lock:
            listed = [
                ListedObject(key=key, size=len(stored.data), modified=self.modified[key])
                for key, stored in self.objects.items()
                if not segments or key == segments or key.startswith(segments + "/")
            ]
        yield from listed

    def keys(self, prefix: str = "") -> list[str]:
        """Every stored key under ``prefix``, sorted (the listing a test asserts on)."""
        return sorted(k for k in self.objects if k.startswith(prefix))

    def content_type(self, key: str) -> str | None:
        stored = self.objects.get(key)
        return None if stored is None else stored.content_type
