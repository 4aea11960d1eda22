"""obstore stores for ``az://container/prefix`` (Azure Blob Storage) and ``gs://bucket/prefix`` (Google Cloud
Storage), built from :class:`~veo_archiver.settings.StorageSettings` for :func:`workers.storage.open_archive`,
and what every obstore store shares, S3's included: :func:`store_options` and :func:`reason`.

Both go through the same :class:`workers.storage.ObjectArchive` as S3, so they keep its contract with the
store's own mechanisms:

- a streamed ``put`` is Put Block + Put Block List on Azure and an XML-API multipart upload on GCS: the object
  appears only when the list/upload completes. A failed stream leaves uncommitted blocks (Azure drops them
  after 7 days by itself) or an incomplete multipart upload (GCS: expire it with a lifecycle rule);
- ``put_if_absent`` is ``If-None-Match: *`` on Azure (409 BlobAlreadyExists) and
  ``x-goog-if-generation-match: 0`` on GCS (412): obstore raises AlreadyExists/Precondition for both;
- the Content-Type goes in ``x-ms-blob-content-type`` / ``Content-Type`` like S3's.

Every value comes from the settings, passed explicitly. obstore's constructors also read ``AZURE_*`` /
``GOOGLE_*`` from the process environment, but explicit values win; what the settings leave unset (a
workload or managed identity's variables, application default credentials) is obstore's own chain.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import obstore
from obstore.store import AzureStore, GCSStore

from veo_archiver.errors import ConfigError
from veo_archiver.storage_settings import StorageSettings

#: obstore's own backoff between the retries of one request: 0.1 s doubling up to 2 s, jittered. Its default
#: (10 retries, up to 15 s apart, 3 minutes in all) would hold a job attempt through an outage that the job's
#: own schedule should see, count and back off from.
_BACKOFF = {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2}


def reason(exc: BaseException) -> str:
    """An obstore error for operators: its first paragraph says it all; the ``Debug source:`` dump after it
    (a multi-line Rust structure) stays on the exception, for ``raise ... from``."""
    return str(exc).split("\n\nDebug source:")[0].strip()


def store_options(settings: StorageSettings) -> dict[str, Any]:
    """The options every obstore store is built with: plain http where allowed, and bounded retries
    (``STORAGE_RETRIES`` within ``STORAGE_RETRY_TIMEOUT`` seconds) for one request."""
    return {
        "client_options": {"allow_http": settings.allow_http},
        "retry_config": {
            "max_retries": settings.retries,
            "retry_timeout": timedelta(seconds=settings.retry_timeout_s),
            "backoff": _BACKOFF,
        },
    }


def cloud_store(settings: StorageSettings) -> tuple[Any, str, str]:
    """``(store, base URL for locations, key prefix)`` for an ``az://`` or ``gs://`` archive."""
    scheme = settings.scheme
    name, _, prefix = settings.archive_url[len(f"{scheme}://") :].partition("/")
    try:
        if scheme == "az":
            store: Any = _azure(settings, name)
        elif scheme == "gs":
            store = _gcs(settings, name)
        else:
            raise ConfigError(f"ARCHIVE_URL={settings.archive_url}: not an az:// or gs:// archive")
    except (ValueError, obstore.exceptions.BaseError) as exc:
        # obstore's messages name the option, never its value: safe to show for a bad key
        raise ConfigError(f"ARCHIVE_URL={settings.archive_url}: {reason(exc)}") from exc
    return store, f"{scheme}://{name}", prefix


def _azure(settings: StorageSettings, container: str) -> AzureStore:
    config: dict[str, Any] = {"use_emulator": False}  # Azurite is an explicit endpoint (settings.py)
    if settings.azure_account:
        config["account_name"] = settings.azure_account
    if settings.azure_endpoint:
        config["endpoint"] = settings.azure_endpoint
    if settings.azure_account_key:
        config["account_key"] = settings.azure_account_key
        config["credential_type"] = "access_key"
    elif settings.azure_sas_token:
        config["sas_key"] = settings.azure_sas_token
        config["credential_type"] = "sas_token"
    return AzureStore(container, **store_options(settings), **config)


def _gcs(settings: StorageSettings, bucket: str) -> GCSStore:
    config: dict[str, Any] = {}
    if settings.google_service_account:
        config["service_account"] = settings.google_service_account
    if settings.google_service_account_key:
        config["service_account_key"] = settings.google_service_account_key
    if settings.google_application_credentials:
        config["application_credentials"] = settings.google_application_credentials
    if settings.google_base_url:
        config["base_url"] = settings.google_base_url
    return GCSStore(bucket, **store_options(settings), **config)
