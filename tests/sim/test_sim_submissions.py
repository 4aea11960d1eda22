"""The simulated providers' submission endpoints answer as the real ones do, so ``submit`` reads them."""

from __future__ import annotations

import httpx
import pytest

from veo_archiver.providers import submission
from veo_archiver.sim.cloud import DEFAULT_API_KEYS, ProviderCloud

BODIES = {
    ("kie", "generate"): {"prompt": "p"},
    ("kie", "extend"): {"taskId": "veo_task_1", "prompt": "p"},
    ("kie", "4k"): {"taskId": "veo_task_1", "index": 0},
    ("apixo", "generate"): {"input": {"prompt": "p"}},
    ("apixo", "extend"): {"input": {"taskId": "task_1", "prompt": "p"}},
    ("useapi", "generate"): {"prompt": "p"},
    ("useapi", "extend"): {"mediaGenerationId": "user:1-email:a-video:1", "prompt": "p"},
    ("evolink", "generate"): {"model": "veo3.1-fast", "prompt": "p"},
    ("evolink", "extend"): {"model": "veo3.1-fast-extend", "base_video_task_id": "task-unified-1-a", "prompt": "p"},
}


@pytest.mark.parametrize(("provider", "operation"), list(BODIES))
def test_submission_answers_in_the_providers_shape(provider: str, operation: str) -> None:
    with ProviderCloud() as cloud:
        request = submission.build(
            provider,
            operation,
            BODIES[(provider, operation)],
            callback_url="http://127.0.0.1:1/callbacks/x",
            base_url=cloud.base_url,
            api_key=DEFAULT_API_KEYS[provider],
        )
        response = httpx.post(request.url, json=request.body, headers=request.headers)
        task_id = submission.task_id_of(provider, response.status_code, response.json())
        assert task_id == cloud.submitted[0].task_id
        assert cloud.submitted[0].operation == operation
        assert cloud.submitted[0].callback_url == "http://127.0.0.1:1/callbacks/x"
        assert cloud.task(provider, task_id).status == "in_progress"
        refused = httpx.post(request.url, json=request.body, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and len(cloud.submitted) == 1
