"""ProviderCloud: its status APIs, file serving and callbacks, checked over real loopback HTTP with httpx.
(The body builders alone: tests/sim/test_bodies.py.)"""

from __future__ import annotations

import inspect
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from veo_archiver.sim import apixo, evolink, useapi
from veo_archiver.sim.cloud import ProviderCloud
from veo_archiver.sim.media import make_mp4

KEYS = {"kie": "kie-key", "apixo": "apixo-key", "useapi": "useapi-key", "evolink": "evolink-key"}
JOBID = "j1731859234567v-u12345-email:jo***@gmail.com-bot:google-flow"
EVOLINK_ID = re.compile(r"^task-unified-\d{10}-[a-z0-9]{8}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
VIDEO = make_mp4(64 * 1024, seed=7)


@pytest.fixture
def cloud() -> Iterator[ProviderCloud]:
    with ProviderCloud(api_keys=KEYS) as c:
        yield c


def status_path(provider: str, task_id: str) -> str:
    return {
        "kie": f"/api/v1/veo/record-info?taskId={quote(task_id)}",
        "apixo": f"/api/v1/statusTask/veo-3-1?taskId={quote(task_id)}",
        "useapi": useapi.jobid_path(task_id),
        "evolink": f"/v1/tasks/{task_id}",
    }[provider]


def get_status(cloud: ProviderCloud, provider: str, task_id: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or KEYS[provider]}"}
    return httpx.get(cloud.base_url + status_path(provider, task_id), headers=headers, timeout=5)


def urls_in(provider: str, body: dict[str, Any]) -> list[str]:
    """Each provider's documented place for result URLs."""
    if provider == "kie":
        return list(body["data"]["response"]["resultUrls"])
    if provider == "apixo":
        return apixo.result_urls(body)
    if provider == "useapi":
        return useapi.video_urls(body)
    return list(body["results"])


# -- status APIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["kie", "apixo", "useapi", "evolink"])
def test_status_api_succeeded(cloud: ProviderCloud, provider: str) -> None:
    urls = [cloud.add_video(f"/v/{provider}/{i}.mp4", VIDEO) for i in range(2)]
    task_id = JOBID if provider == "useapi" else cloud.new_task_id(provider)
    cloud.set_task(provider, task_id, "succeeded", urls=urls)
    response = get_status(cloud, provider, task_id)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert urls_in(provider, body) == urls
    if provider == "kie":
        assert body["code"] == 200 and body["data"]["successFlag"] == 1 and body["data"]["errorCode"] is None
        assert body["data"]["taskId"] == task_id and isinstance(body["data"]["paramJson"], str)
        assert body["data"]["response"]["fullResultUrls"] == urls
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["data"]["completeTime"])
    elif provider == "apixo":
        data = body["data"]
        assert (body["code"], body["message"], data["state"], data["taskId"]) == (
            200,
            "success",
            "success",
            task_id,
        )
        assert isinstance(data["resultJson"], str)
        assert all(isinstance(data[k], int) for k in ("costTime", "createTime", "completeTime"))
        assert data["completeTime"] - data["createTime"] == data["costTime"] and data["createTime"] > 10**12
    elif provider == "useapi":
        assert body["jobid"] == task_id and body["status"] == "completed" and body["type"] == "video"
        assert ISO_MS.match(body["created"]) and ISO_MS.match(body["updated"])
        assert body["request"]["count"] == 2
    else:
        assert EVOLINK_ID.match(body["id"]) and body["id"] == task_id
        assert (body["object"], body["status"], body["progress"]) == (
            "video.generation.task",
            "completed",
            100,
        )
        assert body["created"] == int(task_id.split("-")[2]) and "error" not in body
    assert cloud.status_calls[provider] == 1


