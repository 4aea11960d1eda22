"""The provider simulators' body builders: each provider's callback bodies in each documented shape."""

from __future__ import annotations

import json
import re

import pytest

from veo_archiver.sim import apixo, evolink, useapi

JOBID = "j1731859234567v-u12345-email:jo***@gmail.com-bot:google-flow"
EVOLINK_ID = re.compile(r"^task-unified-\d{10}-[a-z0-9]{8}$")


def test_apixo_bodies() -> None:
    ok = apixo.success_body("task_abc", ["https://cdn.apixo.ai/output/abc.mp4"], create_time_ms=1704067200000)
    assert (ok["code"], ok["message"]) == (200, "success")
    data = ok["data"]
    assert isinstance(data["resultJson"], str)
    assert json.loads(data["resultJson"]) == {"resultUrls": ["https://cdn.apixo.ai/output/abc.mp4"]}
    assert (data["createTime"], data["completeTime"], data["costTime"]) == (
        1704067200000,
        1704067212500,
        12500,
    )
    for code in ("CONTENT_VIOLATION", "TASKID_ERROR", "NSFW", "PromptLengthExceeded", "SomethingNew"):
        failed = apixo.failure_body("task_abc", code)
        assert failed["code"] == 200 and failed["data"]["state"] == "failed"
        assert failed["data"]["failCode"] == code and isinstance(failed["data"]["failMsg"], str)
        assert "resultJson" not in failed["data"] and isinstance(failed["data"]["completeTime"], int)
    for state in ("pending", "processing"):
        assert apixo.pending_body("task_abc", state)["data"]["state"] == state
    with pytest.raises(ValueError):
        apixo.pending_body("task_abc", "success")


@pytest.mark.parametrize("schema", useapi.SCHEMAS)
@pytest.mark.parametrize("count", [1, 2, 4])
def test_useapi_completed_record(schema: str, count: int) -> None:
    urls = [f"https://flow-content.google/video/{i}?Expires=1" for i in range(count)]
    record = useapi.job_record(
        JOBID, "completed", urls=urls, schema=schema, reply_url="https://me/hook", reply_ref="order-42"
    )
    assert record["jobid"] == JOBID and record["request"]["replyUrl"] == "https://me/hook"
    assert record["request"]["replyRef"] == "order-42" and record["request"]["count"] == count
    assert useapi.video_urls(record) == urls
    if schema == "media":
        for item in record["response"]["media"]:
            assert isinstance(item["name"], str) and item["mediaGenerationId"].startswith("user:")
            assert "-video:" in item["mediaGenerationId"]
            status = item["mediaMetadata"]["mediaStatus"]["mediaGenerationStatus"]
            assert status == "MEDIA_GENERATION_STATUS_SUCCESSFUL"
    elif schema == "operations":
        assert [op["video"]["fifeUrl"] for op in record["response"]["operations"]] == urls
        assert record["response"]["operations"][0]["status"] == "VIDEO_GENERATION_STATUS_SUCCEEDED"
    else:
        ops = record["response"]["operations"]
        assert [op["operation"]["metadata"]["video"]["fifeUrl"] for op in ops] == urls


def test_useapi_statuses_and_reply_ref() -> None:
    for status in ("created", "started"):
        record = useapi.job_record(JOBID, status, count=3, reply_url="https://me/hook")
        assert record["status"] == status and "media" not in record["response"]
        assert record["request"]["count"] == 3 and "replyRef" not in record["request"]
    failed = useapi.job_record(JOBID, "failed", error="nope", code=500)
    assert (failed["error"], failed["code"]) == ("nope", 500)
    top = useapi.job_record(JOBID, "created", reply_ref="r", reply_ref_at="top")
    assert top["replyRef"] == "r" and "replyRef" not in top["request"]
    both = useapi.job_record(JOBID, "created", reply_ref="r", reply_ref_at="both")
    assert both["replyRef"] == both["request"]["replyRef"] == "r"
    jobid = useapi.make_jobid(ms=1731859234567)
    assert jobid == JOBID
    with pytest.raises(ValueError):
        useapi.job_record(JOBID, "completed", urls=[])
    with pytest.raises(ValueError):
        useapi.job_record(JOBID, "created", count=5)


def test_evolink_bodies() -> None:
    task_id = evolink.make_task_id(1756817821)
    assert EVOLINK_ID.match(task_id)
    done = evolink.success_body(task_id, ["https://cdn/x.mp4"])
    assert done["results"] == ["https://cdn/x.mp4"] and done["created"] == 1756817821
    assert done["task_info"] == {"can_cancel": False} and done["model"] == "veo3.1-fast"
    alt = evolink.success_body(task_id, ["https://cdn/x.mp4"], shape="output")
    assert alt["output"] == {"video_url": "https://cdn/x.mp4"} and "results" not in alt
    failed = evolink.failure_body(task_id, "quota_exceeded", "out of credits")
    assert failed["error"] == {"code": "quota_exceeded", "message": "out of credits"} and failed["progress"] == 0
    assert evolink.cancelled_body(task_id)["status"] == "cancelled"
    assert evolink.pending_body(task_id, "pending")["progress"] == 0
    with pytest.raises(ValueError):
        evolink.success_body(task_id, ["a", "b"], shape="output")
