"""What a running ``veo-archiver up`` tells the other commands run in the same folder.

While ``up`` runs it keeps ``.veo-archiver/up.json`` (mode 0600) in its working folder: its pid, the receiver's
URL, and the values it provided itself (the embedded Redis's ``REDIS_URL``, the development signing keys, the
admin token it minted). Every other command builds its environment with :func:`environ`: real environment
variables first; for a variable not set, the value from that file, if the file is ours (same user, not readable
by others) and its ``up`` is still alive. A stale file (``up`` crashed) is ignored with a one-line note.

When a value came from the file, one line on stderr says so, so nobody wonders which Redis a command read: once
per terminal session and folder (on a terminal, the first command of a shell session that uses it says it;
the session ids that saw it are kept in ``.veo-archiver/notes-seen``), every time with ``veo-archiver -v``, and
never for a command that only asks for keys quietly (``callback-url``). Scripts and pipes (stderr not a
terminal) get it only with ``-v``. When Redis cannot be reached, :func:`unreachable` says where the URL came
from (the environment, this file, or the default) and, when no ``up`` runs here, to start one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veo_archiver.settings import Settings

STATE_FILE = Path(".veo-archiver") / "up.json"
#: development signing keys, generated once in the data dir and kept across runs of `up`
DEV_ENV_FILE = "dev.env"
#: the only variables the file may provide (what ``up`` makes up itself when they are not set)
SHARED = ("REDIS_URL", "KIE_WEBHOOK_HMAC_KEYS", "CALLBACK_SIGNING_KEYS", "ADMIN_TOKEN")

#: terminal sessions that were told where the values came from, in this folder (see the module docstring)
NOTES_SEEN_FILE = Path(".veo-archiver") / "notes-seen"
NOTES_SEEN_KEPT = 64
_IGNORING = "veo-archiver: ignoring "

#: notes already printed by this process: a command that builds its settings twice says it once
_noted: set[str] = set()
#: ``veo-archiver -v``: print the note every time (set once by the entry point)
verbose = False

#: where `up` keeps its embedded Redis, development keys and spool (``--data-dir``)
DEFAULT_DATA_DIR = ".veo-archiver"
#: the loopback port `simulate` serves its videos on (``--serve-port``), allowed as a download host by `up`
SIMULATOR_PORT = 8765


@dataclass(frozen=True)
class UpState:
    pid: int
    receiver_url: str
    values: dict[str, str]
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "receiver_url": self.receiver_url, "env": self.values}


def dev_keys(data_dir: Path) -> dict[str, str]:
    """Development secrets kept in the data dir, generated once, so ``simulate`` can sign what ``up`` checks."""
    path = data_dir / DEV_ENV_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not name.startswith("#"):
                values[name.strip()] = value.strip()
    missing = [name for name in ("KIE_WEBHOOK_HMAC_KEYS", "CALLBACK_SIGNING_KEYS") if name not in values]
    if missing:
        for name in missing:
            values[name] = secrets.token_urlsafe(32)
        write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by this user only from its first byte: a new temporary file
    made 0600 by ``os.open`` (``O_EXCL``: never an older file with wider rights), then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs, and (where ``/proc`` tells) runs veo-archiver: a reused pid is not ``up``."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False  # /proc works and has no such process
    except OSError:
        pass
    else:
        return b"veo" in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write(path: Path, state: UpState) -> None:
    """Write atomically, readable by this user only (the file holds secrets)."""
    write_private(path, json.dumps(state.to_json(), indent=2) + "\n")


def remove(path: Path, pid: int) -> None:
    """Remove the file if it is still ``pid``'s (a later ``up`` may have replaced it)."""
    found = read(path)
    if found is not None and found.pid == pid:
        path.unlink(missing_ok=True)


def read(path: Path) -> UpState | None:
    """The file's content, or ``None`` when it is missing, unreadable, malformed or not safely ours."""
    try:
        info = path.stat()
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o077):
            return None
        raw = json.loads(path.read_text())
        pid, url, env = raw["pid"], raw.get("receiver_url", ""), raw.get("env", {})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or not isinstance(url, str) or not isinstance(env, dict):
        return None
    values = {k: v for k, v in env.items() if k in SHARED and isinstance(v, str) and v}
    return UpState(pid=pid, receiver_url=url, values=values, path=path)


def running(cwd: Path | None = None, *, alive: Callable[[int], bool] = pid_alive) -> UpState | None:
    """The state of the ``up`` running in ``cwd`` (default: the current folder), if one is."""
    state = read((cwd or Path.cwd()) / STATE_FILE)
    return state if state is not None and alive(state.pid) else None


