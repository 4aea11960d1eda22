"""Settings from the environment: defaults, validation with actionable errors, per-provider options."""

from __future__ import annotations

from dataclasses import replace

import pytest

from veo_archiver.errors import ConfigError
from veo_archiver.providers import NAMES, REGISTRY
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


def test_max_header_bytes() -> None:
    assert Settings.from_env({}).max_header_bytes == 64 * 1024
    assert Settings.from_env({"MAX_HEADER_BYTES": "8192"}).max_header_bytes == 8192
    for bad in ("lots", "100", str(64 * 1024 * 1024)):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"MAX_HEADER_BYTES": bad})
        assert "MAX_HEADER_BYTES" in caught.value.message


def test_repr_holds_no_secret() -> None:
    """Every secret set at once; none may show in ``repr`` (a traceback or a debug log prints it)."""
    env = {
        "REDIS_URL": "redis://:SECRET-redis-password@redis.example:6379/0",
        "KIE_WEBHOOK_HMAC_KEYS": "SECRET-kie-1,SECRET-kie-2",
        "CALLBACK_SIGNING_KEYS": "SECRET-signing",
        "STANDARD_WEBHOOK_SECRETS": "acme:whsec_SECRETstandard",
        "ADMIN_TOKEN": "SECRET-admin-token",
        "NOTIFY_SECRET": "whsec_SECRETnotify",
        "ARCHIVE_URL": "s3://bucket/prefix",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "SECRET-aws",
        **{REGISTRY[name].api_key_var: f"SECRET-{name}-api-key" for name in NAMES},
    }
    settings = Settings.from_env(env)
    storage = replace(
        settings.storage,
        azure_account_key="SECRET-azure-key",
        azure_sas_token="SECRET-azure-sas",  # noqa: S106 - a test value
        google_service_account_key='{"private_key": "SECRET-gcs"}',
    )
    settings = replace(settings, storage=storage)
    # each one really is set (a misspelt variable would make this test pass for nothing)
    held = [settings.redis_url, settings.admin_token, settings.notify_secret, storage.secret_access_key]
    held += [*settings.kie_hmac_keys, *settings.callback_signing_keys, *settings.standard_webhook_secrets["acme"]]
    held += [settings.providers[name].api_key for name in NAMES]
    assert all(value and "SECRET" in value for value in held), held
    text = repr(settings)
    assert "SECRET" not in text, text
    assert "max_header_bytes=65536" in text and "AKIAEXAMPLE" in text  # the rest still shows
