"""Where the archive is: ``s3://``, ``az://``, ``gs://`` or a directory, with each store's standard variables
(``AWS_*``, ``AZURE_STORAGE_*``, ``GOOGLE_*``), checked once when the settings are built."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from veo_archiver.env_values import env_bool as _bool
from veo_archiver.env_values import env_int, is_loopback_host
from veo_archiver.errors import ConfigError

#: Azurite's well-known development account and its published key (Azure's docs print both)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_AZURE_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ARCHIVE_SCHEMES = {"s3": "s3://bucket/prefix", "az": "az://container/prefix", "gs": "gs://bucket/prefix"}


def _plain_http(endpoint: str | None, var: str, allow_var: str, allowed: bool) -> bool:
    """The rule every object store shares: ``http://`` only to loopback, or when ``allow_var`` says so."""
    if not endpoint or not endpoint.startswith("http://"):
        return allowed
    if not (allowed or is_loopback_host(urlsplit(endpoint).hostname or "")):
        raise ConfigError(
            f"{var}={endpoint} is plain http and not on loopback: "
            f"use https, or set {allow_var}=true if the network path is trusted"
        )
    return True


def _azure_storage(env: Mapping[str, str], archive_url: str) -> dict[str, Any]:
    """StorageSettings fields for ``az://``: the account, at most one credential, the endpoint.

    Neither a key nor a SAS token leaves the credential to obstore's chain (workload or managed identity).
    ``AZURE_STORAGE_USE_EMULATOR`` is Azurite: its account and key by default, at ``AZURITE_BLOB_STORAGE_URL``.
    """
    container = urlsplit(archive_url).netloc
    if not _AZURE_CONTAINER.fullmatch(container):
        raise ConfigError(f"ARCHIVE_URL={archive_url!r}: {container!r} is not an Azure container name")
    emulator = _bool(env, "AZURE_STORAGE_USE_EMULATOR", False)
    account = env.get("AZURE_STORAGE_ACCOUNT_NAME") or (AZURITE_ACCOUNT if emulator else None)
    key = env.get("AZURE_STORAGE_ACCOUNT_KEY") or None
    sas = (env.get("AZURE_STORAGE_SAS_TOKEN") or "").lstrip("?") or None
    endpoint = env.get("AZURE_STORAGE_ENDPOINT") or None
    endpoint_var = "AZURE_STORAGE_ENDPOINT"
    if key and sas:
        raise ConfigError(
            "AZURE_STORAGE_ACCOUNT_KEY and AZURE_STORAGE_SAS_TOKEN are both set: set one "
            "(or neither, for a managed or workload identity)"
        )
    if emulator:
        if endpoint:
            raise ConfigError(
                "AZURE_STORAGE_ENDPOINT and AZURE_STORAGE_USE_EMULATOR are both set: "
                "the emulator's address is AZURITE_BLOB_STORAGE_URL"
            )
        base = (env.get("AZURITE_BLOB_STORAGE_URL") or "http://127.0.0.1:10000").rstrip("/")
        endpoint, endpoint_var = f"{base}/{account}", "AZURITE_BLOB_STORAGE_URL"  # Azurite is path-style
        key = key or (None if sas else AZURITE_KEY)
    if not account:
        raise ConfigError(
            f"ARCHIVE_URL={archive_url}: set AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_USE_EMULATOR=true)"
        )
    endpoint = endpoint.rstrip("/") if endpoint else None
    return {
        "azure_account": account,
        "azure_account_key": key,
        "azure_sas_token": sas,
        "azure_endpoint": endpoint,
        "allow_http": _plain_http(endpoint, endpoint_var, "AZURE_ALLOW_HTTP", _bool(env, "AZURE_ALLOW_HTTP", False)),
    }


