"""A CLI that guides: the help, the version, the exit codes, the messages a newcomer meets first.

Real processes where it is about processes (a busy port, a folder without `up`, a folder with one), the parser
and the renderers in-process for the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.procs import REPO, wait_for
from tests.servers import RedisServer, refused_port
from veo_archiver.cli import local_env, main, ops, output, simulate, story
from veo_archiver.cli.local_env import STATE_FILE, UpState
from veo_archiver.providers import NAMES
from veo_archiver.queue_view import TaskJob


def bare_env(**extra: str) -> dict[str, str]:
    """What a new user's shell has: no REDIS_URL, no keys, no LOG_FORMAT."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def cli(
    cwd: Path, *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veo_archiver", *argv],
        cwd=cwd,
        env=env or bare_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------------- up --port


def test_up_on_a_busy_port_says_which_and_how_to_pick_another_before_anything_else(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = cli(tmp_path, "up", "--port", str(port), timeout=30)
        took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert took < 15
    assert f"port {port} on 127.0.0.1 is not available" in done.stderr and "`veo-archiver up --port " in done.stderr
    assert "is up" not in done.stdout + done.stderr and "token=" not in done.stdout + done.stderr
    assert not (tmp_path / ".veo-archiver").exists()  # no state file, no development keys, no Redis started


# --------------------------------------------------------------------------------------------- first contact


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    done = cli(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"veo-archiver {metadata.version('veo-archiver')}"


def test_status_in_an_empty_folder_says_where_it_looked_and_names_up(tmp_path: Path) -> None:
    if _listening("127.0.0.1", 6379):
        pytest.skip("a Redis answers on the default 127.0.0.1:6379 here: the default is not unreachable")
    done = cli(tmp_path, "status")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot reach Redis at redis://127.0.0.1:6379/0 (the default: REDIS_URL is not set)" in done.stdout
    assert f"no `veo-archiver up` runs in this folder ({tmp_path.resolve()})" in done.stdout
    assert "start `veo-archiver up` here first" in done.stdout
    failed = cli(tmp_path, "failed")  # one convention: every command says the same, with the same code
    assert failed.returncode == 2 and "start `veo-archiver up` here first" in failed.stderr


def test_an_unknown_provider_is_refused_everywhere_with_the_known_ones(tmp_path: Path) -> None:
    for argv in (["show", "foo", "bar"], ["failed", "--provider", "foo"], ["replay", "foo", "t"]):
        done = cli(tmp_path, *argv)
        assert done.returncode == 2, argv
        assert "unknown provider 'foo'" in done.stderr and ", ".join(NAMES) in done.stderr, done.stderr
    assert cli(tmp_path, "track", "foo", "t").returncode == 2
    assert cli(tmp_path, "callback-url", "foo").returncode == 2


def _parsers(
    parser: argparse.ArgumentParser, path: str = "veo-archiver"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:  # argparse has no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_has_a_description_and_every_option_its_help() -> None:
    parser = main.build_parser()
    assert parser.description and "``" not in parser.description
    assert "exit codes: 0 done" in (parser.epilog or "")
    missing = []
    for path, command in _parsers(parser):
        if not command.description:
            missing.append(f"{path}: no description")
        for action in command._actions:
            if not action.help and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, missing
    assert "`veo-archiver COMMAND --help`" in parser.format_help()


# --------------------------------------------------------------------------------------------- up's folder


@pytest.fixture
def fake_up(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A folder with a live `up` in its state file: a sleeping process whose command line names veo-archiver."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "veo-archiver"])
    try:
        wait_for(lambda: local_env.pid_alive(sleeper.pid), 30, what="the sleeper")
        yield tmp_path, sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()


def _write_up(folder: Path, pid: int, values: dict[str, str]) -> None:
    path = folder / STATE_FILE
    local_env.write(path, UpState(pid, "http://127.0.0.1:8123", values, path))


def test_callback_url_in_an_up_folder_uses_its_receiver_and_says_nothing_about_redis(fake_up: tuple[Path, int]) -> None:
    folder, pid = fake_up
    _write_up(folder, pid, {"REDIS_URL": "unix:///nowhere/redis.sock?db=0", "CALLBACK_SIGNING_KEYS": "k" * 32})
    done = cli(folder, "callback-url", "apixo")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("http://127.0.0.1:8123/callbacks/apixo?token=v1.apixo.")
    assert "embedded Redis" not in done.stderr and "using" not in done.stderr
    assert "PUBLIC_BASE_URL" in done.stderr  # the one line: loopback URL, set the public one for a provider


def test_the_embedded_redis_note_only_with_v_off_a_terminal_and_an_unreachable_up_redis_says_so(
    fake_up: tuple[Path, int], redis_server
) -> None:  # type: ignore[no-untyped-def]
    folder, pid = fake_up
    _write_up(folder, pid, {"REDIS_URL": redis_server.url})
    quiet = cli(folder, "status", "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["queue"] and "using" not in quiet.stderr  # stderr is a pipe: no note
    told = cli(folder, "-v", "status", "--json")
    assert f"using the embedded Redis of `veo-archiver up` (pid {pid})" in told.stderr
    redis_server.stop()
    down = cli(folder, "show", "kie", "t1")
    assert down.returncode == 2
    assert f"(the embedded Redis of `veo-archiver up` (pid {pid}), recorded in {STATE_FILE})" in down.stderr
    assert f"`veo-archiver up` (pid {pid}) runs in this folder" in down.stderr


def test_the_note_is_said_once_per_terminal_session_and_again_for_a_new_up(tmp_path: Path) -> None:
    note = "veo-archiver: using the embedded Redis of `veo-archiver up` (pid 4242) at unix:///x"
    assert local_env.first_in_session(note, tmp_path, session=100)
    assert not local_env.first_in_session(note, tmp_path, session=100)
    assert local_env.first_in_session(note, tmp_path, session=101)  # another terminal
    assert local_env.first_in_session(note.replace("4242", "4343"), tmp_path, session=100)  # another `up`


# --------------------------------------------------------------------------------------------- words


def test_a_job_line_says_what_happened_to_the_job_and_to_the_task_apart() -> None:
    failed = TaskJob(job_id="j", status="succeeded", state="failed", replay=False)
    assert ops.job_line(failed) == "archive job failed; provider status: succeeded"
    done = TaskJob(job_id="j", status="succeeded", state="finished", replay=True)
    assert ops.job_line(done) == "archived (replay); provider status: succeeded"
    recorded = TaskJob(job_id="j", status="failed", state="finished", replay=False)
    assert ops.job_line(recorded) == "failure recorded; provider status: failed"


def test_errors_are_cut_at_a_word_and_a_dead_letter_is_wrapped_whole() -> None:
    error = "the server answered HTTP 404 Not Found for https://cdn.example.com/videos/abc.mp4 " + "after " * 20
    clipped = output.clip(error, 60)
    assert clipped.endswith("…") and len(clipped) <= 60
    assert error.startswith(clipped[:-1]) and error[len(clipped) - 1] == " "  # the cut is at a space
    job = TaskJob(
        job_id="j",
        status="succeeded",
        state="failed",
        replay=False,
        dead_letter={"reason": "http_404", "at": "2026-01-01T00:00:00Z", "error": error},
    )
    told = story.TaskStory("kie", "t", None, [], [job], "kie/t/manifest.json", None, None, [], None)
    lines = ops.render_story(told, time.time())
    start = next(n for n, line in enumerate(lines) if "DEAD LETTER http_404" in line)
    end = next(n for n, line in enumerate(lines) if "requeue with" in line)
    assert all(line.startswith(" " * 8) and len(line) <= 100 for line in lines[start + 1 : end])
    wrapped = " ".join(line.strip() for line in lines[start + 1 : end])
    assert wrapped == " ".join(error.split())


def test_a_failure_manifest_never_reads_as_archived(capsys: pytest.CaptureFixture[str]) -> None:
    manifest = {"status": "failed", "files": [], "failure": {"code": "500", "message": None}}
    assert simulate.print_manifest(manifest, "/a/kie/t/manifest.json", expect_failure=True) == 0
    out = capsys.readouterr().out
    assert "archived:" not in out and "did not succeed" in out and '"code": "500"' in out
    assert simulate.print_manifest(manifest, "/a/kie/t/manifest.json", expect_failure=False) == 1


def test_up_names_an_external_redis_without_its_password_and_says_when_it_does_not_answer(
    redis_server: RedisServer,
) -> None:
    from veo_archiver.cli.up import external_redis_line

    assert external_redis_line(redis_server.url) == f"REDIS_URL {redis_server.url}"
    with refused_port() as port:
        line = external_redis_line(f"redis://:s3cret@127.0.0.1:{port}/2")
    assert line.startswith(f"REDIS_URL redis://:***@127.0.0.1:{port}/2 (not answering yet:"), line
    assert "s3cret" not in line and "spool" in line


def test_submit_names_the_callers_mistake_before_it_needs_redis(tmp_path: Path) -> None:
    env = bare_env(KIE_WEBHOOK_HMAC_KEYS="k", KIE_API_KEY="a", APIXO_API_KEY="b", CALLBACK_SIGNING_KEYS="c" * 32)
    with refused_port() as port:
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        base = ["submit", "--base", "http://127.0.0.1:1"]
        for argv, said in (
            (["kie", "generate", "--json", "-"], "body: expected a JSON object"),
            (["kie", "extend", "--json", "-"], "body.taskId: an extend names the kie.ai task it continues"),
            (["apixo", "4k", "--json", "-"], "4k"),
        ):
            given = "not json" if argv[1] == "generate" else "{}"
            done = subprocess.run(
                [sys.executable, "-m", "veo_archiver", *base[:1], *argv, *base[1:]],
                input=given, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 2, done.stdout + done.stderr
            assert said in done.stderr and "Redis" not in done.stderr, done.stderr
