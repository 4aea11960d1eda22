"""Property-based fuzzing of the receiver (hypothesis, 10,000 examples in all) against a real redis-server.

Requests go through the whole Starlette app (starlette TestClient, lifespan included) to every endpoint:
random bytes, random JSON, every provider's callback shape with random values and mutations, and
well-formed callbacks, with random headers and query strings and proofs that are absent, garbled, made with
the wrong key, stale, for the wrong provider or task, or valid (made with the configured keys).

Invariants, checked after every request:

- never a 5xx;
- a 2xx only for a request that carried a valid proof (the test's own over-approximation: a token minted
  with the configured key for that provider, a fresh kie.ai signature by the configured key of a task id that
  appears in the body, a Standard Webhooks signature by the configured secret of these exact bytes);
- a request without a valid proof creates no ``rq:job:*`` key (the set of job keys is diffed per request);
- a request creates at most one job, answered ``accepted``; its id is ``redis_keys.job_id`` of its own event, for
  the endpoint's provider, the task id signed (kie.ai HMAC), a terminal status, and the body as sent;
- the job keys in Redis are exactly the distinct valid terminal callbacks sent so far, each pushed on the
  queue once (so jobs never outnumber distinct valid terminal callbacks);
- a well-formed, validly proven callback is answered 200: ``accepted`` the first time its (provider, task,
  terminal status) is seen, ``duplicate`` after, ``recorded`` for a non-terminal status.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq.job import Job
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from receiver import tokens
from receiver.app import create_app
from tests.servers import RedisServer
from veo_archiver import redis_keys, standard_webhooks
from veo_archiver.providers.kie import sign as kie_sign
from veo_archiver.records import delivery as delivery_records
from veo_archiver.redact import TOKEN_PATTERN, redact_tokens
from veo_archiver.settings import Settings
from veo_archiver.sim import apixo as apixo_sim
from veo_archiver.sim import evolink as evolink_sim
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim import useapi as useapi_sim

KIE_KEY = "fuzz-kie-hmac-key"
SIGNING = "fuzz-callback-signing-key"
WHSEC = "whsec_" + base64.b64encode(b"fuzz-standard-secret-0123456789!").decode()
QUEUE = "veo-archiver"
SOURCE = "acme"

ENDPOINTS = {
    "/callbacks/kie": "kie",
    "/callbacks/apixo": "apixo",
    "/callbacks/useapi": "useapi",
    "/callbacks/evolink": "evolink",
    f"/callbacks/standard/{SOURCE}": f"standard-{SOURCE}",
}
OTHER_ENDPOINTS = (
    "/callbacks/standard/other",
    "/callbacks/nope",
    "/callbacks/KIE",
    "/callbacks/standard/ACME",
)
TOKEN_PROVIDERS = ("kie", "apixo", "useapi", "evolink")
TERMINAL = ("succeeded", "failed")
EXAMPLES = {"random_bytes": 1500, "random_json": 1500, "shaped": 4500, "well_formed": 2500}
assert sum(EXAMPLES.values()) >= 10_000

FUZZ = settings(
    deadline=None,
    database=None,  # nothing written into the repository (.hypothesis/)
    suppress_health_check=list(HealthCheck),  # a harness, not a library under test: long, large, slow
)

# ---------------------------------------------------------------------------------------------------------
# the harness: one redis-server and one app for the module; per-request invariants


@dataclass
class Req:
    """A concrete request, plus what the test knows about the proof it carries."""

    path: str
    body: bytes
    headers: list[tuple[str, str]]
    params: dict[str, str]
    valid: bool  # carries a valid proof for this endpoint (over-approximation of what may be accepted)
    expect: tuple[str, str, str] | None = None  # well-formed: (provider, task id, status) it must be read as
    signed_task: str | None = None  # kie.ai HMAC: the task id the signature covers
    tags: frozenset[str] = frozenset()

    @property
    def provider(self) -> str | None:
        return ENDPOINTS.get(self.path)


@dataclass
class Harness:
    client: TestClient
    rds: redis.Redis
    jobs: set[str] = field(default_factory=set)  # job ids in Redis (checked after every request)
    callbacks: set[tuple[str, str, str]] = field(default_factory=set)  # distinct valid terminal callbacks
    stats: Counter[str] = field(default_factory=Counter)

    def job_ids(self) -> set[str]:
        return {k.decode()[len("rq:job:") :] for k in self.rds.keys("rq:job:*")}

    def send(self, req: Req) -> Any:
        return self.client.post(req.path, content=req.body, headers=req.headers, params=req.params)

    def exercise(self, req: Req, kind: str) -> Any:
        response = self.send(req)
        status = response.status_code
        outcome = response.headers.get("x-archiver-outcome")
        self.stats[f"{kind}:{status}"] += 1
        after = self.job_ids()
        new = after - self.jobs
        assert self.jobs <= after, f"jobs vanished: {self.jobs - after}"

        assert status < 500, f"{status} for {describe(req)}: {response.text[:300]}"
        if 200 <= status < 300:
            assert req.valid, f"{status} ({outcome}) without a valid proof: {describe(req)}"
        if not req.valid:
            assert not new, f"an unproven request created job(s) {new}: {describe(req)}"
        assert len(new) <= 1, new
        if new:
            (job_id,) = new
            assert 200 <= status < 300 and outcome == "accepted", (status, outcome)
            self.callbacks.add(self.check_job(job_id, req))
        elif 200 <= status < 300:  # conflict: the task was accepted with other URLs (recorded, never a job)
            assert outcome in ("duplicate", "recorded", "conflict"), outcome
        if req.expect is not None:
            provider, task_id, want = req.expect
            assert status == 200, f"a well-formed, proven callback got {status} {response.text[:300]}: {describe(req)}"
            if want not in TERMINAL:
                assert outcome == "recorded" and not new, (outcome, new)
            elif req.expect in self.callbacks and not new:
                assert outcome in ("duplicate", "conflict"), outcome
            else:
                assert new == {redis_keys.job_id(provider, task_id, want)} and outcome == "accepted", (new, outcome)
        self.jobs = after
        # every job is one distinct valid terminal callback, pushed on the queue once; none is missing
        assert after == {redis_keys.job_id(*c) for c in self.callbacks}
        assert self.rds.llen(redis_keys.rq_queue_key(QUEUE)) == len(after)
        if 200 <= status < 300:
            self.stats[f"2xx:{outcome}"] += 1
        return response

    def envelope(self, job_id: str) -> dict[str, Any]:
        # decoded on a fresh thread: a job may hold JSON nested ~950 deep, which the test's own deep stack
        # (pytest + hypothesis) could not decode without raising RecursionError
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(Job.fetch, job_id, connection=self.rds, serializer=JSONSerializer).result()
            return pool.submit(lambda: job.kwargs["envelope"]).result()  # type: ignore[no-any-return]

    def record(self, provider: str, task_id: str, delivery_id: str) -> dict[str, Any]:
        """The delivery record the job reads its raw callback from (decoded on a fresh thread, as above)."""
        with ThreadPoolExecutor(1) as pool:
            found = pool.submit(delivery_records.find, self.rds, provider, task_id, delivery_id).result()
        assert found is not None, (provider, task_id, delivery_id)
        return found

    def absorb(self) -> None:
        """Take in jobs created outside :meth:`exercise` (the known-bug tests), so later checks stay exact."""
        for job_id in self.job_ids() - self.jobs:
            event = self.envelope(job_id)["event"]
            self.callbacks.add((event["provider"], event["task_id"], event["status"]))
        self.jobs = self.job_ids()

    def check_job(self, job_id: str, req: Req) -> tuple[str, str, str]:
        envelope = self.envelope(job_id)
        event = envelope["event"]
        callback = (event["provider"], event["task_id"], event["status"])
        assert event["provider"] == req.provider, (event["provider"], req.path)
        assert event["status"] in TERMINAL
        assert job_id == redis_keys.job_id(*callback)
        # stored as received, less the MAC of any callback-URL token (never stored: veo_archiver/redact.py)
        record = self.record(event["provider"], event["task_id"], envelope["delivery_id"])
        assert record["job_id"] == job_id and "callback" not in envelope  # the raw callback is stored once
        stored = record["callback"]["body"]
        assert stored == redact_tokens(req.body.decode("utf-8", errors="replace"))
        assert TOKEN_PATTERN.search(stored) is None, stored[:300]  # a redacted token no longer matches
        if req.signed_task is not None:
            assert event["task_id"] == req.signed_task, "a kie.ai signature for one task created another's job"
        if req.expect is not None:
            assert callback == req.expect, (callback, req.expect)
        return callback


def describe(req: Req) -> str:
    return (
        f"{req.path} params={req.params!r} headers={req.headers!r} valid={req.valid} tags={set(req.tags)} "
        f"body={req.body[:300]!r}"
    )


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    server = RedisServer(Path(tmp_path_factory.mktemp("fuzz-redis")))
    server.start()
    try:
        config = Settings(
            redis_url=server.url,
            kie_hmac_keys=(KIE_KEY,),
            callback_signing_keys=(SIGNING,),
            standard_webhook_secrets={SOURCE: (WHSEC,)},
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            rds = server.client()
            try:
                yield Harness(client=client, rds=rds)
            finally:
                rds.close()
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# lone surrogates: JSON can carry them (escaped), UTF-8 cannot encode them

SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")


def _has_surrogate(value: Any) -> bool:
    return isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)


# ---------------------------------------------------------------------------------------------------------
# strategies: plans drawn by hypothesis, made concrete (timestamps, signatures) at send time


POOL = ("veo_task_1", "veo_task_2", "a:b@c*d", "x", "42", " pad ", "tâche-é", "ev-1700000000-abc")
URL_POOL = (
    "https://cdn.example.com/v/0.mp4",
    "https://cdn.example.com/v/1.mp4",
    "http://127.0.0.1/v.mp4",
    "ftp://x/y",
    "not a url",
    "",
    "https://ex.example/a b.mp4",
    "[https://a.example/x.mp4]",
)
KEY_NAMES = (
    "code",
    "msg",
    "data",
    "taskId",
    "task_id",
    "id",
    "status",
    "state",
    "info",
    "resultUrls",
    "results",
    "request",
    "replyRef",
    "response",
    "media",
    "type",
    "error",
    "jobid",
    "output",
)

task_ids = st.one_of(st.sampled_from(POOL), st.text(min_size=1, max_size=12).filter(str.strip))
odd_task_ids = st.one_of(
    task_ids,
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), st.sampled_from(SURROGATES), st.text(max_size=3)),
    st.sampled_from(["", " ", "\t"]),
)
texts = st.one_of(
    st.text(max_size=16),
    st.sampled_from([*POOL, *URL_POOL, "200", "completed", "success", "failed", "video.completed", "token=garbage"]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=6)), inner, max_size=3),
    ),
    max_leaves=8,
)
urls = st.lists(
    st.one_of(
        st.sampled_from(URL_POOL[:2]),
        st.builds("https://cdn{}.example.com/v/{}.mp4".format, st.integers(0, 9), st.integers(0, 99)),
    ),
    min_size=1,
    max_size=3,
)

# header names: real ones (any case) and random tokens; never framing headers the client must own
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te", "trailer"}
PROOF_HEADERS = (
    "X-Webhook-Timestamp",
    "X-Webhook-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "Content-Type",
    "Authorization",
    "X-Api-Key",
)
HEADER_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
header_names = st.one_of(
    st.sampled_from([v for h in PROOF_HEADERS for v in (h, h.lower(), h.upper())]),
    st.text(alphabet=HEADER_NAME_CHARS, min_size=1, max_size=16)
    .map(lambda h: "X" + h)
    .filter(lambda h: h.lower() not in FRAMING),
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=48),
    st.integers(-(10**13), 10**13).map(str),
    st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
    st.binary(min_size=32, max_size=32).map(lambda b: "v1," + base64.b64encode(b).decode()),
    st.just(str(int(time.time()))),
)
noise_headers = st.lists(st.tuples(header_names, header_values), max_size=5)
query_params = st.dictionaries(
    st.one_of(
        st.sampled_from(["token", "replyRef", "taskId", "x"]),
        st.text(alphabet="abcdefgh", min_size=1, max_size=8),
    ),
    st.one_of(st.text(max_size=40), st.sampled_from(["v1.kie.0.AAAA", "v1.apixo.0." + "A" * 43, ""])),
    max_size=3,
)


@dataclass(frozen=True)
class Proof:
    """How to prove (or fail to prove) a request; made concrete when sent (fresh clock)."""

    kind: str  # none | token | reply_ref | kie_hmac | standard
    good_key: bool = True
    provider: str = "kie"  # token / reply_ref: the provider the token is minted for
    expired: bool = False
    ts_offset: int = 0  # seconds from now (kie_hmac, standard); |x| <= 250 fresh, >= 400 refused
    other_task: str | None = None  # kie_hmac: sign this task id instead of the body's
    garble: int = 0  # token: 0 none, 1 truncate, 2 flip a character, 3 lowercase
    family: str = "webhook-"  # standard: header family (webhook- or svix-)
    tamper: bool = False  # standard: sign other bytes than the body sent

    @property
    def fresh(self) -> bool:
        return abs(self.ts_offset) <= 250


@dataclass(frozen=True)
class Plan:
    path: str
    body: Any  # a JSON-able object, or bytes sent as they are
    task_id: str | None  # the task id the body was built around, when there is one
    proof: Proof
    headers: tuple[tuple[str, str], ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    expect: tuple[str, str, str] | None = None
    tags: frozenset[str] = frozenset()


def _proofs_for(path: str) -> st.SearchStrategy[Proof]:
    """Every kind of proof, valid or not, weighted toward the endpoint's own kind."""
    fresh = st.integers(-250, 250)
    stale = st.one_of(st.integers(400, 10**6), st.integers(-(10**6), -400))
    offsets = st.one_of(fresh, fresh, stale)
    token = st.builds(
        Proof,
        kind=st.just("token"),
        good_key=st.booleans(),
        provider=st.sampled_from(TOKEN_PROVIDERS),
        expired=st.booleans(),
        garble=st.sampled_from([0, 0, 0, 1, 2, 3]),
    )
    reply = st.builds(
        Proof,
        kind=st.just("reply_ref"),
        good_key=st.booleans(),
        provider=st.sampled_from(TOKEN_PROVIDERS),
        expired=st.booleans(),
    )
    hmac_ = st.builds(
        Proof,
        kind=st.just("kie_hmac"),
        good_key=st.booleans(),
        ts_offset=offsets,
        other_task=st.one_of(st.none(), st.none(), task_ids),
    )
    standard = st.builds(
        Proof,
        kind=st.just("standard"),
        good_key=st.booleans(),
        ts_offset=offsets,
        family=st.sampled_from(["webhook-", "webhook-", "svix-"]),
        tamper=st.booleans(),
    )
    none = st.just(Proof(kind="none"))
    provider = ENDPOINTS.get(path, "")
    own = {"kie": st.one_of(hmac_, token), "useapi": st.one_of(reply, token), "standard-acme": standard}
    valid = {
        "kie": st.one_of(
            st.builds(Proof, kind=st.just("kie_hmac"), ts_offset=fresh),
            st.just(Proof("token", provider="kie")),
        ),
        "useapi": st.sampled_from([Proof("reply_ref", provider="useapi"), Proof("token", provider="useapi")]),
        "standard-acme": st.builds(
            Proof, kind=st.just("standard"), ts_offset=fresh, family=st.sampled_from(["webhook-", "svix-"])
        ),
    }.get(provider, st.just(Proof("token", provider=provider or "kie")))
    # about a third valid proofs, so that what lies behind verification gets fuzzed too
    return st.one_of(valid, valid, valid, own.get(provider, token), none, token, hmac_, standard, reply)


