"""workers/runner.run_one: RQ's loop quits on errors it does not expect (a connect timeout during an outage,
then its own teardown cannot reach Redis either). The worker starts again once Redis answers; it stops for
good only when a stop was asked for. Stand-in workers (RQ's timing cannot be forced), the loop is ours."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from rq.exceptions import StopRequested

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
    monkeypatch.setattr(runner, "connect", lambda url, socket_timeout=None: connection)
    monkeypatch.setattr(runner, "make_worker", make_worker)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    return runner.run_one(Settings()), len(made), connection


def test_a_worker_whose_loop_died_with_redis_starts_again_when_redis_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    code, workers, connection = run(monkeypatch, ["redis-gone", "quit", "stop"], [False, False, True, True])
    assert code == 0 and workers == 3  # gone → waits (3 pings) → again; quit on an error → again; stop → done
    assert connection.pings == 4


def test_a_stop_that_was_asked_for_is_final(monkeypatch: pytest.MonkeyPatch) -> None:
    code, workers, connection = run(monkeypatch, ["stop"], [])
    assert (code, workers, connection.pings) == (0, 1, 0)


def test_a_stop_asked_for_while_waiting_for_redis_ends_the_wait() -> None:
    class Stopping:
        stop_wanted = False

    class Frozen:
        def ping(self) -> bool:
            raise StopRequested()  # what the previous worker's SIGTERM handler raises in the middle of a wait

    assert runner.wait_for_redis(Frozen(), Stopping(), longest_s=0.0) is False  # type: ignore[arg-type]
