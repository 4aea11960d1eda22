"""``GET /ops`` in a real headless Chromium against the receiver under uvicorn, with real data in Redis:
signed callbacks, one archived by a real RQ worker and one dead-lettered, under attacker-chosen task ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from html.parser import HTMLParser

import httpx
import pytest
from starlette.testclient import TestClient

from receiver.app import create_app
from receiver.ops_page import COOKIE, cookie_value
from tests.browser import Chromium, find_chromium
from tests.stacks import DirArchive, Stack, settings_for
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4
from veo_archiver.storage_settings import StorageSettings
from workers.progress import ProgressWriter

pytestmark = pytest.mark.slow
KEY = "ops-kie-key"
ADMIN = "ops-admin-token-4f9a2c"
SCRIPT_ID = "<script>alert(1)</script>"
IMG_ID = '"><img src=x onerror=alert(2)>'


class Dom(HTMLParser):
    """Tags seen, each table's rows of cell texts (keyed by the table's id), links and forms."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.cards: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._card: str | None = None
        self.text: list[str] = []
        #: (href, text) of every link; each form's action and fields
        self.links: list[tuple[str, str]] = []
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._link: tuple[str, list[str]] | None = None
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        ident = dict(attrs).get("id") or ""
        if tag == "table":
            self._table = ident
            self.tables[ident] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []
        elif tag == "div" and ident.startswith("card-"):
            self._card = ident.removeprefix("card-")
        elif tag == "a":
            self._link = (dict(attrs).get("href") or "", [])
        elif tag == "form":
            self.forms.append((dict(attrs).get("action") or "", {}))
        elif tag == "input" and self.forms:
            fields = dict(attrs)
            self.forms[-1][1][fields.get("name") or ""] = fields.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], "".join(self._link[1])))
            self._link = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._link is not None:
            self._link[1].append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._card is not None:
            self.cards[self._card] = data
            self._card = None

    def rows(self, table: str) -> list[list[str]]:
        return [row for row in self.tables[table] if row]  # the header row has no <td>