_PROOFS = {path: _proofs_for(path) for path in [*ENDPOINTS, *OTHER_ENDPOINTS]}


def proofs_for(path: str) -> st.SearchStrategy[Proof]:
    return _PROOFS[path]


def _strings(value: Any) -> set[str]:
    """Every string (key or value) in a JSON value, without recursion."""
    out: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict):
            out.update(k for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def make(plan: Plan) -> Req:
    """The concrete request: proofs made now, with the configured keys or deliberately wrong ones."""
    now = int(time.time())
    proof = plan.proof
    provider = ENDPOINTS.get(plan.path)
    headers = list(plan.headers)
    params = dict(plan.params)
    body_obj = plan.body
    valid = False
    signed_task: str | None = None

    def drop(*names: str) -> None:
        lowered = {n.lower() for n in names}
        headers[:] = [(k, v) for k, v in headers if k.lower() not in lowered]

    def mint() -> str:
        key = SIGNING if proof.good_key else "not-" + SIGNING
        if proof.expired:
            return tokens.mint(proof.provider, [key], now=now - 7200, ttl_s=3600)
        return tokens.mint(proof.provider, [key], now=now, ttl_s=None if now % 2 else 3600)

    if proof.kind == "token":
        good = mint()
        text = {0: good, 1: good[:-3], 2: good[:-1] + ("A" if good[-1] != "A" else "B"), 3: good.lower()}[proof.garble]
        params["token"] = text
        valid = text == good and proof.good_key and not proof.expired and provider == proof.provider
    elif proof.kind == "reply_ref" and isinstance(body_obj, dict):
        good = mint()
        body_obj = json.loads(json.dumps(body_obj))  # a copy
        request = body_obj.get("request")
        if isinstance(request, dict):
            request["replyRef"] = f"token={good}"
        else:
            body_obj["replyRef"] = good
        valid = (
            provider == "useapi" == proof.provider and proof.good_key and not proof.expired and not params.get("token")
        )
    body = body_obj if isinstance(body_obj, bytes) else json.dumps(body_obj).encode()

    if proof.kind == "kie_hmac":
        signed_task = proof.other_task if proof.other_task is not None else plan.task_id
        if signed_task is not None and not _has_surrogate(signed_task):
            ts = now + proof.ts_offset
            drop("X-Webhook-Timestamp", "X-Webhook-Signature")
            headers += [
                ("X-Webhook-Timestamp", str(ts)),
                (
                    "X-Webhook-Signature",
                    kie_sign(KIE_KEY if proof.good_key else "not-" + KIE_KEY, signed_task, ts),
                ),
            ]
            appears = (
                json.dumps(signed_task).encode() in body
                if isinstance(body_obj, bytes)
                else signed_task in _strings(body_obj)
            )
            valid = provider == "kie" and proof.good_key and proof.fresh and not params.get("token") and appears
        else:
            signed_task = None
    elif proof.kind == "standard":
        ts = now + proof.ts_offset
        msg_id = f"msg_{secrets.token_hex(6)}"
        secret = WHSEC if proof.good_key else "whsec_" + base64.b64encode(b"not-the-fuzz-secret-0123456789").decode()
        signed = body + b" " if proof.tamper else body
        drop(*(p + s for p in ("webhook-", "svix-") for s in ("id", "timestamp", "signature")))
        headers += [
            (f"{proof.family}id", msg_id),
            (f"{proof.family}timestamp", str(ts)),
            (f"{proof.family}signature", standard_webhooks.sign(secret, msg_id, ts, signed)),
        ]
        valid = provider == f"standard-{SOURCE}" and proof.good_key and proof.fresh and not proof.tamper
    return Req(
        path=plan.path,
        body=body,
        headers=headers,
        params=params,
        valid=valid,
        expect=plan.expect,
        signed_task=signed_task if valid else None,
        tags=plan.tags,
    )


# ----- bodies


def kie_body(task_id: str, status: str, links: list[str], code: int) -> dict[str, Any]:
    if status == "succeeded":
        return kie_sim.success_body(task_id, links)
    return kie_sim.failure_body(task_id, code)


APIXO_STATES = {
    "success": "succeeded",
    "failed": "failed",
    "pending": "in_progress",
    "processing": "in_progress",
}
USEAPI_STATES = {
    "completed": "succeeded",
    "failed": "failed",
    "created": "in_progress",
    "started": "in_progress",
}
EVOLINK_STATES = {
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
    "pending": "in_progress",
    "processing": "in_progress",
}
STANDARD_STATES = {
    "completed": "succeeded",
    "succeeded": "succeeded",
    "done": "succeeded",
    "failed": "failed",
    "canceled": "failed",
    "expired": "failed",
    "processing": "in_progress",
    "queued": "in_progress",
    "mystery": "unknown",
}


PLACEHOLDER = "task-id-placeholder-5f0c"


def _replace_strings(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return new if value == old else value
    if isinstance(value, dict):
        return {k: _replace_strings(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, old, new) for v in value]
    return value


@st.composite
def shaped_body(draw: st.DrawFn, shape: str, task_id: str) -> tuple[dict[str, Any], str]:
    """A well-formed body of ``shape`` for ``task_id``; returns it with the status it means.

    The simulators need a task id they can hash or seed with: odd ones (lone surrogates, blanks) are put
    in afterwards, in place of a placeholder."""
    if task_id != PLACEHOLDER and (_has_surrogate(task_id) or not task_id.strip()):
        body, status = draw(shaped_body(shape, PLACEHOLDER))
        return _replace_strings(body, PLACEHOLDER, task_id), status
    links = draw(urls)
    if shape == "kie":
        status = draw(st.sampled_from(TERMINAL))
        code = draw(st.sampled_from([400, 422, 500, 501]))
        body = kie_body(task_id, status, links, code)
        if status == "succeeded":
            form = draw(st.sampled_from(kie_sim.URL_FORMS if len(links) == 1 else ("list", "json", "bracket")))
            body["data"]["info"]["resultUrls"] = kie_sim.encode_urls(links, form)
        return body, status
    if shape == "apixo":
        state = draw(st.sampled_from(sorted(APIXO_STATES)))
        return apixo_sim.envelope(apixo_sim.task_record(task_id, state, urls=links)), APIXO_STATES[state]
    if shape == "useapi":
        state = draw(st.sampled_from(sorted(USEAPI_STATES)))
        schema = draw(st.sampled_from(useapi_sim.SCHEMAS))
        return useapi_sim.job_record(task_id, state, urls=links, schema=schema), USEAPI_STATES[state]
    if shape == "evolink":
        state = draw(st.sampled_from(sorted(EVOLINK_STATES)))
        # created= given: the simulator would otherwise read it out of the id (and choke on "a-b-²-c")
        return evolink_sim.task_object(task_id, state, urls=links, created=1_760_000_000), EVOLINK_STATES[state]
    word = draw(st.sampled_from(sorted(STANDARD_STATES)))
    data: dict[str, Any] = {draw(st.sampled_from(["task_id", "taskId", "id"])): task_id, "status": word}
    if STANDARD_STATES[word] == "succeeded":
        data["result_urls"] = links
    return {"type": f"video.{word}", "timestamp": "2026-11-21T00:00:00Z", "data": data}, STANDARD_STATES[word]


SHAPES = ("kie", "apixo", "useapi", "evolink", "standard")
SHAPE_OF = {
    "/callbacks/kie": "kie",
    "/callbacks/apixo": "apixo",
    "/callbacks/useapi": "useapi",
    "/callbacks/evolink": "evolink",
    f"/callbacks/standard/{SOURCE}": "standard",
}
all_paths = st.sampled_from([*OTHER_ENDPOINTS[:1], *sorted(ENDPOINTS) * 6, *OTHER_ENDPOINTS[1:]])


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """Replace, delete or add one node anywhere in a JSON tree (a copy)."""
    value = json.loads(json.dumps(value))
    for _ in range(draw(st.integers(0, 3))):
        paths: list[tuple[Any, Any]] = []  # (container, key)
        stack = [value]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                paths += [(node, k) for k in node]
                stack.extend(node.values())
            elif isinstance(node, list):
                paths += [(node, i) for i in range(len(node))]
                stack.extend(node)
        if not paths:
            break
        container, key = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            container[key] = draw(json_values)
        elif action == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[draw(st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=6)))] = draw(json_values)
        else:
            container.insert(draw(st.integers(0, len(container))), draw(json_values))
    return value


