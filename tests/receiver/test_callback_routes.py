"""``receiver.callbacks``: the callback POSTs go straight to their endpoint; everything else still answers as
the Starlette routes did (405, 404, redirects), and a bug of ours is a JSON 500, never a traceback."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from receiver import callbacks
from receiver.app import create_app
from veo_archiver.settings import Settings
from veo_archiver.sim import kie as kie_sim

KEY = "test-hmac-key"
ADMIN = "callback-routes-admin-token-41d2"


def make_client(redis_server) -> TestClient:  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_server.url, kie_hmac_keys=(KEY,), admin_token=ADMIN)
    return TestClient(create_app(settings))


def test_the_fast_path_and_the_starlette_routes_answer_alike(redis_server) -> None:  # type: ignore[no-untyped-def]
    with make_client(redis_server) as client:
        body = json.dumps(kie_sim.success_body("veo_route", ["https://tempfile.aiquickdraw.com/v/a.mp4"]))
        ok = client.post("/callbacks/kie", content=body, headers=kie_sim.signed_headers(KEY, "veo_route"))
        assert ok.status_code == 200 and ok.headers["x-archiver-outcome"] == "accepted"
        assert ok.json() == {"code": 200, "msg": "success"} and ok.headers["content-type"] == "application/json"
        wrong_method = client.get("/callbacks/kie")
        assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
        unknown = client.post("/callbacks/nope", content=b"{}")
        assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown_provider"
        unknown_source = client.post("/callbacks/standard/nope", content=b"{}")
        assert unknown_source.status_code == 404 and unknown_source.json()["reason"] == "unknown_source"
        deeper = client.post("/callbacks/kie/extra", content=b"{}")
        assert deeper.status_code == 404
        unsigned = client.post("/callbacks/kie", content=body)
        assert unsigned.status_code == 401 and unsigned.json()["reason"] == "signature_missing"


def test_a_bug_in_the_callback_path_is_a_json_500(redis_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(callbacks, "verify_provider", broken)
    with make_client(redis_server) as client:
        body = json.dumps(kie_sim.success_body("veo_bug", ["https://tempfile.aiquickdraw.com/v/a.mp4"]))
        answer = client.post("/callbacks/kie", content=body, headers=kie_sim.signed_headers(KEY, "veo_bug"))
        assert answer.status_code == 500
        assert answer.json()["reason"] == "internal_error" and "KeyError" in answer.json()["msg"]
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
        assert 'veo_archiver_callbacks_errors_total{provider="kie",reason="internal_error"} 1.0' in metrics