def test_status_api_failed(cloud: ProviderCloud) -> None:
    ids = {p: cloud.new_task_id(p) for p in ("kie", "apixo", "useapi", "evolink")}
    cloud.set_task("kie", ids["kie"], "failed", failure_code="501", failure_message="Failed - boom")
    cloud.set_task("apixo", ids["apixo"], "failed", failure_code="SensitiveContentDetected")
    cloud.set_task("useapi", ids["useapi"], "failed", failure_code="400", failure_message="unsafe")
    cloud.set_task("evolink", ids["evolink"], "failed", failure_code="content_policy", failure_message="no")

    kie = get_status(cloud, "kie", ids["kie"]).json()["data"]
    assert (kie["successFlag"], kie["errorCode"], kie["errorMessage"], kie["response"]) == (
        2,
        501,
        "Failed - boom",
        None,
    )
    data = get_status(cloud, "apixo", ids["apixo"]).json()["data"]
    assert data["state"] == "failed" and data["failCode"] == "SensitiveContentDetected"
    assert data["failMsg"] == apixo.FAIL_CODES_PROVIDER["SensitiveContentDetected"] and "resultJson" not in data
    job = get_status(cloud, "useapi", ids["useapi"]).json()
    assert (job["status"], job["error"], job["code"]) == ("failed", "unsafe", 400) and "media" not in job["response"]
    task = get_status(cloud, "evolink", ids["evolink"]).json()
    assert task["status"] == "failed" and task["error"] == {"code": "content_policy", "message": "no"}
    assert "results" not in task


def test_status_api_in_progress_and_native_statuses(cloud: ProviderCloud) -> None:
    ids = {p: cloud.new_task_id(p) for p in ("kie", "apixo", "useapi", "evolink")}
    for provider, task_id in ids.items():
        cloud.set_task(provider, task_id, "in_progress")
    kie = get_status(cloud, "kie", ids["kie"]).json()["data"]
    assert kie["successFlag"] == 0 and kie["response"] is None and kie["completeTime"] is None
    data = get_status(cloud, "apixo", ids["apixo"]).json()["data"]
    assert data["state"] == "processing" and set(data) == {"taskId", "state", "createTime"}
    assert get_status(cloud, "useapi", ids["useapi"]).json()["status"] == "started"
    task = get_status(cloud, "evolink", ids["evolink"]).json()
    assert task["status"] == "processing" and 0 < task["progress"] < 100 and task["task_info"]["can_cancel"] is True

    cloud.set_task("kie", ids["kie"], "failed", native_status=3)
    cloud.set_task("apixo", ids["apixo"], "in_progress", native_status="pending")
    cloud.set_task("useapi", ids["useapi"], "in_progress", native_status="created")
    cloud.set_task("evolink", ids["evolink"], "failed", native_status="cancelled")
    assert get_status(cloud, "kie", ids["kie"]).json()["data"]["successFlag"] == 3
    assert get_status(cloud, "apixo", ids["apixo"]).json()["data"]["state"] == "pending"
    created = get_status(cloud, "useapi", ids["useapi"]).json()
    assert created["status"] == "created" and "updated" not in created
    cancelled = get_status(cloud, "evolink", ids["evolink"]).json()
    assert cancelled["status"] == "cancelled" and "error" not in cancelled
    # each APIXO model has its own status route: a veo-3-1 task is unknown to the extend route
    path = f"/api/v1/statusTask/veo-3-1-extend?taskId={ids['apixo']}"
    extend = httpx.get(cloud.base_url + path, headers={"Authorization": f"Bearer {KEYS['apixo']}"})
    assert extend.status_code == 404


@pytest.mark.parametrize("provider", ["kie", "apixo", "useapi", "evolink"])
def test_status_api_refuses_bad_auth(cloud: ProviderCloud, provider: str) -> None:
    task_id = cloud.new_task_id(provider)
    cloud.set_task(provider, task_id, "in_progress")
    url = cloud.base_url + status_path(provider, task_id)
    other = "apixo" if provider != "apixo" else "kie"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {KEYS[other]}"},
        {"Authorization": KEYS[provider]},
    ):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert isinstance(body, dict) and ("error" in body or body.get("code") == 401)
    assert cloud.status_calls[provider] == 4
    assert get_status(cloud, provider, task_id).status_code == 200
    assert cloud.status_calls[provider] == 5


