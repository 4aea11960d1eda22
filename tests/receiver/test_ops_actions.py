"""The ops page's "sweep now": behind the session and its CSRF token, recorded, and run by a real worker with
the sweep's own code (the provider's status API answers from the simulated cloud), which archives the task."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.receiver.test_ops_page import Dom
from tests.servers import RedisServer
from tests.stacks import DirArchive, Stack
from veo_archiver import redis_keys
from veo_archiver.settings import Settings
from veo_archiver.sim.cloud import ProviderCloud
from veo_archiver.sim.media import make_mp4

pytestmark = pytest.mark.slow
ADMIN = "ops-actions-admin-token"


def test_sweep_now_polls_a_young_tracked_task_and_the_worker_archives_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with (
        ProviderCloud(api_keys={"kie": "kie-key"}) as cloud,
        Stack(
            tmp_path,
            redis_server.url,
            DirArchive(tmp_path / "archive"),
            KIE_API_KEY="kie-key",
            KIE_API_BASE=cloud.base_url,
            DOWNLOAD_ALLOW_HOSTS=f"127.0.0.1:{cloud.port}",
            ADMIN_TOKEN=ADMIN,
            KIE_ALLOW_UNSIGNED="true",
        ) as stack,
    ):
        task_id = cloud.new_task_id("kie")
        cloud.set_task("kie", task_id, "succeeded", urls=[cloud.add_video("/v/0.mp4", make_mp4(50_000, seed=3))])
        # registered just now: a scheduled sweep would leave it alone for RECONCILE_AFTER
        stack.rds.zadd(redis_keys.tracked_zset(), {redis_keys.tracked_member("kie", task_id): time.time()})
        settings = Settings.from_env(stack.env)
        with TestClient(create_app(settings)) as client:
            assert client.get(f"/ops?token={ADMIN}").status_code == 200  # the session (redirect followed)
            page = Dom(client.get(f"/ops/tasks/kie/{task_id}").text)
            (form,) = [fields for action, fields in page.forms if action == "/ops/actions/sweep"]
            assert form["provider"] == "kie" and form["task_id"] == task_id
            assert form["back"] == f"/ops/tasks/kie/{task_id}"
            refused = client.post("/ops/actions/sweep", data={**form, "csrf": ""}, follow_redirects=False)
            assert refused.status_code == 403
            done = client.post("/ops/actions/sweep", data=form, follow_redirects=False)
            assert done.status_code == 303 and done.headers["location"] == form["back"]
            untracked = {**form, "task_id": "veo_never_tracked"}
            assert client.post("/ops/actions/sweep", data=untracked, follow_redirects=False).status_code == 303

            stack.run_burst()  # runs the sweep job, then the archive job it enqueued
            assert stack.read(f"kie/{task_id}/manifest.json") is not None
            ops = Dom(client.get("/ops").text)
            task = Dom(client.get(f"/ops/tasks/kie/{task_id}").text)
    actions = ops.rows("actions")
    assert [(a[1], a[2]) for a in actions] == [("sweep", "kie/veo_never_tracked"), ("sweep", f"kie/{task_id}")]
    assert actions[0][3].startswith("not swept: the task is not tracked")
    assert actions[1][3].startswith("sweep requested (job sweep-kie-")
    (archived,) = task.rows("files")
    assert archived[2] == "50000" and len(archived[3]) == 64
