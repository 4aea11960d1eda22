"""workers/runner.run_one: RQ's loop quits on errors it does not expect (a connect timeout during an outage,
then its own teardown cannot reach Redis either). The worker starts again once Redis answers; it stops for
good only when a stop was asked for. Stand-in workers (RQ's timing cannot be forced), the loop is ours."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from rq.exceptions import StopRequested

from veo_archiver import redis_client
from veo_archiver.errors import ConfigError
from veo_archiver.settings import Settings
from workers import runner

pytestmark = pytest.mark.rq_facing


class StandIn:
    """What run_one uses of an ArchiveWorker: ``work`` and ``stop_wanted``."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.stop_wanted = False
        self.name = f"stand-in-{len(script)}"

    def work(self, **_: Any) -> bool:
        step = self.script.pop(0)
        if step == "redis-gone":
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if step == "stop":
            self.stop_wanted = True
        return False  # "quit": RQ's loop broke on an error it logged


class Redis:
    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        if not self.answers.pop(0):
            raise redis.ConnectionError("refused")
        return True


def run(monkeypatch: pytest.MonkeyPatch, script: list[str], answers: list[bool]) -> tuple[int, int, Redis]:
    connection = Redis(answers)
    made: list[StandIn] = []

    def make_worker(settings: Settings, conn: Any, name: str | None = None) -> StandIn:
        made.append(StandIn(script))
        return made[-1]

    monkeypatch.setattr(runner.context, "install", lambda settings: None)
    monkeypatch.setattr(runner, "connect", lambda url, **_: connection)
    monkeypatch.setattr(runner, "make_worker", make_worker)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    return runner.run_one(Settings()), len(made), connection


def test_a_worker_whose_loop_died_with_redis_starts_again_when_redis_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    code, workers, connection = run(monkeypatch, ["redis-gone", "quit", "stop"], [True, False, False, True, True])
    assert code == 0 and workers == 3  # up; gone → waits (3 pings) → again; quit on an error → again; stop → done
    assert connection.pings == 5


def test_a_stop_that_was_asked_for_is_final(monkeypatch: pytest.MonkeyPatch) -> None:
    code, workers, connection = run(monkeypatch, ["stop"], [True])
    assert (code, workers, connection.pings) == (0, 1, 1)  # the one PING at start


def test_a_stop_asked_for_while_waiting_for_redis_ends_the_wait() -> None:
    class Stopping:
        stop_wanted = False

    class Frozen:
        def ping(self) -> bool:
            raise StopRequested()  # what the previous worker's SIGTERM handler raises in the middle of a wait

    assert runner.wait_for_redis(Frozen(), Stopping(), longest_s=0.0) is False  # type: ignore[arg-type]


def test_a_worker_started_while_redis_is_down_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    code, workers, connection = run(monkeypatch, ["stop"], [False, False, False, True])
    assert (code, workers, connection.pings) == (0, 1, 4)  # no worker made before Redis answered


def test_a_bounded_wait_at_start_gives_up_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(0, 1000, 5))
    monkeypatch.setattr(redis_client.time, "monotonic", lambda: float(next(ticks)))
    connection = Redis([False] * 10)
    monkeypatch.setattr(runner.context, "install", lambda settings: None)
    monkeypatch.setattr(runner, "connect", lambda url, **_: connection)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    settings = Settings(redis_url="redis://:hunter2@10.0.0.9:6379/0", redis_start_timeout_s=12)
    with pytest.raises(
        ConfigError, match=r"redis://:\*\*\*@10.0.0.9:6379/0 did not answer within REDIS_START_TIMEOUT=12 s"
    ):
        runner.run_one(settings)


def test_a_redis_url_is_logged_without_its_password() -> None:
    assert redis_client.redacted("redis://:hunter2@10.0.0.9:6379/0") == "redis://:***@10.0.0.9:6379/0"
    assert redis_client.redacted("rediss://app:hunter2@r.example:6380/1") == "rediss://app:***@r.example:6380/1"
    assert redis_client.redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redis_client.redacted("unix:///run/redis.sock?db=0") == "unix:///run/redis.sock?db=0"