@pytest.fixture
def stack(redis_server, tmp_path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """The receiver under uvicorn; two callbacks handled by a real worker (burst), one left queued."""
    find_chromium()  # fail first, and clearly, when the browser is missing
    video = make_mp4(400_000, seed=11)
    with FileHost() as files:
        good = files.add("/cdn/ok.mp4", video)
        env = {"KIE_WEBHOOK_HMAC_KEYS": KEY, "ADMIN_TOKEN": ADMIN, "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}"}
        with Stack(tmp_path, redis_server.url, DirArchive(tmp_path / "archive"), **env) as stack:
            base = stack.start_receiver()
            for task_id, urls in (("veo_ok_1", [good]), (SCRIPT_ID, [files.base_url + "/cdn/gone.mp4"])):
                body = kie_sim.success_body(task_id, urls)
                response = kie_sim.send(base + "/callbacks/kie", body, kie_sim.signed_headers(KEY, task_id))
                assert response.status_code == 200, response.text
            stack.run_burst()  # a real worker process in burst mode (not in pytest's process: see Stack.run_burst)
            # one more, left waiting in the queue: shows in deliveries and the queue depth
            body = kie_sim.success_body(IMG_ID, [good])
            assert kie_sim.send(base + "/callbacks/kie", body, kie_sim.signed_headers(KEY, IMG_ID)).status_code == 200
            yield stack


def test_ops_page_in_a_real_browser(stack: Stack) -> None:
    browser = Chromium(stack.tmp / "profile")

    refused = Dom(browser.dump_dom(stack.base + "/ops"))
    assert "needs Authorization" in "".join(refused.text)
    assert "veo_ok_1" not in "".join(refused.text)

    # the token is exchanged for a cookie and the browser lands on /ops: the final DOM is the page itself
    dom = Dom(browser.dump_dom(f"{stack.base}/ops?token={ADMIN}"))
    assert "script" not in dom.tags and "img" not in dom.tags, dom.tags  # nothing injected
    archives = dom.rows("archives")
    assert len(archives) == 2
    by_task = {row[3]: row for row in archives}
    ok = by_task["veo_ok_1"]
    assert ok[1] == "archived" and ok[2] == "kie" and ok[4] == "succeeded" and ok[5] == "1"
    assert ok[6] == "390.6 KiB"
    assert ok[7].endswith("kie/veo_ok_1/manifest.json") and str(stack.tmp / "archive") in ok[7]
    assert by_task[SCRIPT_ID][1] == "dead_letter" and by_task[SCRIPT_ID][8] == "http_404"

    (failure,) = dom.rows("failures")
    assert failure[1] == "kie" and failure[2] == SCRIPT_ID and failure[3] == "http_404"
    assert "HTTP 404" in failure[4]

    deliveries = dom.rows("deliveries")
    assert [row[2] for row in deliveries] == [IMG_ID, SCRIPT_ID, "veo_ok_1"]  # newest first, shown verbatim
    assert all(row[4] == "accepted" for row in deliveries)
    assert dom.cards["queued"] == "1" and dom.cards["failed"] == "1" and dom.cards["finished"] == "1"
    assert dom.rows("tracked") == [["no tracked task pending"]]

    # the cookie persists in the profile: a later visit needs no token
    again = Dom(browser.dump_dom(stack.base + "/ops"))
    assert [row[3] for row in again.rows("archives")] == [row[3] for row in archives]

    shot = browser.screenshot(stack.base + "/ops", stack.tmp / "ops.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_token_exchange_sets_a_strict_http_only_cookie_and_drops_the_token(stack: Stack) -> None:
    exchange = httpx.get(f"{stack.base}/ops?token={ADMIN}")  # each request from a fresh, cookie-less client
    wrong = httpx.get(f"{stack.base}/ops?token=not-the-token")
    bearer = httpx.get(f"{stack.base}/ops", headers={"Authorization": f"Bearer {ADMIN}"})
    bad_bearer = httpx.get(f"{stack.base}/ops", headers={"Authorization": "Bearer nope"})
    with httpx.Client(base_url=stack.base, cookies={COOKIE: "v2.9999999999.AAAA.AAAA"}) as client:
        forged = client.get("/ops")
    with httpx.Client(base_url=stack.base, cookies={COOKIE: exchange.cookies[COOKIE]}) as client:
        with_cookie = client.get("/ops")
    assert with_cookie.status_code == 200 and "veo_ok_1" in with_cookie.text
    assert exchange.status_code == 303 and exchange.headers["location"] == "/ops"
    cookie = exchange.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=v2.") and ADMIN not in cookie
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ops"} <= flags
    assert "secure" not in flags  # plain http on loopback here; set behind https (X-Forwarded-Proto)
    assert exchange.headers["referrer-policy"] == "no-referrer"
    for refused in (wrong, bad_bearer, forged):
        assert refused.status_code == 401 and "veo_ok_1" not in refused.text
    assert bearer.status_code == 200 and "veo_ok_1" in bearer.text
    assert "script-src" not in bearer.headers["content-security-policy"]  # default-src 'none': no script runs
    assert bearer.headers["cache-control"] == "no-store"
    assert stack.receiver.alive()


# ------------------------------------------------------------------------------------------- in-process


app_settings = partial(settings_for, storage=StorageSettings(archive_url="./unused"))


def test_without_an_admin_token_the_page_is_disabled(redis_server) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(app_settings(redis_server)), client=("127.0.0.1", 40000)) as client:
        for response in (
            client.get("/ops"),
            client.get("/ops?token=anything"),
            client.get("/ops", headers={"Authorization": "Bearer anything"}),
        ):
            assert response.status_code == 404
            assert "set ADMIN_TOKEN" in response.text


def test_expired_cookie_is_refused(redis_server) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(app_settings(redis_server, admin_token=ADMIN))) as client:
        client.cookies.set(COOKIE, cookie_value(ADMIN, now=0, ttl_s=60))
        assert client.get("/ops").status_code == 401
        client.cookies.set(COOKIE, cookie_value("another-token", now=2e9))
        assert client.get("/ops").status_code == 401
        client.cookies.set(COOKIE, cookie_value(ADMIN, now=2e9))
        assert client.get("/ops").status_code == 200


