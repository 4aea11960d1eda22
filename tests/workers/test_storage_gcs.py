"""The archive on Google Cloud Storage (``ARCHIVE_URL=gs://bucket/prefix``): how the standard ``GOOGLE_*``
variables become a ``GCSStore``, and reads + ``veo-archiver show`` against fake-gcs-server.

fake-gcs-server answers obstore's XML-API writes (single PUT and multipart) with ``400 invalid uploadType``,
so writes, put-if-absent and the streamed multipart upload to GCS are not exercised here (README says so);
objects are put in through the emulator's JSON upload API instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.procs import REPO
from tests.servers import FakeGCS, RedisServer
from veo_archiver import archive_keys
from veo_archiver.errors import ConfigError
from veo_archiver.settings import Settings
from veo_archiver.sim.media import make_mp4
from workers.storage import open_archive, read_json

PREFIX = "archive"


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGCS) -> str:
    return fake_gcs.create_bucket(f"test-{uuid.uuid4().hex[:16]}")


def put_task(fake_gcs: FakeGCS, bucket: str, task_id: str) -> tuple[dict[str, object], list[bytes]]:
    """A finished task as the worker leaves it: two videos, then the manifest that lists them."""
    videos = [make_mp4(300_000, seed=1), make_mp4(120_000, seed=2)]
    files = []
    for n, data in enumerate(videos):
        key = archive_keys.video_key("kie", task_id, n)
        fake_gcs.upload(bucket, f"{PREFIX}/{key}", data, "video/mp4")
        files.append({"index": n, "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"schema": 1, "provider": "kie", "task_id": task_id, "status": "succeeded", "files": files}
    key = archive_keys.manifest_key("kie", task_id)
    fake_gcs.upload(bucket, f"{PREFIX}/{key}", json.dumps(manifest).encode(), "application/json")
    return manifest, videos


def test_reads_through_the_gcs_archive(fake_gcs: FakeGCS, gcs_bucket: str) -> None:
    manifest, videos = put_task(fake_gcs, gcs_bucket, "veo_gcs_1")
    archive = open_archive(Settings.from_env(fake_gcs.env(gcs_bucket, PREFIX)).storage)
    assert read_json(archive, archive_keys.manifest_key("kie", "veo_gcs_1")) == manifest
    key = archive_keys.video_key("kie", "veo_gcs_1", 0)
    head = archive.head(key)
    assert head is not None and head.size == len(videos[0])
    assert b"".join(archive.iter_bytes(key)) == videos[0] == archive.get_bytes(key)
    assert archive.get_bytes("kie/none/manifest.json") is None and archive.head("kie/none/0.mp4") is None
    assert archive.location(key) == f"gs://{gcs_bucket}/{PREFIX}/{key}"


def test_show_prints_keys_sizes_and_sha256_from_gcs(
    fake_gcs: FakeGCS, gcs_bucket: str, redis_server: RedisServer
) -> None:
    _, videos = put_task(fake_gcs, gcs_bucket, "veo_gcs_2")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "AZURE_", "AWS_", "ARCHIVE_"))}
    env = {**inherited, **fake_gcs.env(gcs_bucket, PREFIX), "REDIS_URL": redis_server.url}
    shown = subprocess.run(
        [sys.executable, "-m", "veo_archiver", "show", "kie", "veo_gcs_2"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"archive: gs://{gcs_bucket}/{PREFIX}/kie/" in shown.stdout
    for n, data in enumerate(videos):
        row = next(line for line in shown.stdout.splitlines() if archive_keys.video_key("kie", "veo_gcs_2", n) in line)
        assert str(len(data)) in row and hashlib.sha256(data).hexdigest() in row and row.rstrip().endswith("yes")


# --------------------------------------------------------------------------------------------- configuration


def test_application_default_credentials_when_nothing_is_set() -> None:
    storage = Settings.from_env({"ARCHIVE_URL": "gs://videos/veo"}).storage
    assert storage.scheme == "gs" and storage.describe() == "gs://videos/veo at https://storage.googleapis.com"
    archive = open_archive(storage)  # credentials are resolved at first use (ADC file or metadata server)
    assert archive.location("kie/t/0.mp4") == "gs://videos/veo/kie/t/0.mp4"


def test_service_account_file_and_endpoint_are_passed(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    env = {"ARCHIVE_URL": "gs://videos", "GOOGLE_SERVICE_ACCOUNT": str(missing)}
    with pytest.raises(ConfigError) as caught:
        open_archive(Settings.from_env(env).storage)  # obstore reads the file when the store is built
    assert str(missing) in caught.value.message
    env = {"ARCHIVE_URL": "gs://videos", "GOOGLE_BASE_URL": "http://127.0.0.1:4443/"}
    storage = Settings.from_env(env).storage
    assert storage.google_base_url == "http://127.0.0.1:4443" and storage.allow_http
    assert storage.describe() == "gs://videos at http://127.0.0.1:4443"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ARCHIVE_URL": "gs://"}, "gs://bucket/prefix"),
        (
            {"ARCHIVE_URL": "gs://v", "GOOGLE_SERVICE_ACCOUNT": "/k.json", "GOOGLE_SERVICE_ACCOUNT_KEY": "{}"},
            "GOOGLE_SERVICE_ACCOUNT_KEY",
        ),
        ({"ARCHIVE_URL": "gs://v", "GOOGLE_SERVICE_ACCOUNT_KEY": "/path/to/key.json"}, "JSON key"),
        ({"ARCHIVE_URL": "gs://v", "GOOGLE_BASE_URL": "http://gcs.lan:4443"}, "GOOGLE_ALLOW_HTTP"),
        (
            {"ARCHIVE_URL": "gs://v", "GOOGLE_SERVICE_ACCOUNT_KEY": json.dumps({"gcs_base_url": "http://gcs.lan"})},
            "gcs_base_url",
        ),
    ],
)
def test_bad_google_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert names in caught.value.message
    assert "/path/to/key.json" not in caught.value.message  # a key's value is never echoed


def test_plain_http_google_endpoint_with_the_explicit_allow() -> None:
    env = {"ARCHIVE_URL": "gs://v", "GOOGLE_BASE_URL": "http://gcs.lan:4443", "GOOGLE_ALLOW_HTTP": "true"}
    assert Settings.from_env(env).storage.allow_http
