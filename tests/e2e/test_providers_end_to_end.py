"""Every provider end to end with real processes: redis-server, SeaweedFS S3, the receiver under uvicorn,
an RQ worker process, and the provider cloud simulator (callbacks in the documented shapes, real video
bytes, and each provider's status API, which the worker uses to confirm before downloading)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from receiver import tokens
from tests.procs import wait_for
from tests.servers import RedisServer
from tests.stacks import S3Archive, Stack
from veo_archiver import archive_keys, redis_keys
from veo_archiver.sim.cloud import ProviderCloud
from veo_archiver.sim.media import make_mp4

pytestmark = pytest.mark.slow
SIGNING = "e2e-callback-signing-key"
KIE_HMAC = "e2e-kie-hmac"
API_KEYS = {"kie": "kie-api-key", "apixo": "apixo-api-key", "useapi": "useapi-token", "evolink": "evolink-key"}
PREFIX = "archive"


@pytest.fixture(scope="module")
def cloud() -> Iterator[ProviderCloud]:
    with ProviderCloud(api_keys=API_KEYS) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def stack(tmp_path_factory, seaweed, cloud: ProviderCloud) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("providers-e2e")
    bucket = seaweed.create_bucket("providers-e2e")
    with RedisServer(tmp / "redis") as redis_server:
        env = {
            "CALLBACK_SIGNING_KEYS": SIGNING,
            "KIE_WEBHOOK_HMAC_KEYS": KIE_HMAC,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{cloud.port}",
            "KIE_API_KEY": API_KEYS["kie"],
            "APIXO_API_KEY": API_KEYS["apixo"],
            "USEAPI_API_TOKEN": API_KEYS["useapi"],
            "EVOLINK_API_KEY": API_KEYS["evolink"],
            **{f"{p.upper()}_API_BASE": cloud.base_url for p in API_KEYS},
            "RETRY_BASE": "1",
        }
        with Stack(tmp, redis_server.url, S3Archive(seaweed, bucket, PREFIX), **env) as stack:
            stack.start_receiver()
            stack.start_worker()
            yield stack


def callback_url(stack: Stack, provider: str) -> str:
    return tokens.callback_url(stack.base, provider, tokens.mint(provider, [SIGNING], now=time.time()))


def publish(cloud: ProviderCloud, provider: str, count: int, seed: int) -> tuple[str, list[bytes], list[str]]:
    task_id = cloud.new_task_id(provider)
    videos = [make_mp4(300_000 + 50_000 * n, seed=seed + n) for n in range(count)]
    urls = [cloud.add_video(f"/{provider}/{seed}/{n}.mp4", data) for n, data in enumerate(videos)]
    return task_id, videos, urls


def assert_archived(stack: Stack, manifest: dict[str, Any], videos: list[bytes]) -> None:
    assert manifest["status"] == "succeeded"
    assert len(manifest["files"]) == len(videos)
    for entry, data in zip(manifest["files"], videos, strict=True):
        stored = stack.read(entry["key"])
        assert stored is not None
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["size"] == len(data)


@pytest.mark.parametrize(
    ("provider", "variant", "count"),
    [
        ("kie", "json", 1),
        ("apixo", None, 1),
        ("useapi", "media", 4),
        ("useapi", "operations", 2),
        ("evolink", "results", 1),
        ("evolink", "output", 1),
    ],
)
def test_callback_becomes_a_confirmed_archived_video(
    stack: Stack, cloud: ProviderCloud, provider: str, variant: str | None, count: int
) -> None:
    seed = hash((provider, variant)) % 10_000
    task_id, videos, urls = publish(cloud, provider, count, seed)
    cloud.set_task(provider, task_id, "succeeded", urls=urls)
    calls_before = cloud.status_calls[provider]
    target = callback_url(stack, provider) if provider != "kie" else stack.base + "/callbacks/kie"
    response = cloud.send_callback(
        provider, task_id, target, variant=variant, hmac_key=KIE_HMAC if provider == "kie" else None
    )
    assert response.status_code == 200, response.text
    manifest = stack.manifest(provider, task_id)
    assert_archived(stack, manifest, videos)
    assert manifest["task_id"] == task_id  # the original id, even when the key is encoded
    assert manifest["confirmed"]["via"] == "provider_api"
    assert cloud.status_calls[provider] > calls_before
    assert [f["source_url"] for f in manifest["files"]] == urls


def test_tampered_kie_body_archives_what_the_provider_confirms(stack: Stack, cloud: ProviderCloud) -> None:
    task_id, videos, urls = publish(cloud, "kie", 1, 501)
    evil = cloud.add_video("/evil/swapped.mp4", make_mp4(200_000, seed=666))
    cloud.set_task("kie", task_id, "succeeded", urls=urls)
    body = cloud.callback_body("kie", task_id)
    body["data"]["info"]["resultUrls"] = [evil]  # kie signs the task id and time, not the body
    from veo_archiver.sim import kie as kie_sim

    response = kie_sim.send(stack.base + "/callbacks/kie", body, kie_sim.signed_headers(KIE_HMAC, task_id))
    assert response.status_code == 200
    manifest = stack.manifest("kie", task_id)
    assert_archived(stack, manifest, videos)
    assert manifest["claimed"]["result_urls"] == [evil]
    assert cloud.hits["/evil/swapped.mp4"] == 0


def test_forged_callback_for_an_unknown_task_is_dead_lettered(stack: Stack, cloud: ProviderCloud) -> None:
    evil = cloud.add_video("/evil/forged.mp4", make_mp4(200_000, seed=667))
    from veo_archiver.sim import evolink as evolink_sim

    body = evolink_sim.success_body("task-unified-1700000000-forged00", [evil])
    response = evolink_sim.send(callback_url(stack, "evolink"), body)  # a leaked callback URL
    assert response.status_code == 200
    job_id = redis_keys.job_id("evolink", "task-unified-1700000000-forged00", "succeeded")
    queue = Queue("veo-archiver", connection=stack.rds, serializer=JSONSerializer)
    registry = FailedJobRegistry(queue=queue)
    wait_for(lambda: job_id in registry.get_job_ids(), 60, what="dead letter")
    job = Job.fetch(job_id, connection=stack.rds, serializer=JSONSerializer)
    assert job.meta["dead_letter"]["reason"] == "unknown_task"
    assert stack.read(archive_keys.manifest_key("evolink", "task-unified-1700000000-forged00")) is None
    assert cloud.hits["/evil/forged.mp4"] == 0


def test_link_expiring_at_download_is_refreshed_through_the_status_api(stack: Stack, cloud: ProviderCloud) -> None:
    task_id, videos, urls = publish(cloud, "apixo", 1, 777)
    cloud.set_task("apixo", task_id, "succeeded", urls=urls)
    old_path = urlsplit(urls[0]).path

    def expire_now(handler, hosted):  # type: ignore[no-untyped-def]
        # the link dies between confirmation and download: the provider now holds a fresh one
        cloud.refresh_url("apixo", task_id)
        return cloud.behaviours[old_path](handler, hosted)

    cloud.behaviours[old_path] = expire_now
    from veo_archiver.sim import apixo as apixo_sim

    calls_before = cloud.status_calls["apixo"]
    response = apixo_sim.send(callback_url(stack, "apixo"), cloud.callback_body("apixo", task_id))
    assert response.status_code == 200
    manifest = stack.manifest("apixo", task_id)
    assert_archived(stack, manifest, videos)
    assert cloud.hits[old_path] == 1  # one 403, then the fresh URL
    assert manifest["files"][0]["source_url"] != urls[0]
    assert manifest["files"][0]["source_url"] == cloud.task("apixo", task_id).urls[0]
    assert cloud.status_calls["apixo"] - calls_before == 2  # confirmation, then the refresh


def test_in_progress_at_confirmation_retries_until_done(stack: Stack, cloud: ProviderCloud) -> None:
    task_id, videos, urls = publish(cloud, "evolink", 1, 888)
    cloud.set_task("evolink", task_id, "succeeded", urls=urls)
    body = cloud.callback_body("evolink", task_id)
    cloud.set_task("evolink", task_id, "in_progress")  # the API lags behind the callback
    from veo_archiver.sim import evolink as evolink_sim

    assert evolink_sim.send(callback_url(stack, "evolink"), body).status_code == 200
    job_id = redis_keys.job_id("evolink", task_id, "succeeded")
    wait_for(
        lambda: Job.fetch(job_id, connection=stack.rds, serializer=JSONSerializer).meta.get("attempts"),
        30,
        what="a scheduled retry",
    )
    cloud.set_task("evolink", task_id, "succeeded", urls=urls)
    manifest = stack.manifest("evolink", task_id, timeout=90)
    assert_archived(stack, manifest, videos)


def test_a_useapi_token_in_reply_ref_is_stored_nowhere(stack: Stack, cloud: ProviderCloud) -> None:
    """The review found a replyRef token in clear in manifest.json (extra.reply_ref), callback-succeeded.json
    and veo:deliveries:useapi:*: anyone who can read the archive could forge useapi.net callbacks. The callback
    is verified with it, then every stored copy has the token's MAC redacted."""
    task_id, videos, urls = publish(cloud, "useapi", 1, 4242)
    token = tokens.mint("useapi", [SIGNING], now=time.time())
    mac = token.rsplit(".", 1)[1]
    cloud.set_task("useapi", task_id, "succeeded", urls=urls, reply_ref=f"token={token}", reply_ref_at="both")
    response = cloud.send_callback("useapi", task_id, stack.base + "/callbacks/useapi")  # no query token
    assert response.status_code == 200, response.text
    manifest = stack.manifest("useapi", task_id)
    assert_archived(stack, manifest, videos)
    assert manifest["extra"]["reply_ref"].endswith(".***")  # kept readable: provider and expiry, not the MAC

    # nowhere in the archive
    for key in stack.object_keys():
        assert mac.encode() not in (stack.read(key) or b""), key
    # nowhere in Redis: every value of every key, whatever its type
    for key in stack.rds.scan_iter(count=1000):
        kind = stack.rds.type(key).decode()
        if kind == "string":
            values = [stack.rds.get(key) or b""]
        elif kind == "list":
            values = stack.rds.lrange(key, 0, -1)
        elif kind == "hash":
            values = list(stack.rds.hgetall(key).values())
        elif kind == "set":
            values = list(stack.rds.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in stack.rds.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [v for _, entry in stack.rds.xrange(key) for v in entry.values()]
        else:
            values = []
        assert not any(mac.encode() in value for value in values), key