def test_redis_down_still_renders_and_says_so(redis_server) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(app_settings(redis_server, admin_token=ADMIN))) as client:
        redis_server.stop()
        response = client.get("/ops", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 503 and "Redis unreachable" in response.text


def test_every_value_is_escaped(redis_server) -> None:  # type: ignore[no-untyped-def]
    hostile = '</td><script>alert("x")</script><a href="javascript:alert(1)">'
    rds = redis_server.client()
    rds.xadd(
        "veo:outcomes",
        {
            "outcome": "archived",
            "provider": hostile,
            "task_id": hostile,
            "status": hostile,
            "reason": hostile,
            "manifest": hostile,
            "location": hostile,
            "files": "[]",
            "bytes": "0",
        },
    )
    rds.xadd(
        "veo:events",
        {"provider": hostile, "task_id": hostile, "status": "x", "outcome": hostile, "job_id": hostile},
    )
    meta = {
        "provider": hostile,
        "task_id": hostile,
        "dead_letter": {"reason": hostile, "error": hostile, "at": hostile},
    }
    rds.hset("rq:job:j1", mapping={"meta": json.dumps(meta), "description": hostile})
    rds.zadd("rq:failed:veo-archiver", {"j1": 1})
    rds.zadd("veo:tracked", {json.dumps(["kie", hostile]): 1})
    rds.close()
    with TestClient(create_app(app_settings(redis_server, admin_token=ADMIN))) as client:
        page = client.get("/ops", headers={"Authorization": f"Bearer {ADMIN}"}).text
    dom = Dom(page)
    assert "script" not in dom.tags
    assert dom.links and all(href.startswith(("/ops", "#")) for href, _ in dom.links), dom.links
    assert dom.rows("archives")[0][3] == hostile and dom.rows("failures")[0][4] == hostile
    assert dom.rows("deliveries")[0][2] == hostile and dom.rows("tracked")[0][2] == hostile


def test_downloads_under_way_show_bytes_total_rate_and_eta(redis_server) -> None:  # type: ignore[no-untyped-def]
    rds = redis_server.client()
    rds.zadd("rq:wip:veo-archiver", {"job-a:exec-1": 4e9})
    clock = [1_800_000_000.0]
    writer = ProgressWriter(rds, "job-a", provider="kie", task_id=SCRIPT_ID, file=1, files=2, clock=lambda: clock[0])
    writer.update(0, 100_000_000)
    clock[0] += 4
    writer.update(40_000_000, 100_000_000)
    rds.close()
    with TestClient(create_app(app_settings(redis_server, admin_token=ADMIN))) as client:
        page = client.get("/ops", headers={"Authorization": f"Bearer {ADMIN}"}).text
    dom = Dom(page)
    assert "script" not in dom.tags
    assert dom.rows("downloads") == [
        ["job-a", "kie", SCRIPT_ID, "2/2", "38.1 MiB", "95.4 MiB", "10 MB/s", "6 s", "2027-01-15 08:00:04 UTC"]
    ]
    assert "Downloads under way (1)" in page


def test_a_refusal_is_json_for_an_api_client_and_a_page_for_a_browser(redis_server) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(app_settings(redis_server, admin_token=ADMIN))) as client:
        api = client.get("/ops", headers={"Authorization": "Bearer nope", "Accept": "application/json"})
        browser = client.get("/ops", headers={"Authorization": "Bearer nope", "Accept": "text/html,*/*;q=0.8"})
    assert api.status_code == browser.status_code == 401
    assert api.json()["reason"] == "unauthenticated" and "needs Authorization" in api.json()["msg"]
    assert browser.headers["content-type"].startswith("text/html") and "needs Authorization" in browser.text
    assert "unauthenticated" in browser.text and browser.headers["cache-control"] == "no-store"
    for response in (api, browser):
        assert response.headers["www-authenticate"].startswith("Bearer")


# ------------------------------------------------------------------------------------------- task pages, actions


