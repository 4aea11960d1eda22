"""The README's first command: `veo-archiver up` on embedded defaults, a simulated provider, and a clean
Ctrl-C. Real processes: the CLI starts its own Redis server, the receiver and a worker; then `status` and
`show`, run in the same folder with no variable set, find that Redis through ``.veo-archiver/up.json``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.procs import REPO, wait_for
from tests.servers import free_port
from veo_archiver.cli import local_env
from veo_archiver.cli.local_env import STATE_FILE, UpState

TASK = "veo_firstrun"


def bare_env() -> dict[str, str]:
    """What a new user's shell has: no REDIS_URL, no keys, no ADMIN_TOKEN, no LOG_FORMAT."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env["PYTHONPATH"] = str(REPO)
    return env


def cli(cwd: Path, env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veo_archiver", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_up_then_simulate_then_status_and_show_in_the_same_folder_then_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = bare_env()
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "veo_archiver", "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def up_log() -> str:
        return (tmp_path / "up.log").read_text()

    try:
        wait_for(lambda: "veo-archiver is up" in up_log(), 60, what="up to start")
        wait_for(lambda: "Listening on" in up_log(), 60, what="the worker")
        state_file = tmp_path / STATE_FILE
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        assert json.loads(state_file.read_text())["pid"] == up.pid
        ops_url = re.search(rf"http://127\.0\.0\.1:{port}/ops\?token=[A-Za-z0-9_-]{{20,}}", up_log())
        assert ops_url, up_log()
        assert "veo-archiver status" in up_log()
        # not a terminal: the children log JSON lines
        assert any(line.startswith('{"ts"') for line in up_log().splitlines()), up_log()

        for provider in ("kie", "evolink"):
            to = f"http://127.0.0.1:{port}" + ("/callbacks/kie" if provider == "kie" else "")
            argv = ["--log-level", "WARNING", "simulate", provider, "--to", to, "--wait", "60", "--size-kib", "300"]
            done = cli(tmp_path, env, *argv, *(["--task-id", TASK] if provider == "kie" else []))
            assert done.returncode == 0, done.stdout + done.stderr + up_log()
            assert "archived:" in done.stdout
        failing = ["--log-level", "WARNING", "simulate", "kie", "--to", f"http://127.0.0.1:{port}/callbacks/kie"]
        done = cli(tmp_path, env, *failing, "--fail", "500", "--task-id", "veo_fails", "--wait", "60")
        assert done.returncode == 0, done.stdout + done.stderr  # the failure asked for, recorded
        assert "archived:" not in done.stdout and "did not succeed" in done.stdout, done.stdout
        assert "the failure is recorded in" in done.stdout
        manifests = sorted(m for m in (tmp_path / "archive").rglob("manifest.json") if "veo_fails" not in m.parts)
        assert [m.parts[-3] for m in manifests] == ["evolink", "kie"]
        for manifest in manifests:
            body = json.loads(manifest.read_text())
            assert body["status"] == "succeeded" and body["files"][0]["size"] == 300 * 1024

        status = cli(tmp_path, env, "status", "--json")
        assert status.returncode == 0, status.stderr
        found = f"using the embedded Redis of `veo-archiver up` (pid {up.pid}) at unix://"
        assert found not in status.stderr  # stderr is not a terminal: the note only with -v
        status = cli(tmp_path, env, "-v", "status", "--json")
        assert found in status.stderr and "redis.sock" in status.stderr
        report = json.loads(status.stdout)
        assert report["finished"] >= 2 and report["workers"], report

        # the banner's line for RQ's own tools works as printed, pasted into a shell (the URL has a `?`)
        rq_line = re.search(r"RQ's own tools: +(rq info -u .+)$", up_log(), re.MULTILINE)
        assert rq_line, up_log()
        rq_bin = str(Path(sys.executable).with_name("rq"))
        rq_info = subprocess.run(
            ["bash", "-c", rq_bin + rq_line.group(1).removeprefix("rq")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert rq_info.returncode == 0, rq_info.stdout + rq_info.stderr
        finished = re.search(r"^veo-archiver \| 0, 0 executing, (\d+) finished", rq_info.stdout, re.MULTILINE)
        assert finished and int(finished.group(1)) >= 2, rq_info.stdout

        show = cli(tmp_path, env, "-v", "show", "kie", TASK, "--json")
        assert show.returncode == 0, show.stderr
        assert found in show.stderr
        story = json.loads(show.stdout)
        assert [job["state"] for job in story["jobs"]] == ["finished"], story
        assert story["manifest"]["status"] == "succeeded" and story["deliveries"]

        with httpx.Client(timeout=15) as client:
            opened = client.get(ops_url.group(0))
            assert opened.status_code == 303 and "veo_ops" in opened.cookies
            page = client.get(f"http://127.0.0.1:{port}/ops")  # the cookie, not the token
            assert page.status_code == 200 and TASK in page.text

        if shutil.which("ffprobe"):
            video = next(p for p in (tmp_path / "archive").rglob("*.mp4") if "kie" in p.parts)
            probe = subprocess.run(
                [
                    "ffprobe",
                    "-v",
                    "error",
                    "-select_streams",
                    "v",
                    "-show_entries",
                    "stream=codec_type,codec_name",
                    "-of",
                    "json",
                    str(video),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert [s["codec_type"] for s in json.loads(probe.stdout)["streams"]] == ["video"], probe.stdout
    finally:
        stopping_at = len(up_log())
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=120)
        log.close()
    output = up_log()
    assert code == 0, output
    stop_lines = output[stopping_at:]  # a normal Ctrl-C: no warning, no error, no traceback
    assert '"level":"warning"' not in stop_lines and '"level":"error"' not in stop_lines, stop_lines
    assert "Traceback" not in stop_lines, stop_lines
    assert "veo-archiver: stopped" in output
    assert not (tmp_path / STATE_FILE).exists()
    redis_dir = tmp_path / ".veo-archiver" / "redis"
    assert (redis_dir / "appendonlydir").is_dir() or list(redis_dir.glob("appendonly*"))
    assert not any(p.name == "redis.sock" for p in redis_dir.iterdir())


# --------------------------------------------------------------------------------------------- up.json lookup

PROVIDED = {"REDIS_URL": "unix:///x/redis.sock?db=0", "ADMIN_TOKEN": "dev-token", "KIE_WEBHOOK_HMAC_KEYS": "k"}


def write_state(folder: Path, pid: int = 4242) -> Path:
    path = folder / STATE_FILE
    local_env.write(path, UpState(pid, "http://127.0.0.1:8000", PROVIDED, path))
    return path


def test_a_live_up_fills_in_what_is_not_set_and_says_so(tmp_path: Path) -> None:
    path = write_state(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env, note = local_env.merge({"PATH": "/bin"}, tmp_path, alive=lambda pid: pid == 4242)
    assert env == {"PATH": "/bin", **PROVIDED}
    assert note == "veo-archiver: using the embedded Redis of `veo-archiver up` (pid 4242) at unix:///x/redis.sock?db=0"


def test_a_variable_that_is_set_wins_over_the_file(tmp_path: Path) -> None:
    write_state(tmp_path)
    mine = {"REDIS_URL": "redis://10.0.0.5:6379/0", "ADMIN_TOKEN": "mine"}
    env, note = local_env.merge(mine, tmp_path, alive=lambda pid: True)
    assert env == {**mine, "KIE_WEBHOOK_HMAC_KEYS": "k"}
    assert note is not None and "KIE_WEBHOOK_HMAC_KEYS" in note and "Redis" not in note
    env, note = local_env.merge({**mine, "KIE_WEBHOOK_HMAC_KEYS": "x"}, tmp_path, alive=lambda pid: True)
    assert env == {**mine, "KIE_WEBHOOK_HMAC_KEYS": "x"} and note is None


def test_a_stale_or_foreign_file_is_ignored_with_a_note(tmp_path: Path) -> None:
    assert local_env.merge({}, tmp_path) == ({}, None)  # no file: nothing to say
    path = write_state(tmp_path)
    env, note = local_env.merge({}, tmp_path, alive=lambda pid: False)
    assert env == {} and note is not None and "(pid 4242) is not running" in note
    path.chmod(0o644)  # readable by others: not one `up` wrote
    env, note = local_env.merge({}, tmp_path, alive=lambda pid: True)
    assert env == {} and note is not None and "ignoring" in note


def test_pid_alive_needs_a_running_veo_archiver_process(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "veo-archiver"])
    try:
        wait_for(lambda: local_env.pid_alive(sleeper.pid), 30, what="the sleeper")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not local_env.pid_alive(sleeper.pid)
    if not Path("/proc/self").exists():
        return
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    cmdline = Path(f"/proc/{other.pid}/cmdline")
    try:
        wait_for(lambda: b"time.sleep" in cmdline.read_bytes(), 30, what="the other process")
        assert not local_env.pid_alive(other.pid)  # alive, but not veo-archiver: a reused pid is not `up`
    finally:
        other.kill()
        other.wait()


def test_remove_leaves_a_file_another_up_wrote(tmp_path: Path) -> None:
    path = write_state(tmp_path, pid=4242)
    local_env.remove(path, 999)
    assert path.exists()
    local_env.remove(path, 4242)
    assert not path.exists()