def _google_storage(env: Mapping[str, str]) -> dict[str, Any]:
    """StorageSettings fields for ``gs://``: a service-account file or JSON key, else application default
    credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's file, the metadata server)."""
    path = env.get("GOOGLE_SERVICE_ACCOUNT") or None
    key = env.get("GOOGLE_SERVICE_ACCOUNT_KEY") or None
    if path and key:
        raise ConfigError(
            "GOOGLE_SERVICE_ACCOUNT and GOOGLE_SERVICE_ACCOUNT_KEY are both set: set one "
            "(or neither, for application default credentials)"
        )
    info: dict[str, Any] = {}
    if key:
        try:
            info = json.loads(key)
        except ValueError:
            info = {}
        if not isinstance(info, dict) or not info:  # never echo the value: it is a private key
            raise ConfigError("GOOGLE_SERVICE_ACCOUNT_KEY: expected the service account's JSON key (the file's text)")
    base_url = (env.get("GOOGLE_BASE_URL") or None) or (str(info.get("gcs_base_url") or "") or None)
    base_var = "GOOGLE_BASE_URL" if env.get("GOOGLE_BASE_URL") else "GOOGLE_SERVICE_ACCOUNT_KEY's gcs_base_url"
    return {
        "google_service_account": path,
        "google_service_account_key": key,
        "google_application_credentials": env.get("GOOGLE_APPLICATION_CREDENTIALS") or None,
        "google_base_url": base_url.rstrip("/") if base_url else None,
        "allow_http": _plain_http(base_url, base_var, "GOOGLE_ALLOW_HTTP", _bool(env, "GOOGLE_ALLOW_HTTP", False)),
    }


@dataclass(frozen=True)
class StorageSettings:
    """Where the archive is: ``s3://``, ``az://``, ``gs://``, or a directory. ``allow_http`` is the active
    store's: plain http to its endpoint (set only for loopback or by the explicit ``*_ALLOW_HTTP``)."""

    archive_url: str = "./archive"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    allow_http: bool = False
    azure_account: str | None = None
    azure_account_key: str | None = field(default=None, repr=False)
    azure_sas_token: str | None = field(default=None, repr=False)
    azure_endpoint: str | None = None
    google_service_account: str | None = None
    google_service_account_key: str | None = field(default=None, repr=False)
    google_application_credentials: str | None = None
    google_base_url: str | None = None
    #: retries of one failed store request (5xx, connection errors) inside one job attempt, and the time they
    #: may take; past them the job's own backoff (RETRY_BASE..RETRY_CAP) takes over, visible in its attempts
    retries: int = 3
    retry_timeout_s: int = 30

    @property
    def scheme(self) -> str:
        """``s3``, ``az``, ``gs``, or ``file`` for a directory."""
        found = urlsplit(self.archive_url).scheme
        return found if found in _ARCHIVE_SCHEMES else "file"

    @property
    def is_s3(self) -> bool:
        return self.archive_url.startswith("s3://")

    def local_root(self) -> Path:
        parts = urlsplit(self.archive_url)
        if parts.scheme == "file":
            return Path(parts.path)
        return Path(self.archive_url).expanduser().resolve()

    def describe(self) -> str:
        if self.is_s3:
            return f"{self.archive_url} at {self.endpoint_url or 'AWS'}"
        if self.scheme == "az":
            return (
                f"{self.archive_url} at {self.azure_endpoint or f'https://{self.azure_account}.blob.core.windows.net'}"
            )
        if self.scheme == "gs":
            return f"{self.archive_url} at {self.google_base_url or 'https://storage.googleapis.com'}"
        return str(self.local_root())


def storage_from_env(env: Mapping[str, str]) -> StorageSettings:
    """Where the archive is and how to reach it, from ``ARCHIVE_URL`` and its store's standard variables."""
    endpoint = env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or None
    allow_http = _plain_http(endpoint, "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", _bool(env, "AWS_ALLOW_HTTP", False))
    archive_url = env.get("ARCHIVE_URL") or "./archive"
    scheme = urlsplit(archive_url).scheme
    if scheme in _ARCHIVE_SCHEMES and not urlsplit(archive_url).netloc:
        raise ConfigError(f"ARCHIVE_URL={archive_url!r}: expected {_ARCHIVE_SCHEMES[scheme]}")
    if "://" in archive_url and scheme not in (*_ARCHIVE_SCHEMES, "file"):
        raise ConfigError(
            f"ARCHIVE_URL={archive_url!r}: expected s3://bucket/prefix, az://container/prefix, "
            "gs://bucket/prefix, file:///path or a path"
        )
    cloud = _azure_storage(env, archive_url) if scheme == "az" else _google_storage(env) if scheme == "gs" else {}
    return StorageSettings(
        archive_url=archive_url,
        endpoint_url=endpoint,
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        retries=env_int(env, "STORAGE_RETRIES", 3, maximum=10),
        retry_timeout_s=env_int(env, "STORAGE_RETRY_TIMEOUT", 30, minimum=1),
        **{"allow_http": allow_http, **cloud},
    )