@st.composite
def deep_body(draw: st.DrawFn, shape: str, task_id: str) -> tuple[bytes, int]:
    """A proper body carrying a deeply nested array where providers copy arbitrary JSON into the event.

    Built as text (the test itself never encodes or decodes it on its own deep stack)."""
    body, _ = draw(shaped_body(shape, task_id))
    depth = draw(st.one_of(st.integers(1, 60), st.integers(940, 990), st.sampled_from([3000])))
    marker = "__deep_marker__"
    if shape == "kie":
        body["data"][draw(st.sampled_from(["fallbackFlag", "creditsConsumed", "callbackType"]))] = marker
    elif shape == "standard":
        body["type"] = marker
    else:
        body["extra"] = marker
    return json.dumps(body).replace(json.dumps(marker), "[" * depth + "]" * depth).encode(), depth


TRICKY = (
    b"",
    b" ",
    b"null",
    b"[]",
    b"{}",
    b'"x"',
    b"NaN",
    b"\xef\xbb\xbf{}",
    b"\xff\xfe\xfd",
    json.dumps({"data": {"taskId": "veo_task_1"}}).encode("utf-16"),
    b"[" * 100_000,
    b'{"a":' * 20_000,
    b"1" * 5000,
    b'{"code": 1e999, "data": {"taskId": "x"}}',
    b'{"data": {"taskId": "\\ud800"}, "code": 200}',
    b'{"code": 200, "data": {"taskId": "x", "info": {"resultUrls": "' + b"h" * 50_000 + b'"}}}',
    b"x" * (1024 * 1024 + 1),
)


