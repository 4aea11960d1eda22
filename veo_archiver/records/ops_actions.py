"""What operators did from the ops page (retry a dead letter, sweep a tracked task now): the one home of the
record. The receiver writes one entry per action, done or refused (:mod:`receiver.ops_actions`); the page reads
the latest back (:func:`veo_archiver.queue_view.read_ops`).

``veo:ops:actions`` (:data:`veo_archiver.redis_keys.OPS_ACTIONS_LIST`) keeps the newest :data:`MAX_ACTIONS`
entries, newest first, each one JSON object::

    {"v": 1, "at": <epoch s>, "action": "retry" | "sweep", "target": <job id, or provider/task id>,
     "result": "<what happened, in a few words>", "ok": true | false, "remote": <client address> | null}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from veo_archiver import redis_keys
from veo_archiver.text import text

VERSION = 1
MAX_ACTIONS = 200
FIELD_CHARS = 600
RETRY = "retry"
SWEEP = "sweep"


@dataclass(frozen=True)
class OpsAction:
    at: float
    action: str
    target: str
    result: str
    ok: bool
    remote: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "at": round(self.at, 3),
            "action": self.action,
            "target": self.target[:FIELD_CHARS],
            "result": self.result[:FIELD_CHARS],
            "ok": self.ok,
            "remote": self.remote,
        }


def encode(action: OpsAction) -> str:
    return json.dumps(action.to_json(), separators=(",", ":"))


def decode(raw: bytes | str) -> OpsAction | None:
    """One entry of the list; None for anything this version did not write (never raises)."""
    try:
        value = json.loads(raw)
        if not isinstance(value, dict) or value.get("v") != VERSION:
            return None
        remote = value.get("remote")
        return OpsAction(
            at=float(value["at"]),
            action=str(value["action"]),
            target=str(value["target"]),
            result=str(value["result"]),
            ok=bool(value["ok"]),
            remote=None if remote is None else text(remote),
        )
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def queue_write(pipe: Any, action: OpsAction) -> None:
    """Queue the write of one action on a pipeline (sync or async)."""
    pipe.lpush(redis_keys.OPS_ACTIONS_LIST, encode(action))
    pipe.ltrim(redis_keys.OPS_ACTIONS_LIST, 0, MAX_ACTIONS - 1)
