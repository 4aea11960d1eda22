"""The archive on Azure Blob Storage (``ARCHIVE_URL=az://container/prefix``): the storage contract of
:class:`workers.storage.Archive` against a real Azurite, read back through Azurite's REST API rather than
obstore; and how the settings turn the standard ``AZURE_*`` variables into an ``AzureStore``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest

from tests.servers import Azurite
from veo_archiver.errors import ConfigError, StorageUnavailable
from veo_archiver.settings import Settings
from veo_archiver.sim.media import iter_mp4
from veo_archiver.storage_settings import AZURITE_KEY
from workers.storage import MiB, ObjectArchive, open_archive, read_json

PREFIX = "archive"


def explicit_env(azurite: Azurite, container: str) -> dict[str, str]:
    """The production form: account, key and endpoint (the emulator switch is covered by the e2e test)."""
    return {
        "ARCHIVE_URL": f"az://{container}/{PREFIX}",
        "AZURE_STORAGE_ACCOUNT_NAME": azurite.account,
        "AZURE_STORAGE_ACCOUNT_KEY": azurite.key,
        "AZURE_STORAGE_ENDPOINT": azurite.endpoint,
    }


@pytest.fixture
def archive(azurite: Azurite, azure_container: str) -> ObjectArchive:
    return open_archive(Settings.from_env(explicit_env(azurite, azure_container)).storage)


def committed_blocks(azurite: Azurite, container: str, key: str) -> int:
    _, _, body = azurite.request("GET", f"{container}/{key}", {"comp": "blocklist", "blocklisttype": "committed"})
    return len(ElementTree.fromstring(body).findall("./CommittedBlocks/Block"))  # noqa: S314  # our own server


def test_streamed_write_is_multipart_and_byte_exact(
    archive: ObjectArchive, azurite: Azurite, azure_container: str
) -> None:
    size = 20 * 1000 * 1000
    expected = hashlib.sha256(b"".join(iter_mp4(size, seed=7))).hexdigest()
    archive.put_stream("kie/t1/0.mp4", iter_mp4(size, seed=7), content_type="video/mp4")

    stored = azurite.get_blob(azure_container, f"{PREFIX}/kie/t1/0.mp4")
    assert stored is not None and len(stored) == size and hashlib.sha256(stored).hexdigest() == expected
    assert committed_blocks(azurite, azure_container, f"{PREFIX}/kie/t1/0.mp4") >= 3  # 8 MiB blocks, not one PUT
    props = azurite.blob_properties(azure_container, f"{PREFIX}/kie/t1/0.mp4")
    assert props is not None and props["content-type"] == "video/mp4" and props["x-ms-blob-type"] == "BlockBlob"
    head = archive.head("kie/t1/0.mp4")
    assert head is not None and head.size == size
    assert hashlib.sha256(b"".join(archive.iter_bytes("kie/t1/0.mp4"))).hexdigest() == expected


def test_put_if_absent_never_replaces(archive: ObjectArchive, azurite: Azurite, azure_container: str) -> None:
    assert archive.put_if_absent("kie/t2/manifest.json", b'{"n": 1}')
    assert not archive.put_if_absent("kie/t2/manifest.json", b'{"n": 2}')  # If-None-Match: * -> 409
    assert azurite.get_blob(azure_container, f"{PREFIX}/kie/t2/manifest.json") == b'{"n": 1}'


def test_manifest_reads_back_with_its_content_type(
    archive: ObjectArchive, azurite: Azurite, azure_container: str
) -> None:
    manifest = {"schema": 1, "provider": "kie", "task_id": "t3", "files": []}
    assert archive.put_if_absent("kie/t3/manifest.json", json.dumps(manifest).encode())
    archive.put_bytes("kie/t3/callback-succeeded.json", b"{}")
    archive.put_stream("kie/t3/0.mov", [b"\x00\x00\x00\x14ftypqt  ", b"rest"])
    assert read_json(archive, "kie/t3/manifest.json") == manifest
    types = {
        key: (azurite.blob_properties(azure_container, f"{PREFIX}/kie/t3/{key}") or {}).get("content-type")
        for key in ("manifest.json", "callback-succeeded.json", "0.mov")
    }
    assert types == {
        "manifest.json": "application/json",
        "callback-succeeded.json": "application/json",
        "0.mov": "video/quicktime",
    }
    assert archive.get_bytes("kie/missing/manifest.json") is None and archive.head("kie/missing/0.mp4") is None
    assert archive.object_key("kie/t3/manifest.json") == f"{PREFIX}/kie/t3/manifest.json"
    assert archive.location("kie/t3/manifest.json") == f"az://{azure_container}/{PREFIX}/kie/t3/manifest.json"


def test_a_failing_stream_leaves_nothing(archive: ObjectArchive, azurite: Azurite, azure_container: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"\x00" * (9 * MiB)  # more than one block is sent before the failure
        raise RuntimeError("download broke")

    with pytest.raises((RuntimeError, StorageUnavailable)):
        archive.put_stream("kie/t4/0.mp4", chunks(), content_type="video/mp4")
    assert archive.head("kie/t4/0.mp4") is None
    assert azurite.list_blobs(azure_container) == []  # uncommitted blocks are not a blob


def test_a_sas_token_instead_of_the_key(azurite: Azurite, azure_container: str) -> None:
    env = {**explicit_env(azurite, azure_container), "AZURE_STORAGE_ACCOUNT_KEY": ""}
    archive = open_archive(Settings.from_env({**env, "AZURE_STORAGE_SAS_TOKEN": "?" + azurite.sas_token()}).storage)
    assert archive.put_if_absent("kie/t6/manifest.json", b"{}") and not archive.put_if_absent(
        "kie/t6/manifest.json", b""
    )
    archive.put_stream("kie/t6/0.mp4", iter_mp4(9 * MiB, seed=6), content_type="video/mp4")
    assert azurite.list_blobs(azure_container) == [f"{PREFIX}/kie/t6/0.mp4", f"{PREFIX}/kie/t6/manifest.json"]
    read_only = open_archive(Settings.from_env({**env, "AZURE_STORAGE_SAS_TOKEN": azurite.sas_token("rl")}).storage)
    assert read_only.get_bytes("kie/t6/manifest.json") == b"{}"
    with pytest.raises(StorageUnavailable):
        read_only.put_bytes("kie/t6/callback-succeeded.json", b"{}")


def test_missing_container_is_storage_unavailable(azurite: Azurite) -> None:
    broken = open_archive(Settings.from_env(explicit_env(azurite, "no-such-container")).storage)
    with pytest.raises(StorageUnavailable):
        broken.put_bytes("kie/t5/manifest.json", b"{}")


# --------------------------------------------------------------------------------------------- configuration


def test_emulator_switch_means_azurite_defaults() -> None:
    storage = Settings.from_env({"ARCHIVE_URL": "az://veo/archive", "AZURE_STORAGE_USE_EMULATOR": "true"}).storage
    assert storage.scheme == "az" and storage.azure_account == "devstoreaccount1"
    assert storage.azure_account_key == AZURITE_KEY and storage.allow_http
    assert storage.azure_endpoint == "http://127.0.0.1:10000/devstoreaccount1"
    assert storage.describe() == "az://veo/archive at http://127.0.0.1:10000/devstoreaccount1"
    assert AZURITE_KEY not in repr(storage)


def test_production_settings_build_an_azure_store() -> None:
    env = {
        "ARCHIVE_URL": "az://videos/veo",
        "AZURE_STORAGE_ACCOUNT_NAME": "acct",
        "AZURE_STORAGE_SAS_TOKEN": "?sv=1&sig=x",
    }
    storage = Settings.from_env(env).storage
    assert storage.azure_sas_token == "sv=1&sig=x" and not storage.allow_http  # noqa: S105  # leading ? dropped
    assert storage.describe() == "az://videos/veo at https://acct.blob.core.windows.net"
    archive = open_archive(storage)
    assert archive.location("kie/t/0.mp4") == "az://videos/veo/kie/t/0.mp4"
    # neither key nor SAS: obstore's own chain (workload identity, managed identity) at first use
    open_archive(Settings.from_env({"ARCHIVE_URL": "az://videos", "AZURE_STORAGE_ACCOUNT_NAME": "acct"}).storage)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ARCHIVE_URL": "az://videos/p"}, "AZURE_STORAGE_ACCOUNT_NAME"),
        ({"ARCHIVE_URL": "az://"}, "az://container/prefix"),
        ({"ARCHIVE_URL": "az://Videos_1/p", "AZURE_STORAGE_ACCOUNT_NAME": "a"}, "container"),
        (
            {
                "ARCHIVE_URL": "az://videos",
                "AZURE_STORAGE_ACCOUNT_NAME": "a",
                "AZURE_STORAGE_ACCOUNT_KEY": "a2V5",
                "AZURE_STORAGE_SAS_TOKEN": "sv=1",
            },
            "AZURE_STORAGE_SAS_TOKEN",
        ),
        (
            {
                "ARCHIVE_URL": "az://videos",
                "AZURE_STORAGE_ACCOUNT_NAME": "a",
                "AZURE_STORAGE_ENDPOINT": "http://az.lan",
            },
            "AZURE_ALLOW_HTTP",
        ),
        (
            {
                "ARCHIVE_URL": "az://videos",
                "AZURE_STORAGE_USE_EMULATOR": "true",
                "AZURITE_BLOB_STORAGE_URL": "http://az:1",
            },
            "AZURITE_BLOB_STORAGE_URL",
        ),
        (
            {"ARCHIVE_URL": "az://videos", "AZURE_STORAGE_USE_EMULATOR": "1", "AZURE_STORAGE_ENDPOINT": "https://x"},
            "AZURE_STORAGE_USE_EMULATOR",
        ),
    ],
)
def test_bad_azure_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert names in caught.value.message


def test_plain_http_azure_endpoint_needs_loopback_or_the_explicit_allow() -> None:
    base = {"ARCHIVE_URL": "az://videos", "AZURE_STORAGE_ACCOUNT_NAME": "a"}
    lan = {**base, "AZURE_STORAGE_ENDPOINT": "http://azurite.lan:10000/a/", "AZURE_ALLOW_HTTP": "true"}
    assert Settings.from_env(lan).storage.allow_http
    assert Settings.from_env(lan).storage.azure_endpoint == "http://azurite.lan:10000/a"
    assert Settings.from_env({**base, "AZURE_STORAGE_ENDPOINT": "http://127.0.0.1:1/a"}).storage.allow_http
    assert not Settings.from_env({**base, "AZURE_STORAGE_ENDPOINT": "https://a.example"}).storage.allow_http
    # the other stores' variables play no part: a stray AWS allow does not open Azure to plain http
    assert not Settings.from_env({**base, "AWS_ALLOW_HTTP": "true"}).storage.allow_http


def test_a_malformed_account_key_is_a_config_error_that_does_not_echo_it() -> None:
    bad_key = "not base64 at all!"
    env = {"ARCHIVE_URL": "az://videos", "AZURE_STORAGE_ACCOUNT_NAME": "a", "AZURE_STORAGE_ACCOUNT_KEY": bad_key}
    with pytest.raises(ConfigError) as caught:
        open_archive(Settings.from_env(env).storage)
    assert "Invalid Access Key" in caught.value.message and bad_key not in caught.value.message
    assert "Debug source" not in caught.value.message
