"""End to end into Azure Blob Storage: redis-server, Azurite, the receiver under uvicorn and an RQ worker
process, configured only through the environment (``ARCHIVE_URL=az://veo/archive`` + the emulator variables).
A signed kie callback with a 20 MB and a 1 MB video ends byte-exact in the container, with its manifest last,
and ``veo-archiver show`` prints each key with its size and sha256."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import REPO, start_receiver, start_worker, wait_for
from tests.servers import Azurite, RedisServer
from veo_archiver import archive_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4, sample_mp4_padded

pytestmark = pytest.mark.slow
KEY = "e2e-kie-key"
CONTAINER = "veo"
PREFIX = "archive"


@pytest.fixture
def veo_container(azurite: Azurite) -> str:
    """The container the Done-when names, emptied first (Azurite runs for the whole session)."""
    if not azurite.running:
        azurite.start()
    status, _, _ = azurite.request("HEAD", CONTAINER, {"restype": "container"})
    if status != 404:
        azurite.delete_container(CONTAINER)
        wait_for(lambda: azurite.request("HEAD", CONTAINER, {"restype": "container"})[0] == 404, 10, what="delete")
    return azurite.create_container(CONTAINER)


def clean_env() -> dict[str, str]:
    """This process's environment without any storage variables a developer's shell may carry."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZURITE_", "AWS_", "GOOGLE_"))}


def test_signed_kie_callback_archived_to_azure(
    redis_server: RedisServer, azurite: Azurite, veo_container: str, tmp_path: Path
) -> None:
    videos = [make_mp4(20 * 1000 * 1000, seed=20), sample_mp4_padded(1000)]
    task_id = "veo_task_azure"
    with FileHost() as files:
        env = {
            **azurite.env(veo_container, PREFIX),  # ARCHIVE_URL=az://veo/archive, AZURE_STORAGE_USE_EMULATOR, ...
            "REDIS_URL": redis_server.url,
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
            "LOG_FORMAT": "json",
        }
        assert env["ARCHIVE_URL"] == "az://veo/archive"
        urls = [files.add(f"/cdn/{n}.mp4", data) for n, data in enumerate(videos)]
        receiver, base = start_receiver({**clean_env(), **env}, tmp_path)
        worker = start_worker({**clean_env(), **env}, tmp_path)
        try:
            body = kie_sim.success_body(task_id, urls)
            answer = kie_sim.send(base + "/callbacks/kie", body, kie_sim.signed_headers(KEY, task_id))
            assert answer.status_code == 200, answer.text
            manifest_key = f"{PREFIX}/{archive_keys.manifest_key('kie', task_id)}"
            raw = wait_for(
                lambda: azurite.get_blob(veo_container, manifest_key), 120, what=f"manifest\n{worker.log()[-3000:]}"
            )
        finally:
            worker.stop()
            receiver.stop()
        assert files.completed["/cdn/0.mp4"] == 1 and files.completed["/cdn/1.mp4"] == 1

    manifest = json.loads(raw)
    assert manifest["status"] == "succeeded" and manifest["verification"] == "signature"
    assert [f["source_url"] for f in manifest["files"]] == urls
    for n, (entry, data) in enumerate(zip(manifest["files"], videos, strict=True)):
        assert entry["key"] == archive_keys.video_key("kie", task_id, n)
        stored = azurite.get_blob(veo_container, f"{PREFIX}/{entry['key']}")
        assert stored is not None and len(stored) == len(data) == entry["size"]
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest() == entry["sha256"]
        props = azurite.blob_properties(veo_container, f"{PREFIX}/{entry['key']}")
        assert props is not None and props["content-type"] == entry["content_type"] == "video/mp4"
    # exactly the task's objects: nothing partial or staged is left beside them
    assert azurite.list_blobs(veo_container) == sorted(
        f"{PREFIX}/{key}"
        for key in (
            archive_keys.video_key("kie", task_id, 0),
            archive_keys.video_key("kie", task_id, 1),
            archive_keys.callback_key("kie", task_id, "succeeded"),
            archive_keys.manifest_key("kie", task_id),
        )
    )
    assert (azurite.blob_properties(veo_container, manifest_key) or {})["content-type"] == "application/json"

    shown = subprocess.run(
        [sys.executable, "-m", "veo_archiver", "show", "kie", task_id],
        env={**clean_env(), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"archive: az://veo/{manifest_key}" in shown.stdout
    for entry, data in zip(manifest["files"], videos, strict=True):
        row = next(line for line in shown.stdout.splitlines() if entry["key"] in line)
        assert str(len(data)) in row and hashlib.sha256(data).hexdigest() in row and row.rstrip().endswith("yes")
