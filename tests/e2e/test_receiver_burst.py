"""A burst wider than Redis's connection pool: every callback waits for a connection, none is refused."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.procs import start_receiver
from veo_archiver import redis_keys
from veo_archiver.sim import kie as kie_sim

pytestmark = pytest.mark.slow
KEY = "burst-key"


def test_two_hundred_simultaneous_distinct_callbacks_are_all_acknowledged(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # every callback comes from 127.0.0.1 here: one client may take all 200 slots (MAX_REQUESTS_PER_CLIENT)
    env = {"REDIS_URL": redis_server.url, "KIE_WEBHOOK_HMAC_KEYS": KEY, "MAX_REQUESTS_PER_CLIENT": "200"}
    receiver, base = start_receiver(env, tmp_path)

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def one(n: int) -> int:
                task_id = f"veo_burst_{n}"
                body = json.dumps(kie_sim.success_body(task_id, [f"https://cdn.example.com/{n}.mp4"]))
                response = await client.post(
                    base + "/callbacks/kie", content=body, headers=kie_sim.signed_headers(KEY, task_id)
                )
                return response.status_code

            return await asyncio.gather(*(one(n) for n in range(200)))

    try:
        statuses = asyncio.run(burst())
    finally:
        receiver.stop()
    assert statuses.count(200) == 200, {s: statuses.count(s) for s in set(statuses)}
    assert redis_server.client().llen(redis_keys.rq_queue_key("veo-archiver")) == 200
