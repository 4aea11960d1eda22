"""Shared fixtures: real servers on loopback (see tests/servers.py)."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# Property tests: a small default so the fast lane stays fast; CI's whole run loads the large profile
# (.ci/run sets HYPOTHESIS_PROFILE=ci). No test hard-codes its own max_examples: choose a profile instead.
hypothesis_settings.register_profile("dev", max_examples=60)
hypothesis_settings.register_profile("ci", max_examples=1000)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The project is not installed into the venv: make `receiver`, `workers` and `tests.servers` importable.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.servers import Azurite, FakeGCS, RedisServer, SeaweedS3, azurite_binary, fake_gcs_binary  # noqa: E402


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the whole session (start-up takes seconds). Tests that kill it
    should start it again; ``s3_bucket`` also restarts it if a previous test left it down."""
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server (AOF on, appendfsync everysec) in this test's tmp_path."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def s3_bucket(seaweed: SeaweedS3) -> Iterator[str]:
    """A new, uniquely named, empty bucket in the session's SeaweedFS; deleted (with its objects) after."""
    if not seaweed.running:
        seaweed.start()
    name = seaweed.create_bucket(f"test-{uuid.uuid4().hex[:16]}")
    yield name
    if seaweed.running:
        with contextlib.suppress(Exception):  # best effort; the server allows deleting non-empty buckets
            seaweed.boto3_client().delete_bucket(Bucket=name)


def _require(find_binary: Callable[[], str]) -> None:
    """A server binary the test needs: missing fails the test in CI (``CI`` set: .ci/run installs it) and skips
    it elsewhere, with the install command as the reason."""
    try:
        find_binary()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite blob service for the session (node start-up takes a few seconds)."""
    _require(azurite_binary)
    with Azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def azure_container(azurite: Azurite) -> Iterator[str]:
    """A new, uniquely named, empty container in the session's Azurite; deleted (with its blobs) after."""
    if not azurite.running:
        azurite.start()
    name = azurite.create_container(f"test-{uuid.uuid4().hex[:16]}")
    yield name
    if azurite.running:
        with contextlib.suppress(Exception):
            azurite.delete_container(name)


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    """One fake-gcs-server for the session (reads only: see tests/servers.py FakeGCS)."""
    _require(fake_gcs_binary)
    with FakeGCS(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


#: fixtures that start a real server of seconds-long start-up (SeaweedFS, Azurite), and folders of whole-process
#: tests
_SLOW_FIXTURES = frozenset({"seaweed", "s3_bucket", "azurite", "azure_container"})
_SLOW_DIRS = ("e2e",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast lane (``pytest -m "not slow"``) is every test that needs neither SeaweedFS nor whole processes:
    tests under ``tests/e2e/`` and tests using the S3 fixtures are marked ``slow`` here, others by hand."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(Path(__file__).parent).parts
        if parts[0] in _SLOW_DIRS or _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