def merge(
    environ: Mapping[str, str], cwd: Path | None = None, *, alive: Callable[[int], bool] = pid_alive
) -> tuple[dict[str, str], str | None]:
    """``environ`` completed from a live ``up``'s state file, and the note to print (``None``: nothing to say)."""
    env = dict(environ)
    path = (cwd or Path.cwd()) / STATE_FILE
    if not path.exists():
        return env, None
    state = read(path)
    if state is None:
        return env, f"veo-archiver: ignoring {path}: not a state file of this user's `veo-archiver up`"
    if not alive(state.pid):
        return env, f"veo-archiver: ignoring {path}: its `veo-archiver up` (pid {state.pid}) is not running"
    used = [name for name, value in state.values.items() if not environ.get(name)]
    for name in used:
        env[name] = state.values[name]
    if not used:
        return env, None
    up = f"`veo-archiver up` (pid {state.pid})"
    if "REDIS_URL" in used:
        return env, f"veo-archiver: using the embedded Redis of {up} at {state.values['REDIS_URL']}"
    return env, f"veo-archiver: using {', '.join(used)} of {up}, from {path}"


def environ(*, quiet: bool = False) -> dict[str, str]:
    """This process's environment completed from a live ``up`` in the current folder; says so on stderr as the
    module docstring tells (a file ignored, always; ``quiet``: a value used, only with ``-v``)."""
    env, note = merge(os.environ)
    if note is not None and note not in _noted and _should_say(note, quiet=quiet):
        _noted.add(note)
        print(note, file=sys.stderr, flush=True)
    return env


def _should_say(note: str, *, quiet: bool) -> bool:
    if note.startswith(_IGNORING) or verbose:
        return True
    if quiet or not _stderr_is_terminal():
        return False
    return first_in_session(note, Path.cwd())


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def first_in_session(note: str, cwd: Path, session: int | None = None) -> bool:
    """Whether this terminal session (``os.getsid``: one per shell) was not yet shown ``note`` in ``cwd``;
    records that it now is. A note names its ``up``'s pid, so a new ``up`` is told again."""
    try:
        sid = os.getsid(0) if session is None else session
    except OSError:
        return True
    line = f"{sid} {hashlib.sha256(note.encode()).hexdigest()[:16]}"
    path = cwd / NOTES_SEEN_FILE
    try:
        seen = path.read_text().splitlines()
    except OSError:
        seen = []
    if line in seen:
        return False
    try:
        write_private(path, "".join(f"{entry}\n" for entry in [*seen[-NOTES_SEEN_KEPT + 1 :], line]))
    except OSError:
        pass  # a folder we cannot write to: the note is said every time, as before
    return True


def settings(*, quiet: bool = False, **overrides: object) -> Settings:
    """The one way a command builds its settings."""
    return Settings.from_env(environ(quiet=quiet), **overrides)


def redis_origin(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None, *, alive: Callable[[int], bool] = pid_alive
) -> tuple[str, UpState | None]:
    """Where a command's ``REDIS_URL`` came from, in words, and the ``up`` running in ``cwd`` (``None``: none)."""
    environ = os.environ if environ is None else environ
    state = running(cwd, alive=alive)
    if environ.get("REDIS_URL"):
        return "REDIS_URL, set in the environment", state
    if state is not None and state.values.get("REDIS_URL"):
        return f"the embedded Redis of `veo-archiver up` (pid {state.pid}), recorded in {STATE_FILE}", state
    return "the default: REDIS_URL is not set", state


def unreachable(
    url: str,
    error: str,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    alive: Callable[[int], bool] = pid_alive,
) -> str:
    """The message for a Redis that does not answer: where the command looked, why that URL, what to do."""
    from veo_archiver.logs import scrub  # a password in the URL stays out of the message

    folder = (cwd or Path.cwd()).resolve()
    origin, state = redis_origin(environ, folder, alive=alive)
    text = f"cannot reach Redis at {scrub(url)} ({origin}): {error.strip()}"
    if state is None:
        return (
            f"{text}\n  no `veo-archiver up` runs in this folder ({folder}): start `veo-archiver up` here first "
            "(in another terminal), or set REDIS_URL to a running Redis"
        )
    return f"{text}\n  `veo-archiver up` (pid {state.pid}) runs in this folder: is its Redis still up? (see its log)"