@st.composite
def random_bytes_plans(draw: st.DrawFn) -> Plan:
    path = draw(all_paths)
    body = draw(st.one_of(st.binary(max_size=300), st.sampled_from(TRICKY)))
    proof = draw(proofs_for(path))
    return Plan(
        path=path,
        body=body,
        task_id=draw(st.sampled_from(POOL)),
        proof=proof,
        headers=tuple(draw(noise_headers)),
        params=tuple(draw(query_params).items()),
    )


@st.composite
def random_json_plans(draw: st.DrawFn) -> Plan:
    path = draw(all_paths)
    task_id = draw(task_ids)
    value = draw(st.one_of(json_values, st.dictionaries(st.sampled_from(KEY_NAMES), json_values, max_size=5)))
    if isinstance(value, dict) and draw(st.booleans()):
        value.setdefault("data", {}) if isinstance(value.get("data"), dict) else value.update(data={})
        value["data"][draw(st.sampled_from(["taskId", "task_id", "id"]))] = task_id
    return Plan(
        path=path,
        body=value,
        task_id=task_id,
        proof=draw(proofs_for(path)),
        headers=tuple(draw(noise_headers)),
        params=tuple(draw(query_params).items()),
    )


@st.composite
def shaped_plans(draw: st.DrawFn) -> Plan:
    """Provider-shaped bodies (any provider's, to any endpoint) with random values; any proof."""
    path = draw(all_paths)
    shape = SHAPE_OF.get(path, "kie") if draw(st.integers(0, 9)) < 6 else draw(st.sampled_from(SHAPES))
    task_id = draw(odd_task_ids)
    tags: set[str] = set()
    body: Any
    if draw(st.integers(0, 19)) == 0:
        body, depth = draw(deep_body(shape, task_id))
        if 900 <= depth <= 1000:  # the band where the recursion bug used to strike
            tags.add("deep")
    else:
        body, _ = draw(shaped_body(shape, task_id))
        body = draw(mutated(body))
    return Plan(
        path=path,
        body=body,
        task_id=task_id,
        proof=draw(proofs_for(path)),
        headers=tuple(draw(noise_headers)),
        params=tuple(draw(query_params).items()),
        tags=frozenset(tags),
    )


