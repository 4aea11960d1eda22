"""One loopback server standing in for all four providers' clouds: their status APIs and their CDNs.

    with ProviderCloud(api_keys={"kie": "k1", "apixo": "k2", "useapi": "k3", "evolink": "k4"}) as cloud:
        url = cloud.add_video("/v/a.mp4", make_mp4())
        cloud.set_task("evolink", "task-unified-1756817821-4x3rx6ny", "succeeded", urls=[url])
        body = cloud.callback_body("evolink", "task-unified-1756817821-4x3rx6ny")
        cloud.refresh_url("evolink", "task-unified-1756817821-4x3rx6ny")   # old link now answers 403

Status routes (each needs ``Authorization: Bearer <that provider's key>``, each call is counted in
``status_calls[provider]``): kie ``GET /api/v1/veo/record-info?taskId=``, APIXO
``GET /api/v1/statusTask/veo-3-1[-extend]?taskId=``, useapi.net ``GET /v1/google-flow/jobs/{jobid}``
(URL-encoded), EvoLink ``GET /v1/tasks/{id}``. Every other GET is a file request (Range, ETag, and 403
once a link has been refreshed).

kie.ai's ``GET /api/v1/veo/get-1080p-video?taskId=&index=`` (no callback): for a succeeded task, "processing"
(body code 422, or the HTTP status :meth:`ProviderCloud.set_1080p` names) for its first polls, then a URL serving
the real sample MP4 (or the video given); polls are counted in ``rendition_calls``.

Submission routes (``POST``, same keys; :mod:`veo_archiver.sim.submissions`): kie ``/api/v1/veo/generate``,
``/extend``, ``/get-4k-video``; APIXO ``/api/v1/generateTask/veo-3-1[-extend]``; useapi.net
``/v1/google-flow/videos[/extend]``; EvoLink ``/v1/videos/generations``. Each accepted request is kept in
``submitted``, its task registered in progress, and ``on_submit`` (when set) called with it; a test or
``veo-archiver simulate-api`` then finishes it with :meth:`ProviderCloud.complete`.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from veo_archiver.sim import apixo, evolink, kie, submissions, task_bodies, useapi
from veo_archiver.sim.files import FileHost, HostedFile
from veo_archiver.sim.media import sample_mp4
from veo_archiver.sim.task_bodies import EXTRAS, NATIVE, PROVIDERS, STATUSES, CloudTask

DEFAULT_API_KEYS = {p: f"sim-{p}-key" for p in PROVIDERS}
#: polls a succeeded kie.ai task's 1080p answers "processing" before its URL, unless set_1080p says otherwise
DEFAULT_1080P_POLLS = 2


@dataclass
class Rendition1080p:
    """How one video's 1080p answers: ``ready_after`` "processing" polls (``None``: never ready), each as
    HTTP ``not_ready_status`` (200: the code is in the body, as kie.ai answers errors), then ``video``."""

    ready_after: int | None = DEFAULT_1080P_POLLS
    video: bytes | None = None
    not_ready_status: int = 200
    url: str | None = None


EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
    b"<Message>The provided token has expired. Request signature expired.</Message></Error>"
)


class ProviderCloud(FileHost):
    def __init__(self, api_keys: Mapping[str, str] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.api_keys: dict[str, str] = dict(DEFAULT_API_KEYS if api_keys is None else api_keys)
        self.tasks: dict[tuple[str, str], CloudTask] = {}
        self.status_calls: Counter[str] = Counter()
        self._refreshes = itertools.count(1)
        self.submitted: list[submissions.Submitted] = []
        self.on_submit: Callable[[submissions.Submitted], None] | None = None
        self.renditions: dict[tuple[str, int], Rendition1080p] = {}
        self.rendition_calls: Counter[tuple[str, int]] = Counter()

    def __enter__(self) -> ProviderCloud:
        super().__enter__()
        return self

    def add_video(self, path: str, data: bytes, content_type: str = "video/mp4") -> str:
        return self.add(path, data, content_type)

    def new_task_id(self, provider: str) -> str:
        """A task id in the provider's own style."""
        if provider == "useapi":
            return useapi.make_jobid()
        if provider == "evolink":
            return evolink.make_task_id()
        return {"kie": "veo_task_", "apixo": "task_"}[provider] + secrets.token_hex(6)

    def set_task(
        self,
        provider: str,
        task_id: str,
        status: str,
        urls: list[str] | None = None,
        failure_code: str | None = None,
        failure_message: str | None = None,
        *,
        native_status: Any = None,
        **extra: Any,
    ) -> CloudTask:
        """Register or update a task. ``native_status`` picks among the provider's own values for ``status``
        (kie successFlag 2|3, APIXO pending|processing, useapi created|started, EvoLink cancelled...)."""
        if provider not in PROVIDERS or status not in STATUSES:
            raise ValueError(f"provider one of {PROVIDERS}, status one of {STATUSES}")
        allowed = NATIVE[provider][status]
        native = allowed[0] if native_status is None else native_status
        if native not in allowed:
            raise ValueError(f"{provider} {status}: native status one of {allowed}, not {native!r}")
        unknown = set(extra) - EXTRAS[provider]
        if unknown:
            raise TypeError(f"{provider}: unknown extras {sorted(unknown)}; see EXTRAS")
        if failure_code is not None and provider in ("kie", "useapi") and not str(failure_code).isdigit():
            raise ValueError(f"{provider} failure codes are numeric, not {failure_code!r}")
        now = apixo.now_ms()
        with self._lock:
            old = self.tasks.get((provider, task_id))
        created = old.created_ms if old else now - 60_000
        task = CloudTask(
            provider,
            task_id,
            status,
            native,
            list(urls or []),
            failure_code,
            failure_message,
            dict(extra),
            created,
            now,
        )
        task_bodies.status_body(task)  # raises on bad combinations (e.g. 5 useapi URLs) before anything is stored
        with self._lock:
            self.tasks[(provider, task_id)] = task
        return task

    def set_1080p(
        self,
        task_id: str,
        index: int = 0,
        *,
        ready_after: int | None = DEFAULT_1080P_POLLS,
        video: bytes | None = None,
        not_ready_status: int = 200,
    ) -> Rendition1080p:
        """How the 1080p of video ``index`` of kie.ai task ``task_id`` answers (``ready_after=None``: never)."""
        rendition = Rendition1080p(ready_after, video, not_ready_status)
        with self._lock:
            self.renditions[(task_id, index)] = rendition
        return rendition

    def _rendition(self, request: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        task_id, raw_index = query.get("taskId", [""])[0], query.get("index", ["0"])[0]
        index = int(raw_index) if raw_index.isdigit() else 0
        with self._lock:
            self.rendition_calls[(task_id, index)] += 1
            polls = self.rendition_calls[(task_id, index)]
            task = self.tasks.get(("kie", task_id))
            rendition = self.renditions.setdefault((task_id, index), Rendition1080p())
        if request.headers.get("Authorization", "") != f"Bearer {self.api_keys.get('kie')}":
            _json(request, 401, _UNAUTHORIZED["kie"])
            return
        if task is None:
            _json(request, 200, {"code": 422, "msg": "record is null", "data": None})
            return
        ready = task.status == "succeeded" and rendition.ready_after is not None and polls > rendition.ready_after
        if not ready:
            _json(request, rendition.not_ready_status, kie.rendition_1080p_body(None))
            return
        if rendition.url is None:
            video = rendition.video if rendition.video is not None else sample_mp4()
            rendition.url = self.add_video(f"/videos/kie/{secrets.token_hex(6)}-1080p-{index}.mp4", video)
        _json(request, 200, kie.rendition_1080p_body(rendition.url))

    def task(self, provider: str, task_id: str) -> CloudTask:
        with self._lock:
            return self.tasks[(provider, task_id)]

    def refresh_url(self, provider: str, task_id: str) -> list[str]:
        """New signed-looking links serving the same bytes; the old ones answer 403 from now on."""
        task = self.task(provider, task_id)
        fresh: list[str] = []
        for url in task.urls:
            old_path = urlsplit(url).path
            hosted = self.files.get(old_path)
            if hosted is None:
                raise ValueError(f"{url} is not hosted by this cloud")
            n = next(self._refreshes)
            new_path = f"/signed/r{n}" + re.sub(r"^/signed/r\d+", "", old_path)
            self.files[new_path] = HostedFile(hosted.data, hosted.content_type)
            self.behaviours[old_path] = self._expired
            self.files.pop(old_path, None)
            expires = int(time.time()) + 86_400
            fresh.append(f"{self.base_url}{new_path}?Expires={expires}&Signature={secrets.token_hex(8)}")
        with self._lock:
            task.urls = fresh
        return fresh

    @staticmethod
    def _expired(request: BaseHTTPRequestHandler, hosted: HostedFile | None) -> bool:
        _send(request, 403, EXPIRED_XML, "application/xml; charset=UTF-8")
        return True

    # -- bodies ---------------------------------------------------------------------------------------

    def status_body(self, provider: str, task_id: str) -> dict[str, Any]:
        """What the provider's status API returns for a known task (HTTP 200)."""
        return task_bodies.status_body(self.task(provider, task_id))

    def callback_body(self, provider: str, task_id: str, *, variant: str | None = None) -> dict[str, Any]:
        """The callback the provider would send for the task's current state (``variant``: see
        :func:`veo_archiver.sim.task_bodies.callback_body`)."""
        return task_bodies.callback_body(self.task(provider, task_id), variant)

    def send_callback(
        self, provider: str, task_id: str, url: str, *, variant: str | None = None, hmac_key: str | None = None
    ) -> httpx.Response:
        """POST ``callback_body`` to ``url`` the way the provider does (kie: signed when ``hmac_key``)."""
        body = self.callback_body(provider, task_id, variant=variant)
        if provider == "kie":
            plain = {"Content-Type": "application/json"}
            headers = kie.signed_headers(hmac_key, task_id) if hmac_key else plain
            return kie.send(url, body, headers)
        if provider == "useapi":  # the job record names the URL it is posted to
            body["request"].setdefault("replyUrl", url)
        sender = {"apixo": apixo.send, "useapi": useapi.send, "evolink": evolink.send}[provider]
        return sender(url, body)

    # -- HTTP -----------------------------------------------------------------------------------------

    def complete(
        self, submitted: submissions.Submitted, video: bytes, *, hmac_key: str | None = None, send: bool = True
    ) -> httpx.Response | None:
        """Finish a submitted task: serve ``video``, mark the task succeeded and (``send``) POST its callback to
        the URL the submission named (kie.ai: signed with ``hmac_key`` when given)."""
        provider, task_id = submitted.provider, submitted.task_id
        url = self.add_video(f"/videos/{provider}/{secrets.token_hex(6)}.mp4", video)
        extra: dict[str, Any] = {}
        if provider == "apixo" and submitted.operation == "extend":
            extra["model"] = "veo-3-1-extend"
        self.set_task(provider, task_id, "succeeded", urls=[url], **extra)
        if not send or submitted.callback_url is None:
            return None
        return self.send_callback(provider, task_id, submitted.callback_url, hmac_key=hmac_key)

    def _submission(self, request: BaseHTTPRequestHandler) -> bool:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw or b"{}")
        except ValueError:
            body = None
        found = submissions.route(urlsplit(request.path).path, body) if isinstance(body, dict) else None
        if found is None:
            return False
        provider, operation = found
        authorization = request.headers.get("Authorization", "")
        key = self.api_keys.get(provider)
        if not key or authorization != f"Bearer {key}":
            _json(request, 401, _UNAUTHORIZED[provider])
            return True
        task_id = self.new_task_id(provider)
        extra: dict[str, Any] = {}
        if provider == "apixo" and operation == "extend":
            extra["model"] = "veo-3-1-extend"
        self.set_task(provider, task_id, "in_progress", **extra)
        submitted = submissions.Submitted(
            provider, operation, task_id, body, submissions.callback_url(provider, body), authorization
        )
        with self._lock:
            self.submitted.append(submitted)
        status, answer = submissions.accepted(provider, operation, task_id, body)
        _json(request, status, answer)
        if self.on_submit is not None:
            self.on_submit(submitted)
        return True

    def dispatch(self, request: BaseHTTPRequestHandler, method: str) -> bool:
        if method == "POST":
            return self._submission(request)
        parts = urlsplit(request.path)
        path, query = parts.path, parse_qs(parts.query)
        task_id: str | None
        if path == "/api/v1/veo/get-1080p-video":
            self._rendition(request, query)
            return True
        if path == "/api/v1/veo/record-info":
            provider, task_id = "kie", query.get("taskId", [None])[0]
        elif path in ("/api/v1/statusTask/veo-3-1", "/api/v1/statusTask/veo-3-1-extend"):
            provider, task_id = "apixo", query.get("taskId", [None])[0]
        elif path.startswith("/v1/google-flow/jobs/"):
            provider, task_id = "useapi", useapi.jobid_from_path(path)
        elif path.startswith("/v1/tasks/") and len(path) > len("/v1/tasks/"):
            provider, task_id = "evolink", path[len("/v1/tasks/") :]
        else:
            return False
        with self._lock:
            self.status_calls[provider] += 1
        key = self.api_keys.get(provider)
        if not key or request.headers.get("Authorization", "") != f"Bearer {key}":
            _json(request, 401, _UNAUTHORIZED[provider])
            return True
        task_id = task_id or ""
        with self._lock:
            known = (provider, task_id) in self.tasks
            if known and provider == "apixo":  # each APIXO model has its own status endpoint
                model = self.tasks[(provider, task_id)].extra.get("model", "veo-3-1")
                known = path.endswith("/" + model)
        status, body = (200, self.status_body(provider, task_id)) if known else _not_found(provider, task_id)
        _json(request, status, body)
        return True


_UNAUTHORIZED: dict[str, dict[str, Any]] = {
    "kie": {"code": 401, "msg": "You do not have access permissions", "data": None},
    "apixo": apixo.unauthorized_body(),
    "useapi": useapi.error_body("Unauthorized"),
    "evolink": evolink.error_body("unauthorized", "Invalid or missing API key"),
}


def _not_found(provider: str, task_id: str) -> tuple[int, dict[str, Any]]:
    if provider == "kie":  # kie answers HTTP 200 with the outcome in the body's code
        return 200, {"code": 422, "msg": "record is null", "data": None}
    if provider == "apixo":
        return 404, apixo.not_found_body(task_id)
    if provider == "useapi":
        return 404, useapi.error_body(f"Job {task_id} not found", 404)
    return 404, evolink.error_body("task_not_found", f"Task {task_id} not found")


def _json(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    _send(request, status, json.dumps(body).encode(), "application/json")


def _send(request: BaseHTTPRequestHandler, status: int, payload: bytes, content_type: str) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(payload)))
    request.end_headers()
    try:
        request.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
