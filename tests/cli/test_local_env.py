"""Files ``up`` writes with secrets in them (``dev.env``, ``up.json``) are this user's alone from their first
byte: created 0600 by ``os.open`` (never written wider and narrowed after), even under umask 000 and over an
older file with wider rights."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from veo_archiver.cli import local_env


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every file ``os.open`` creates, with its mode the moment it exists (before a byte is written)."""
    seen: list[tuple[str, int]] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT:
            seen.append((str(path), stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    old_umask = os.umask(0)  # nothing narrows what the code asks for
    try:
        yield seen
    finally:
        os.umask(old_umask)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dev_env_is_created_0600(tmp_path: Path, created: list[tuple[str, int]]) -> None:
    keys = local_env.dev_keys(tmp_path / "data")
    path = tmp_path / "data" / local_env.DEV_ENV_FILE
    assert _mode(path) == 0o600
    assert created and all(mode == 0o600 for _, mode in created), created
    assert local_env.dev_keys(tmp_path / "data") == keys  # read back, not made again
    assert sorted(p.name for p in path.parent.iterdir()) == [local_env.DEV_ENV_FILE]  # no temporary left


def test_up_json_replaces_an_older_wider_file_with_a_0600_one(tmp_path: Path, created: list[tuple[str, int]]) -> None:
    path = tmp_path / ".veo-archiver" / "up.json"
    path.parent.mkdir()
    path.write_text("{}")
    path.chmod(0o644)
    state = local_env.UpState(
        pid=os.getpid(), receiver_url="http://127.0.0.1:1", values={"ADMIN_TOKEN": "t0ken"}, path=path
    )
    local_env.write(path, state)
    assert _mode(path) == 0o600
    assert created and all(mode == 0o600 for _, mode in created), created
    found = local_env.read(path)
    assert found is not None and found.values == {"ADMIN_TOKEN": "t0ken"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["up.json"]