def test_provider_without_configured_key_refuses_everything() -> None:
    with ProviderCloud(api_keys={"kie": "only-kie"}) as c:
        c.set_task("evolink", "task-unified-1756817821-4x3rx6ny", "in_progress")
        response = httpx.get(
            c.base_url + "/v1/tasks/task-unified-1756817821-4x3rx6ny",
            headers={"Authorization": "Bearer sim-evolink-key"},
        )
        assert response.status_code == 401


def test_status_api_unknown_task(cloud: ProviderCloud) -> None:
    kie = get_status(cloud, "kie", "veo_task_missing")
    assert kie.status_code == 200 and kie.json()["code"] == 422 and kie.json()["msg"] == "record is null"
    missing_param = httpx.get(cloud.base_url + "/api/v1/veo/record-info", headers={"Authorization": "Bearer kie-key"})
    assert missing_param.json()["code"] == 422
    ap = get_status(cloud, "apixo", "task_missing")
    assert ap.status_code == 404 and ap.json()["code"] == 404 and ap.json()["data"] is None
    job = get_status(cloud, "useapi", JOBID)
    assert job.status_code == 404 and isinstance(job.json()["error"], str)
    evo = get_status(cloud, "evolink", "task-unified-1756817821-zzzzzzzz")
    assert evo.status_code == 404
    assert set(evo.json()["error"]) == {"code", "message"} and isinstance(evo.json()["error"]["code"], str)
    assert sum(cloud.status_calls.values()) == 5


def test_useapi_jobid_round_trips_through_url_encoding(cloud: ProviderCloud) -> None:
    path = useapi.jobid_path(JOBID)
    assert ":" not in path.rsplit("/", 1)[1] and "@" not in path and "*" not in path
    assert useapi.jobid_from_path(path) == JOBID
    cloud.set_task("useapi", JOBID, "in_progress")
    assert get_status(cloud, "useapi", JOBID).json()["jobid"] == JOBID
    # a client that leaves ':' and '*' alone (quote's default safe set) reaches the same job
    loose = cloud.base_url + "/v1/google-flow/jobs/" + quote(JOBID, safe=":*")
    assert httpx.get(loose, headers={"Authorization": "Bearer useapi-key"}).json()["jobid"] == JOBID


def test_set_task_validation(cloud: ProviderCloud) -> None:
    with pytest.raises(ValueError):
        cloud.set_task("kie", "t", "done")
    with pytest.raises(ValueError):
        cloud.set_task("evolink", "t", "succeeded", native_status="cancelled")
    with pytest.raises(TypeError):
        cloud.set_task("apixo", "t", "succeeded", schema="media")
    with pytest.raises(ValueError):
        cloud.set_task("kie", "t", "failed", failure_code="CONTENT_VIOLATION")
    with pytest.raises(ValueError):
        cloud.set_task("useapi", JOBID, "succeeded", urls=[f"http://x/{i}.mp4" for i in range(5)])
    assert not cloud.tasks


# -- files ---------------------------------------------------------------------------------------------


def test_files_range_and_refresh(cloud: ProviderCloud) -> None:
    url = cloud.add_video("/cdn/a.mp4", VIDEO)
    full = httpx.get(url)
    assert full.status_code == 200 and full.content == VIDEO and full.headers["accept-ranges"] == "bytes"
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == VIDEO[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(VIDEO)}"
    tail = httpx.get(url, headers={"Range": "bytes=1000-", "If-Range": full.headers["etag"]})
    assert tail.status_code == 206 and tail.content == VIDEO[1000:]

    cloud.set_task("kie", "veo_task_abc", "succeeded", urls=[url])
    fresh = cloud.refresh_url("kie", "veo_task_abc")
    expired = httpx.get(url)
    assert expired.status_code == 403 and b"Expired" in expired.content
    assert fresh != [url] and httpx.get(fresh[0]).content == VIDEO
    assert get_status(cloud, "kie", "veo_task_abc").json()["data"]["response"]["resultUrls"] == fresh
    assert cloud.callback_body("kie", "veo_task_abc")["data"]["info"]["resultUrls"] == fresh
    again = cloud.refresh_url("kie", "veo_task_abc")
    assert httpx.get(fresh[0]).status_code == 403 and httpx.get(again[0]).content == VIDEO
    assert again[0].count("/signed/") == 1
    assert cloud.status_calls["kie"] == 1  # file requests are not status calls


