"""The status-API client against the provider cloud simulator (real HTTP on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from veo_archiver.errors import DownloadTransient, PermanentError
from veo_archiver.event import TaskStatus, Verification
from veo_archiver.settings import ProviderSettings
from veo_archiver.sim.cloud import ProviderCloud
from workers.status_client import StatusClient

KEYS = {"kie": "k1", "apixo": "k2", "useapi": "k3", "evolink": "k4"}


@pytest.fixture
def cloud() -> Iterator[ProviderCloud]:
    with ProviderCloud(api_keys=KEYS) as c:
        yield c


def client_for(cloud: ProviderCloud, keys: dict[str, str] = KEYS) -> StatusClient:
    return StatusClient({p: ProviderSettings(name=p, api_key=keys.get(p), api_base=cloud.base_url) for p in KEYS})


@pytest.mark.parametrize("provider", sorted(KEYS))
def test_each_provider_states(cloud: ProviderCloud, provider: str) -> None:
    status = client_for(cloud)
    task_id = cloud.new_task_id(provider)
    url = cloud.add_video(f"/{provider}/v.mp4", b"\0\0\0\x08ftyp")
    cloud.set_task(provider, task_id, "in_progress")
    assert status.fetch(provider, task_id).status is TaskStatus.IN_PROGRESS
    cloud.set_task(provider, task_id, "succeeded", urls=[url])
    done = status.fetch(provider, task_id)
    assert (done.status, done.result_urls, done.verification) == (
        TaskStatus.SUCCEEDED,
        (url,),
        Verification.PROVIDER_API,
    )
    cloud.set_task(provider, task_id, "failed", failure_code="500", failure_message="boom")
    assert status.fetch(provider, task_id).status is TaskStatus.FAILED


@pytest.mark.parametrize("provider", sorted(KEYS))
def test_unknown_task_is_permanent(cloud: ProviderCloud, provider: str) -> None:
    with pytest.raises(PermanentError) as caught:
        client_for(cloud).fetch(provider, cloud.new_task_id(provider))
    assert caught.value.reason == "unknown_task"


def test_wrong_key_is_a_permanent_configuration_error(cloud: ProviderCloud) -> None:
    with pytest.raises(PermanentError) as caught:
        client_for(cloud, {**KEYS, "evolink": "wrong"}).fetch("evolink", cloud.new_task_id("evolink"))
    assert caught.value.reason == "status_api_auth"


def test_unreachable_api_is_transient() -> None:
    status = StatusClient({"kie": ProviderSettings(name="kie", api_key="k", api_base="http://127.0.0.1:9")})
    with pytest.raises(DownloadTransient):
        status.fetch("kie", "veo_task_x")


def test_apixo_extend_tasks_are_found_at_the_extend_endpoint(cloud: ProviderCloud) -> None:
    task_id = cloud.new_task_id("apixo")
    url = cloud.add_video("/apixo/ext.mp4", b"\0\0\0\x08ftyp")
    cloud.set_task("apixo", task_id, "succeeded", urls=[url], model="veo-3-1-extend")
    assert client_for(cloud).fetch("apixo", task_id).result_urls == (url,)