@st.composite
def well_formed_plans(draw: st.DrawFn) -> Plan:
    """A proper callback of the endpoint's provider with a valid proof: its reading is known exactly."""
    path = draw(st.sampled_from(sorted(ENDPOINTS)))
    provider = ENDPOINTS[path]
    shape = SHAPE_OF[path]
    task_id = draw(task_ids)
    body, status = draw(shaped_body(shape, task_id))
    if provider == "kie":
        proof = draw(st.sampled_from([Proof(kind="kie_hmac"), Proof(kind="token", provider="kie")]))
    elif provider == "useapi":
        proof = draw(
            st.sampled_from([Proof(kind="reply_ref", provider="useapi"), Proof(kind="token", provider="useapi")])
        )
    elif provider.startswith("standard-"):
        proof = draw(st.sampled_from([Proof(kind="standard"), Proof(kind="standard", family="svix-")]))
    else:
        proof = Proof(kind="token", provider=provider)
    proof_headers = {"x-webhook-timestamp", "x-webhook-signature"} | {
        p + s for p in ("webhook-", "svix-") for s in ("id", "timestamp", "signature")
    }
    headers = tuple((k, v) for k, v in draw(noise_headers) if k.lower() not in proof_headers)
    params = {k: v for k, v in draw(query_params).items() if k != "token"}
    return Plan(
        path=path,
        body=body,
        task_id=task_id,
        proof=proof,
        headers=headers,
        params=tuple(params.items()),
        expect=(provider, task_id, status),
    )


