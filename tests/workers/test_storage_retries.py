"""How long one store request may retry inside a job attempt (``STORAGE_RETRIES``, ``STORAGE_RETRY_TIMEOUT``).

obstore's default is 10 retries up to 15 s apart, about 3 minutes in all: a worker would sit inside one HEAD
through an outage, unseen by the job's attempts, its metrics and its own backoff. Every store is built with
the bounded retries instead, and a failure reads as one line for operators.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.servers import refused_port
from veo_archiver.errors import ConfigError
from veo_archiver.settings import Settings
from workers.storage import StorageUnavailable, open_archive


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """A loopback port that is bound but never listens: every connection to it is refused."""
    with refused_port() as port:
        yield f"http://127.0.0.1:{port}"


def s3_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "ARCHIVE_URL": "s3://videos/archive",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        **extra,
    }


def test_defaults_are_three_retries_within_thirty_seconds() -> None:
    storage = Settings.from_env({}).storage
    assert (storage.retries, storage.retry_timeout_s) == (3, 30)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STORAGE_RETRIES": "11"}, "STORAGE_RETRIES=11: must be at most 10"),
        ({"STORAGE_RETRIES": "-1"}, "STORAGE_RETRIES=-1: must be at least 0"),
        ({"STORAGE_RETRIES": "three"}, "STORAGE_RETRIES='three': expected a whole number"),
        ({"STORAGE_RETRY_TIMEOUT": "0"}, "STORAGE_RETRY_TIMEOUT=0: must be at least 1"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.message == expected


@pytest.mark.parametrize("retries", [0, 1, 4])
def test_a_refused_s3_request_gives_up_after_the_set_retries(refused_endpoint: str, retries: int) -> None:
    env = s3_env(refused_endpoint, STORAGE_RETRIES=str(retries), STORAGE_RETRY_TIMEOUT="20")
    archive = open_archive(Settings.from_env(env).storage)
    with pytest.raises(StorageUnavailable) as caught:
        archive.head("kie/t1/0.mp4")
    message = caught.value.message
    assert message.startswith("reading kie/t1/0.mp4: "), message
    if retries:
        assert f"after {retries} retries, max_retries: {retries}, retry_timeout: 20s" in message, message
    else:  # obstore names no retries when it made none
        assert "HTTP error: error sending request" in message and "retries" not in message, message
    assert "\n" not in message and "Debug source" not in message, message


def test_writes_and_listings_give_up_the_same_way(refused_endpoint: str) -> None:
    archive = open_archive(Settings.from_env(s3_env(refused_endpoint, STORAGE_RETRIES="1")).storage)
    calls = {
        "writing kie/t2/manifest.json": lambda: archive.put_bytes("kie/t2/manifest.json", b"{}"),
        "writing kie/t2/0.mp4": lambda: archive.put_stream("kie/t2/0.mp4", iter([b"x" * 1024])),
        "listing kie": lambda: list(archive.iter_objects("kie")),
    }
    for what, call in calls.items():
        with pytest.raises(StorageUnavailable) as caught:
            call()
        assert caught.value.message.startswith(f"{what}: "), caught.value.message
        assert "max_retries: 1" in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize(
    "env",
    [
        {"ARCHIVE_URL": "az://veo/archive", "AZURE_STORAGE_USE_EMULATOR": "true"},
        {"ARCHIVE_URL": "gs://videos/veo", "GOOGLE_BASE_URL": "http://127.0.0.1:4443"},
        s3_env("http://127.0.0.1:8333"),
    ],
    ids=["az", "gs", "s3"],
)
def test_every_store_is_built_with_the_bounded_retries(env: dict[str, str]) -> None:
    archive = open_archive(Settings.from_env({**env, "STORAGE_RETRIES": "2", "STORAGE_RETRY_TIMEOUT": "45"}).storage)
    config = archive._store.retry_config
    assert config is not None
    assert config["max_retries"] == 2 and config["retry_timeout"] == timedelta(seconds=45)
    assert config["backoff"]["max_backoff"] == timedelta(seconds=2)