def test_cloud_callback_bodies(cloud: ProviderCloud) -> None:
    url = cloud.add_video("/v/x.mp4", VIDEO)
    cloud.set_task("kie", "veo_task_1", "succeeded", urls=[url], resolution="720p")
    assert cloud.callback_body("kie", "veo_task_1", variant="json")["data"]["info"]["resultUrls"] == json.dumps([url])
    assert cloud.callback_body("kie", "veo_task_1", variant="bare")["data"]["info"]["resolution"] == "720p"
    cloud.set_task("kie", "veo_task_2", "failed", failure_code="422")
    body = cloud.callback_body("kie", "veo_task_2")
    assert body["code"] == 422 and body["data"]["taskId"] == "veo_task_2"
    cloud.set_task("kie", "veo_task_3", "in_progress")
    with pytest.raises(ValueError):
        cloud.callback_body("kie", "veo_task_3")

    cloud.set_task("apixo", "task_a", "succeeded", urls=[url])
    assert cloud.callback_body("apixo", "task_a") == cloud.status_body("apixo", "task_a")
    cloud.set_task("useapi", JOBID, "succeeded", urls=[url], reply_ref="ref-1", reply_url="https://me/hook")
    job = cloud.callback_body("useapi", JOBID, variant="operations")
    assert job["request"]["replyRef"] == "ref-1" and job["response"]["operations"][0]["video"]["fifeUrl"] == url
    assert cloud.callback_body("useapi", JOBID) == cloud.status_body("useapi", JOBID)  # "matches GET /jobs"
    evo = evolink.make_task_id()
    cloud.set_task("evolink", evo, "succeeded", urls=[url])
    assert cloud.callback_body("evolink", evo, variant="output")["output"]["video_url"] == url
    assert cloud.callback_body("evolink", evo) == cloud.status_body("evolink", evo)


# -- sending -------------------------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                sink.received.append((dict(self.headers), json.loads(raw)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_send_posts_json_like_each_provider(cloud: ProviderCloud) -> None:
    sink = _Sink()
    try:
        url = cloud.add_video("/v/s.mp4", VIDEO)
        for provider in ("kie", "apixo", "useapi", "evolink"):
            task_id = cloud.new_task_id(provider)
            cloud.set_task(provider, task_id, "succeeded", urls=[url])
            assert cloud.send_callback(provider, task_id, sink.url, hmac_key="secret").status_code == 200
        headers = [{k.lower(): v for k, v in h.items()} for h, _ in sink.received]
        assert all(h["content-type"] == "application/json" for h in headers)
        assert "x-webhook-signature" in headers[0] and all("x-webhook-signature" not in h for h in headers[1:])
        assert sink.received[2][1]["request"]["replyUrl"] == sink.url
        assert evolink.send(sink.url, evolink.cancelled_body(evolink.make_task_id())).status_code == 200
        assert sink.received[-1][1]["status"] == "cancelled"
    finally:
        sink.server.shutdown()
        sink.server.server_close()
    timeouts = {m.__name__: inspect.signature(m.send).parameters["timeout"].default for m in (apixo, useapi, evolink)}
    assert timeouts == {
        "veo_archiver.sim.apixo": 30.0,
        "veo_archiver.sim.useapi": 30.0,
        "veo_archiver.sim.evolink": 10.0,
    }