# ---------------------------------------------------------------------------------------------------------
# the properties


def run(harness: Harness, kind: str, plans: st.SearchStrategy[Plan]) -> None:
    @settings(FUZZ, max_examples=EXAMPLES[kind])
    @given(plan=plans)
    def check(plan: Plan) -> None:
        harness.exercise(make(plan), kind)

    started = time.monotonic()
    check()
    mine = {k: v for k, v in harness.stats.items() if k.startswith(kind + ":")}
    print(
        f"FUZZ {kind}: {sum(mine.values())} requests in {time.monotonic() - started:.1f} s, "
        f"answers {dict(sorted(mine.items()))}; jobs so far {len(harness.jobs)}, "
        f"2xx outcomes {dict((k, v) for k, v in harness.stats.items() if k.startswith('2xx:'))}, "
        "no 5xx"
    )


def test_random_bytes_never_5xx_never_accepted(harness: Harness) -> None:
    run(harness, "random_bytes", random_bytes_plans())


def test_random_json_never_5xx_never_enqueued_without_proof(harness: Harness) -> None:
    run(harness, "random_json", random_json_plans())


def test_provider_shaped_bodies_with_every_kind_of_proof(harness: Harness) -> None:
    run(harness, "shaped", shaped_plans())


def test_well_formed_proven_callbacks_are_accepted_once(harness: Harness) -> None:
    run(harness, "well_formed", well_formed_plans())
    assert harness.stats["2xx:accepted"] > 100 and harness.stats["2xx:duplicate"] > 100, harness.stats


