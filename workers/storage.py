"""The archive: where videos and manifests land. One small interface, one library (obstore) behind it.

obstore drives every target with the same calls: ``LocalStore`` for a directory, ``S3Store`` for any
S3-compatible server, ``AzureStore``/``GCSStore`` for ``az://``/``gs://`` (built in :mod:`workers.storage_cloud`,
same semantics). A streamed ``put`` is a multipart upload on S3 (the object appears only when the
upload completes) and a staged write + rename on a directory, so a reader never sees a partial video.
``put_if_absent`` is a conditional create (``If-None-Match: *`` on S3, exclusive create on disk).
obstore's failures are translated here into :class:`StorageUnavailable`.

Everything that stores or reads (the job, :class:`workers.context.WorkerContext`) holds an :class:`Archive`;
:class:`ObjectArchive` is the real one, :class:`workers.storage_memory.MemoryArchive` the in-memory one that
fast tests of the job's logic use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError
from obstore.store import LocalStore, S3Store

from veo_archiver.errors import ConfigError, StorageUnavailable
from veo_archiver.storage_settings import StorageSettings
from workers.storage_cloud import cloud_store, reason, store_options

MiB = 1024 * 1024
PART_BYTES = 8 * MiB
PARTS_IN_FLIGHT = 4


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


@dataclass(frozen=True)
class ListedObject:
    """One object of a listing: its key (relative to the archive, like every other key here), its size and when
    it was last written (epoch seconds, the store's own clock)."""

    key: str
    size: int
    modified: float


class Archive(Protocol):
    """Object storage as the job uses it. Semantics every implementation keeps:

    - ``put_stream`` stores the object only once ``chunks`` is exhausted; an exception raised by ``chunks``
      propagates (possibly wrapped in :class:`StorageUnavailable`) and leaves nothing at ``key``;
    - ``put_bytes``/``put_stream`` replace an existing object; ``put_if_absent`` never does (returns False);
      the job, not the store, keeps video objects write-once (``head`` before writing);
    - a missing object reads as ``None`` (``get_bytes``, ``head``); other failures raise StorageUnavailable;
    - an object's Content-Type is ``content_type`` when given (a video's, decided from its bytes), else
      :func:`content_type_for` its key;
    - ``object_key`` is the full key in the store (the archive prefix included), ``location`` its URL;
    - ``where`` says where the archive is, for a manifest to carry: ``backend`` (``s3``, ``azure``, ``gcs``,
      ``local``, ``memory``), its ``bucket``/``container``/``directory``, ``prefix``, ``url`` (the root every
      location starts with) and ``endpoint`` when one was set; never a credential;
    - ``iter_objects(prefix)`` lists every object under ``prefix``, taken as whole path segments (``kie`` lists
      ``kie/…``, never ``kie2/…``), in no promised order, with each object's last write time.
    """

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def iter_bytes(self, key: str) -> Iterator[bytes]: ...
    def head(self, key: str) -> StoredObject | None: ...
    def location(self, key: str) -> str: ...
    def object_key(self, key: str) -> str: ...
    def where(self) -> dict[str, str]: ...
    def iter_objects(self, prefix: str = "") -> Iterator[ListedObject]: ...


def read_json(archive: Archive, key: str) -> dict[str, Any] | None:
    """A JSON object stored at ``key`` (a manifest), or None when there is none."""
    raw = archive.get_bytes(key)
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


class ObjectArchive:
    """:class:`Archive` over an obstore store, with every key under ``prefix``."""

    def __init__(
        self,
        store: Any,
        *,
        prefix: str,
        base_url: str,
        attributes: bool,
        local_root: Path | None = None,
        endpoint: str | None = None,
    ) -> None:
        self._store = store
        self._prefix = prefix.strip("/")
        self._base_url = base_url.rstrip("/")
        self._attributes = attributes
        self._local_root = local_root
        self._endpoint = endpoint

    def _drop_stale_staging(self, key: str) -> None:
        """A process killed mid-write leaves obstore's staging file ``<key>#<n>`` beside the key (S3 leaves an
        incomplete multipart upload instead: expire those with a bucket lifecycle rule). Only one job writes a
        task's keys at a time, so any staging file found before a write is a leftover."""
        if self._local_root is None:
            return
        target = self._local_root / self._path(key)
        for leftover in target.parent.glob(f"{target.name}#*"):
            if leftover.name[len(target.name) + 1 :].isdigit():
                leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def location(self, key: str) -> str:
        return f"{self._base_url}/{self._path(key)}"

    def object_key(self, key: str) -> str:
        return self._path(key)

    def where(self) -> dict[str, str]:
        scheme, _, name = self._base_url.partition("://")
        backend, noun = _BACKENDS.get(scheme, (scheme, "root"))
        if self._local_root is not None:
            name = str(self._local_root)
        out = {"backend": backend, noun: name, "prefix": self._prefix, "url": self.location("").rstrip("/")}
        if self._endpoint:
            out["endpoint"] = public_url(self._endpoint)
        return out

    def _attrs(self, key: str, content_type: str | None = None) -> dict[str, str] | None:
        if not self._attributes:
            return None
        return {"Content-Type": content_type or content_type_for(key)}

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None) -> None:
        self._drop_stale_staging(key)
        try:
            obstore.put(
                self._store,
                self._path(key),
                iter(chunks),
                attributes=self._attrs(key, content_type),
                chunk_size=PART_BYTES,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        except (OSError, obstore.exceptions.BaseError) as exc:
            raise StorageUnavailable(f"writing {key}: {reason(exc)}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            obstore.put(self._store, self._path(key), data, attributes=self._attrs(key))
        except (OSError, obstore.exceptions.BaseError) as exc:
            raise StorageUnavailable(f"writing {key}: {reason(exc)}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            obstore.put(self._store, self._path(key), data, mode="create", attributes=self._attrs(key))
        except (AlreadyExistsError, PreconditionError, FileExistsError):
            return False
        except (OSError, obstore.exceptions.BaseError) as exc:
            raise StorageUnavailable(f"writing {key}: {reason(exc)}") from exc
        return True

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return bytes(obstore.get(self._store, self._path(key)).bytes())
        except (NotFoundError, FileNotFoundError):
            return None
        except (OSError, obstore.exceptions.BaseError) as exc:
            raise StorageUnavailable(f"reading {key}: {reason(exc)}") from exc

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        try:
            result = obstore.get(self._store, self._path(key))
            for chunk in result:
                yield bytes(chunk)
        except (OSError, obstore.exceptions.BaseError) as exc:
            raise StorageUnavailable(f"reading {key}: {reason(exc)}") from exc

    def head(self, key: str) -> StoredObject | None:
        try:
            meta = obstore.head(self._store, self._path(key))
        except (NotFoundError, FileNotFoundError):
            return None
        except (OSError, obstore.exceptions.BaseError) as exc:
            raise StorageUnavailable(f"reading {key}: {reason(exc)}") from exc
        return StoredObject(key=key, size=int(meta["size"]))

    def iter_objects(self, prefix: str = "") -> Iterator[ListedObject]:
        # obstore matches prefixes on whole path segments, on every store (S3, Azure, GCS, local)
        segments = "/".join(part for part in (self._prefix, prefix.strip("/")) if part)
        above = f"{self._prefix}/" if self._prefix else ""
        try:
            for batch in obstore.list(self._store, segments or None, chunk_size=1000):
                for meta in batch:
                    yield ListedObject(
                        key=meta["path"].removeprefix(above),
                        size=int(meta["size"]),
                        modified=meta["last_modified"].timestamp(),
                    )
        except (OSError, obstore.exceptions.BaseError) as exc:
            raise StorageUnavailable(f"listing {prefix or 'the archive'}: {reason(exc)}") from exc

    def get_json(self, key: str) -> dict[str, Any] | None:
        return read_json(self, key)


#: ``where()``'s backend and the noun of its top level, by the scheme of the archive's locations
_BACKENDS = {
    "s3": ("s3", "bucket"),
    "az": ("azure", "container"),
    "gs": ("gcs", "bucket"),
    "file": ("local", "directory"),
}


def public_url(url: str) -> str:
    """``url`` as a manifest may show it: no user or password, no query (a SAS token), no fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def content_type_for(key: str) -> str:
    if key.endswith(".mp4"):
        return "video/mp4"
    if key.endswith(".mov"):
        return "video/quicktime"
    if key.endswith(".json"):
        return "application/json"
    return "application/octet-stream"


def open_archive(settings: StorageSettings) -> ObjectArchive:
    """Build the archive named by ``ARCHIVE_URL`` (called once per worker process, after any fork)."""
    if settings.scheme in ("az", "gs"):
        store, base_url, prefix = cloud_store(settings)
        endpoint = settings.azure_endpoint if settings.scheme == "az" else settings.google_base_url
        return ObjectArchive(store, prefix=prefix, base_url=base_url, attributes=True, endpoint=endpoint)
    if settings.is_s3:
        bucket, _, prefix = settings.archive_url[len("s3://") :].partition("/")
        config: dict[str, Any] = {"region": settings.region}
        if settings.endpoint_url:
            config["endpoint"] = settings.endpoint_url
        if settings.access_key_id and settings.secret_access_key:
            config["access_key_id"] = settings.access_key_id
            config["secret_access_key"] = settings.secret_access_key
        if settings.endpoint_url:
            config["virtual_hosted_style_request"] = False
        try:
            store = S3Store(bucket, **store_options(settings), **config)
        except (ValueError, obstore.exceptions.BaseError) as exc:
            raise ConfigError(f"ARCHIVE_URL={settings.archive_url}: {reason(exc)}") from exc
        return ObjectArchive(
            store, prefix=prefix, base_url=f"s3://{bucket}", attributes=True, endpoint=settings.endpoint_url
        )
    root = settings.local_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        local = LocalStore(str(root), mkdir=True)
    except OSError as exc:
        raise ConfigError(f"ARCHIVE_URL={settings.archive_url}: cannot use {root}: {exc}") from exc
    return ObjectArchive(local, prefix="", base_url=root.as_uri(), attributes=False, local_root=root)