def link_to(dom: Dom, text: str, prefix: str = "/ops/tasks/") -> str:
    return next(href for href, shown in dom.links if shown == text and href.startswith(prefix))


def test_a_link_from_ops_leads_to_the_task_page_with_its_files_and_hashes(stack: Stack) -> None:
    browser = Chromium(stack.tmp / "profile")
    ops = Dom(browser.dump_dom(f"{stack.base}/ops?token={ADMIN}"))
    href = link_to(ops, "veo_ok_1")
    assert href == "/ops/tasks/kie/veo_ok_1"
    assert httpx.get(stack.base + href, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200

    page = Dom(browser.dump_dom(stack.base + href))
    manifest = json.loads(stack.read("kie/veo_ok_1/manifest.json") or b"{}")
    (archived,) = manifest["files"]
    (row,) = page.rows("files")
    assert row[0].endswith(archived["key"]) and row[2] == str(archived["size"]) == "400000"
    assert row[3] == archived["sha256"] and len(row[3]) == 64
    (job,) = page.rows("task-jobs")
    assert job[1] == "succeeded" and job[2] == "finished"
    assert [d[4] for d in page.rows("task-deliveries")] == ["accepted"]
    assert "kie/veo_ok_1/manifest.json" in "".join(page.text) and archived["sha256"] in "".join(page.text)

    # the hostile task id: a link that round-trips, a page that shows it as text
    hostile = Dom(browser.dump_dom(stack.base + link_to(ops, SCRIPT_ID)))
    assert "script" not in hostile.tags and SCRIPT_ID in "".join(hostile.text)
    (letter,) = hostile.rows("task-jobs")
    assert letter[2] == "failed" and "http_404" in letter[8]

    shots = stack.tmp / "screenshots"
    shots.mkdir(exist_ok=True)
    pages = {"ops": "/ops?refresh=off", "task": href + "?refresh=off", "letter": link_to(ops, SCRIPT_ID)}
    for name, url in pages.items():
        shot = browser.screenshot(stack.base + url, shots / f"{name}.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def retry_form(client: httpx.Client) -> dict[str, str]:
    page = Dom(client.get("/ops").text)
    (form,) = [fields for action, fields in page.forms if action == "/ops/actions/retry"]
    return form


def test_retry_needs_the_session_and_its_csrf_token_and_is_recorded(stack: Stack) -> None:
    letters = stack.rds.zrange("rq:failed:veo-archiver", 0, -1)
    assert len(letters) == 1
    with httpx.Client(base_url=stack.base) as client:
        assert client.get(f"/ops?token={ADMIN}").status_code == 303  # the session cookie
        form = retry_form(client)
        assert form["job_id"] == letters[0].decode() and form["csrf"] and form["back"] == "/ops"
        without = {k: v for k, v in form.items() if k != "csrf"}
        assert client.post("/ops/actions/retry", data=without).status_code == 403
        assert client.post("/ops/actions/retry", data={**form, "csrf": form["csrf"][:-2] + "xx"}).status_code == 403
        with httpx.Client(base_url=stack.base) as other:  # another session's token is not this one's
            other.get(f"/ops?token={ADMIN}")
            foreign = retry_form(other)["csrf"]
        assert foreign != form["csrf"]
        assert client.post("/ops/actions/retry", data={**form, "csrf": foreign}).status_code == 403
        bearer = httpx.post(stack.base + "/ops/actions/retry", data=form, headers={"Authorization": f"Bearer {ADMIN}"})
        assert bearer.status_code == 403  # no session cookie, no action
        assert stack.rds.zcard("rq:failed:veo-archiver") == 1  # nothing done so far

        done = client.post("/ops/actions/retry", data=form)
        assert done.status_code == 303 and done.headers["location"] == "/ops"
        assert stack.rds.zcard("rq:failed:veo-archiver") == 0
        assert letters[0] in stack.rds.lrange("rq:queue:veo-archiver", 0, -1)
        page = Dom(client.get("/ops").text)
    (action,) = page.rows("actions")
    assert action[1:3] == ["retry", letters[0].decode()] and action[3].startswith("requeued (kie/")
    assert action[4] == "127.0.0.1"
