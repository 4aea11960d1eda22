"""Logs: JSON lines carrying provider / task id / job id, and never a secret.

Driven with real requests at DEBUG level against the receiver under uvicorn and a real worker process:
signed callbacks, callback-URL tokens, bearer tokens, the admin token in a query string and a download URL
signed like a CDN's. The captured output must contain none of them.
"""

from __future__ import annotations

import io
import json
import logging
import time

import httpx
import pytest
import redis

from receiver import tokens
from tests.procs import start_receiver, start_worker, wait_for
from veo_archiver import redis_keys
from veo_archiver.errors import ConfigError
from veo_archiver.logs import JsonFormatter, ScrubbingFormatter, log_context, scrub, wants_json
from veo_archiver.sim import apixo as apixo_sim
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4

KEY = "kie-hmac-secret-Zq81"
SIGNING = "callback-signing-secret-Wm27"
ADMIN = "admin-secret-Pk55x"
CDN_SECRETS = ("cdnsig0123abcdef", "AKIAEXAMPLE77", "cdntokenXY9")


def test_no_secret_in_receiver_or_worker_logs_and_ids_on_every_job_line(redis_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    video = make_mp4(200_000, seed=5)
    with FileHost() as files:
        url = files.add("/cdn/v.mp4", video) + (
            f"?X-Amz-Signature={CDN_SECRETS[0]}&X-Amz-Credential={CDN_SECRETS[1]}&token={CDN_SECRETS[2]}"
        )
        env = {
            "REDIS_URL": redis_server.url,
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "CALLBACK_SIGNING_KEYS": SIGNING,
            "ADMIN_TOKEN": ADMIN,
            "ARCHIVE_URL": str(tmp_path / "archive"),
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "json",
        }
        receiver, base = start_receiver(env, tmp_path)
        worker = start_worker(env, tmp_path)
        try:
            signed = kie_sim.signed_headers(KEY, "veo_logged")
            forged_sig = kie_sim.signed_headers("not-the-key", "veo_forged")
            token = tokens.mint("apixo", [SIGNING], now=time.time(), ttl_s=3600)
            forged_token = tokens.mint("apixo", ["attacker-key"], now=time.time(), ttl_s=3600)
            with httpx.Client(base_url=base, timeout=15) as client:
                body = json.dumps(kie_sim.success_body("veo_logged", [url])).encode()
                headers = {**signed, "Authorization": "Bearer hunter2-bearer-secret"}
                assert client.post("/callbacks/kie", content=body, headers=headers).status_code == 200
                forged_body = json.dumps(kie_sim.success_body("veo_forged", [url])).encode()
                assert client.post("/callbacks/kie", content=forged_body, headers=forged_sig).status_code == 401
                apixo = json.dumps(apixo_sim.success_body("apx_logged", [url])).encode()
                assert client.post(f"/callbacks/apixo?token={token}", content=apixo).status_code == 200
                assert client.post(f"/callbacks/apixo?token={forged_token}", content=apixo).status_code == 401
                metrics = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
                assert metrics.status_code == 200
                assert client.get(f"/ops?token={ADMIN}").status_code == 303
                assert client.get("/ops?token=admin-guess-Qr3").status_code == 401
            rds = redis.Redis.from_url(redis_server.url)
            wait_for(
                lambda: rds.xlen(redis_keys.outcomes_stream()) >= 2,
                60,
                what=f"two outcomes\n{worker.log()[-3000:]}",
            )
            rds.close()
        finally:
            worker.stop()
            receiver.stop()

    output = receiver.log() + worker.log()
    secrets = [
        KEY,
        SIGNING,
        ADMIN,
        signed["X-Webhook-Signature"],
        forged_sig["X-Webhook-Signature"],
        token,
        token.rsplit(".", 1)[1],
        forged_token,
        "hunter2-bearer-secret",
        "admin-guess-Qr3",
        *CDN_SECRETS,
    ]
    for secret in secrets:
        assert secret not in output, f"a secret reached the logs: {secret[:6]}…"

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is one JSON object
    assert not [line for line in lines if "color_message" in line]
    accepted = [line for line in lines if line["msg"] == "callback accepted"]
    assert {(line["provider"], line["task_id"]) for line in accepted} == {
        ("kie", "veo_logged"),
        ("apixo", "apx_logged"),
    }
    assert all(line["job_id"].startswith("archive-") for line in accepted)
    refused = [line for line in lines if line["msg"] == "callback refused"]
    assert {line["reason"] for line in refused} == {"signature_mismatch", "token_mismatch"}
    job_ids = {line["job_id"] for line in accepted}
    archived = [line for line in lines if line["msg"] == "video archived"]
    assert {(line["provider"], line["task_id"], line["job_id"]) for line in archived} == {
        (line["provider"], line["task_id"], line["job_id"]) for line in accepted
    }
    # everything logged while a job ran (RQ's own lines, httpx's, ours) names the job
    downloads = [line for line in lines if line["logger"] == "httpx" and "HTTP Request" in line["msg"]]
    assert downloads and all(line.get("job_id") in job_ids and line.get("task_id") for line in downloads)
    assert any("***" in line["msg"] for line in downloads)  # the signed URL was logged, scrubbed
    rq_ok = [line for line in lines if line["logger"] == "rq.worker" and "Job OK" in line["msg"]]
    assert len(rq_ok) == 2 and {line["job_id"] for line in rq_ok} == job_ids


def test_formatter_scrubs_messages_fields_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs.scrub")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        with log_context(provider="kie", task_id="t1", job_id="j1"):
            logger.warning(
                "GET https://cdn/x.mp4?sig=S3CR3T&a=1 Authorization: Bearer B34R3R",
                extra={
                    "api_key": "K3Y",
                    "detail": "token=T0K3N",
                    "color_message": "x",
                    "key": "kie/t1/0.mp4",
                },
            )
            try:
                raise ValueError("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw in v1.apixo.0." + "A" * 43)
            except ValueError:
                logger.exception("failed")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    text = stream.getvalue()
    for secret in ("S3CR3T", "B34R3R", "K3Y", "T0K3N", "MfKQ9r8", "AAAAAAAAAAAAAAAAAAAA"):
        assert secret not in text
    assert first["msg"] == "GET https://cdn/x.mp4?sig=***&a=1 Authorization: Bearer ***"
    assert (first["provider"], first["task_id"], first["job_id"]) == ("kie", "t1", "j1")
    assert first["api_key"] == "***" and first["detail"] == "token=***" and first["key"] == "kie/t1/0.mp4"
    assert "color_message" not in first
    assert second["job_id"] == "j1" and "ValueError" in second["exc"]
    assert "job_id" not in third
    assert scrub("reason=token_missing task_id=veo_1") == "reason=token_missing task_id=veo_1"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_format_decides_when_set_else_text_only_on_a_terminal() -> None:
    assert wants_json("json", _Terminal()) and not wants_json("text", io.StringIO())
    assert not wants_json(None, _Terminal()) and not wants_json("", _Terminal())
    assert wants_json(None, io.StringIO())  # a pipe, a file, a log collector: JSON lines
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        wants_json("yaml", io.StringIO())


def test_text_lines_carry_the_fields_and_are_scrubbed_too() -> None:
    record = logging.LogRecord("tests.logs.text", logging.INFO, __file__, 1, "GET /x?token=T0K3N", (), None)
    record.__dict__.update({"api_key": "K3Y", "host": "127.0.0.1", "color_message": "x"})
    with log_context(provider="kie", task_id="t1"):
        line = ScrubbingFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "INFO tests.logs.text: GET /x?token=*** provider=kie task_id=t1 api_key=*** host=127.0.0.1"
