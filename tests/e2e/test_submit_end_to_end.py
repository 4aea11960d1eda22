"""Submitting through the archiver with real processes on loopback: ``veo-archiver submit`` against a stand-in
kie.ai API (``KIE_API_BASE``), the receiver under uvicorn, redis-server, burst workers, ``tracked``, ``sweep``
and ``show``: a task tracked from birth is archived by the sweep when no callback comes, and an extension
is archived with its parent named in ``extends`` (linked at read time when the parent lands later)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.procs import REPO, wait_for
from tests.servers import RedisServer
from tests.stacks import DirArchive, Stack
from veo_archiver import archive_keys
from veo_archiver.sim.cloud import ProviderCloud
from veo_archiver.sim.media import make_mp4, sample_mp4

pytestmark = pytest.mark.slow
KIE_HMAC = "e2e-submit-kie-hmac"


def submit(stack: Stack, operation: str, body: dict[str, object]) -> str:
    """``veo-archiver submit kie OPERATION --json -``: the task id it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "veo_archiver", "--log-format", "text", "submit", "kie", operation, "--json", "-"],
        input=json.dumps(body),
        env={**os.environ, **stack.env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def kie_api_env(cloud: ProviderCloud, **more: str) -> dict[str, str]:
    """The receiver's and the CLI's settings for a stand-in kie.ai API (``cloud``) and its signed callbacks."""
    return {
        "KIE_WEBHOOK_HMAC_KEYS": KIE_HMAC,
        "KIE_API_KEY": "kie-api-key",
        "KIE_API_BASE": cloud.base_url,
        "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{cloud.port}",
        **more,
    }


def test_submit_track_sweep_and_extend(tmp_path: Path, redis_server: RedisServer) -> None:
    with ProviderCloud(api_keys={"kie": "kie-api-key"}) as cloud:
        env = kie_api_env(cloud, RETRY_BASE="1")
        with Stack(tmp_path, redis_server.url, DirArchive(tmp_path / "archive"), **env) as stack:
            base = stack.start_receiver()
            stack.env["PUBLIC_BASE_URL"] = base  # what the CLI aims callbacks at

            # submitted, the callback aimed at this receiver, tracked from birth
            parent = submit(stack, "generate", {"prompt": "a cat", "model": "veo3_fast"})
            sent = cloud.submitted[0]
            assert sent.task_id == parent
            assert sent.body == {"prompt": "a cat", "model": "veo3_fast", "callBackUrl": f"{base}/callbacks/kie"}
            assert sent.authorization == "Bearer kie-api-key"
            listed = json.loads(stack.cli("tracked", "--json").stdout)
            assert [t["task_id"] for t in listed["tracked"]] == [parent]

            # no callback ever comes: the sweep reads the status API and the worker archives it
            cloud.complete(sent, make_mp4(), send=False)
            swept = stack.cli("sweep", "--once")  # every tracked task, however recent
            assert swept.returncode == 0, swept.stdout + swept.stderr
            stack.run_burst()
            manifest = stack.manifest("kie", parent)
            assert manifest["status"] == "succeeded" and manifest["verification"] == "provider_api"
            assert "extends" not in manifest
            assert json.loads(stack.cli("tracked", "--json").stdout)["tracked"] == []

            # an extension of it, archived once its (signed) callback arrives, names its parent
            child = submit(stack, "extend", {"taskId": parent, "prompt": "and then it jumps"})
            assert cloud.submitted[1].body["taskId"] == parent
            response = cloud.complete(cloud.submitted[1], make_mp4(seed=1), hmac_key=KIE_HMAC)
            assert response is not None and response.status_code == 200, response.text if response else None
            stack.run_burst()
            child_manifest = stack.manifest("kie", child)
            assert child_manifest["extends"] == {
                "provider": "kie",
                "task_id": parent,
                "manifest_key": archive_keys.manifest_key("kie", parent),
            }
            entry = next(o for o in stack.outcomes() if o["task_id"] == child)
            assert json.loads(entry["extends"])["task_id"] == parent
            shown = stack.cli("show", "kie", child)
            assert "lineage (original first):" in shown.stdout and f"kie/{parent}" in shown.stdout, shown.stdout

            # a parent archived after its child still links, at read time
            late = submit(stack, "generate", {"prompt": "a dog"})
            grandchild = submit(stack, "extend", {"taskId": late, "prompt": "more dog"})
            cloud.complete(cloud.submitted[3], make_mp4(seed=2), hmac_key=KIE_HMAC)
            stack.run_burst()
            assert stack.manifest("kie", grandchild)["extends"] == {"provider": "kie", "task_id": late}
            cloud.complete(cloud.submitted[2], make_mp4(seed=3), hmac_key=KIE_HMAC)
            stack.run_burst()
            stack.manifest("kie", late)
            lineage = json.loads(stack.cli("show", "kie", grandchild, "--json").stdout)["lineage"]
            assert [(link["task_id"], link["manifest_key"]) for link in lineage] == [
                (late, archive_keys.manifest_key("kie", late)),
                (grandchild, archive_keys.manifest_key("kie", grandchild)),
            ]


def test_a_submitted_kie_task_gets_its_1080p_archived_beside_the_original(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """KIE_FETCH_1080P with real processes: a long-running worker (its RQ scheduler runs the polls), the signed
    callback of a task submitted through the archiver, get-1080p-video answering "not ready" twice."""
    with ProviderCloud(api_keys={"kie": "kie-api-key"}) as cloud:
        # the smallest pace KIE_1080P_POLL_INTERVAL admits (RQ schedules to the second)
        env = kie_api_env(cloud, KIE_FETCH_1080P="true", KIE_1080P_POLL_INTERVAL="1")
        with Stack(tmp_path, redis_server.url, DirArchive(tmp_path / "archive"), **env) as stack:
            stack.env["PUBLIC_BASE_URL"] = stack.start_receiver()
            stack.start_worker()
            task = submit(stack, "generate", {"prompt": "a heron", "model": "veo3_fast"})
            cloud.set_1080p(task, 0, ready_after=2)
            original_video = make_mp4(seed=4)
            response = cloud.complete(cloud.submitted[0], original_video, hmac_key=KIE_HMAC)
            assert response is not None and response.status_code == 200, response.text if response else None

            def with_1080p() -> dict[str, Any] | None:
                raw = stack.read(archive_keys.manifest_key("kie", task))
                manifest: dict[str, Any] | None = json.loads(raw) if raw else None
                done = manifest and manifest.get("renditions", {}).get("1080p", {}).get("status") == "archived"
                return manifest if done else None

            manifest = wait_for(with_1080p, 90, what=f"the 1080p in the manifest\n{stack.logs(4000)}")
            original, rendition = manifest["files"]
            assert original["sha256"] == hashlib.sha256(original_video).hexdigest() and "rendition" not in original
            assert rendition["rendition"] == "1080p" and rendition["key"] == archive_keys.rendition_key(
                "kie", task, 0, "1080p"
            )
            assert stack.read(rendition["key"]) == sample_mp4()  # the simulator's 1080p: its real sample MP4
            assert rendition["sha256"] == hashlib.sha256(sample_mp4()).hexdigest()
            assert manifest["renditions"]["1080p"]["polls"] == 3 == cloud.rendition_calls[(task, 0)]
            ends = [o["outcome"] for o in stack.outcomes() if o["task_id"] == task]
            assert ends == ["archived", "rendition_archived"], ends
            shown = stack.cli("show", "kie", task)
            assert shown.returncode == 0 and "1080p" in shown.stdout, shown.stdout