# ---------------------------------------------------------------------------------------------------------
# regressions: two 500s this fuzzer found (fixed: task ids are checked for lone surrogates everywhere, and
# bodies nested deeper than veo_archiver.payload.MAX_DEPTH are refused with 400)


def test_standard_webhook_task_id_with_lone_surrogate_is_a_400(harness: Harness) -> None:
    body = b'{"type": "video.completed", "data": {"task_id": "abc\\ud800", "status": "completed"}}'
    req = make(Plan(path=f"/callbacks/standard/{SOURCE}", body=body, task_id=None, proof=Proof(kind="standard")))
    response = harness.send(req)
    harness.absorb()
    assert response.status_code == 400, response.status_code


def test_deeply_nested_json_with_a_valid_proof_is_refused_not_a_500(harness: Harness) -> None:
    statuses: Counter[int] = Counter()
    for depth in range(930, 1000):
        task_id = f"deep-{depth}-{secrets.token_hex(4)}"
        body = kie_sim.success_body(task_id, ["https://cdn.example.com/v/0.mp4"])
        body["data"]["fallbackFlag"] = "__deep__"
        raw = json.dumps(body).replace('"__deep__"', "[" * depth + "]" * depth).encode()
        statuses[
            harness.send(
                make(Plan(path="/callbacks/kie", body=raw, task_id=task_id, proof=Proof(kind="kie_hmac")))
            ).status_code
        ] += 1
    harness.absorb()
    assert not any(s >= 500 for s in statuses), statuses
