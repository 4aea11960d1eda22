"""Settings from the environment: defaults, validation with actionable errors, per-provider options."""

from __future__ import annotations

import pytest

from veo_archiver.errors import ConfigError
from veo_archiver.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0" and s.storage.archive_url == "./archive"
    assert s.max_body_bytes == 1024 * 1024 and s.timestamp_tolerance_s == 300
    assert s.providers["evolink"].url_lifetime_s == 24 * 3600 and s.providers["kie"].api_key is None
    assert not any(p.open for p in s.providers.values())


def test_provider_options() -> None:
    s = Settings.from_env(
        {
            "OPEN_PROVIDERS": "apixo",
            "EVOLINK_API_KEY": "k",
            "EVOLINK_API_BASE": "http://127.0.0.1:9/",
            "DOWNLOAD_HOSTS_KIE": "tempfile.aiquickdraw.com,.aiquickdraw.com",
            "URL_LIFETIME_USEAPI": "3600",
        }
    )
    assert s.providers["apixo"].open and not s.providers["evolink"].open
    assert s.providers["evolink"].api_key == "k" and s.providers["evolink"].api_base == "http://127.0.0.1:9"
    kie = s.providers["kie"]
    assert kie.host_allowed("tempfile.aiquickdraw.com") and kie.host_allowed("file.aiquickdraw.com")
    assert not kie.host_allowed("aiquickdraw.com.evil.example") and not kie.host_allowed("evil.example")
    assert s.providers["apixo"].host_allowed("anything.example")  # no list: any public host
    assert s.providers["useapi"].url_lifetime_s == 3600


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"OPEN_PROVIDERS": "runway"}, "OPEN_PROVIDERS"),
        ({"KIE_ALLOW_UNSIGNED": "maybe"}, "KIE_ALLOW_UNSIGNED"),
        ({"MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES"),
        ({"DEDUPE_TTL": "60"}, "DEDUPE_TTL"),
        ({"ARCHIVE_URL": "ftp://bucket"}, "ARCHIVE_URL"),
        ({"ARCHIVE_URL": "s3://"}, "ARCHIVE_URL"),
        ({"AWS_ENDPOINT_URL": "http://s3.example.com"}, "AWS_ENDPOINT_URL"),
        ({"DOWNLOAD_ALLOW_HOSTS": "127.0.0.1"}, "DOWNLOAD_ALLOW_HOSTS"),
        ({"STANDARD_WEBHOOK_SECRETS": "whsec_abc"}, "STANDARD_WEBHOOK_SECRETS"),
        ({"REDIS_DURABILITY": "sometimes"}, "REDIS_DURABILITY"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert names in caught.value.message


def test_plain_http_endpoint_allowed_on_loopback_or_explicitly() -> None:
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:8333"}).storage.allow_http
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://s3.lan:8333", "AWS_ALLOW_HTTP": "true"}).storage.allow_http
    assert not Settings.from_env({"AWS_ENDPOINT_URL": "https://s3.example.com"}).storage.allow_http
