"""One frozen Settings object per process, built once from the environment by the entry point.

Every knob has an environment variable, documented in the README's configuration table. Nothing reads
``os.environ`` at import time: ``Settings.from_env(os.environ)`` is called by the CLI and handed down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from veo_archiver.env_values import env_bool, env_int, split_list
from veo_archiver.errors import ConfigError
from veo_archiver.providers import NAMES, REGISTRY
from veo_archiver.storage_settings import StorageSettings, storage_from_env
from veo_archiver.urls import DEFAULT_MAX_RESULT_URLS, URL_LIST_CEILING

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MiB = 1024 * 1024
#: where the receiver spools callbacks Redis cannot take: the data directory `veo-archiver up` uses
DEFAULT_SPOOL_DIR = Path(".veo-archiver") / "spool"


def _spool_dir(env: Mapping[str, str]) -> Path | None:
    """``SPOOL_DIR``: unset or empty is the default (relative to the working directory), ``off`` disables."""
    raw = (env.get("SPOOL_DIR") or "").strip()
    if not raw:
        return DEFAULT_SPOOL_DIR
    if raw.lower() == "off":
        return None
    return Path(raw).expanduser()


def _host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"DOWNLOAD_ALLOW_HOSTS entry {entry!r}: expected host:port")
    return host.strip("[]").lower(), int(port)


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    api_key: str | None = field(default=None, repr=False)
    api_base: str = ""
    url_lifetime_s: int = 24 * 3600
    #: hosts (exact, or ``.suffix``) that result URLs must be on; empty = any public host
    download_hosts: tuple[str, ...] = ()
    #: accept callbacks without a callback-URL token (unsigned providers only; explicit operator choice)
    open: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str) -> ProviderSettings:
        upper = name.upper()
        spec = REGISTRY[name]
        return cls(
            name=name,
            api_key=env.get(spec.api_key_var) or None,
            api_base=(env.get(f"{upper}_API_BASE") or spec.default_api_base).rstrip("/"),
            url_lifetime_s=env_int(env, f"URL_LIFETIME_{upper}", spec.url_lifetime_s, minimum=60),
            download_hosts=tuple(h.lower() for h in split_list(env.get(f"DOWNLOAD_HOSTS_{upper}"))),
            open=name in split_list((env.get("OPEN_PROVIDERS") or "").lower()),
        )

    def host_allowed(self, host: str) -> bool:
        if not self.download_hosts:
            return True
        host = host.lower()
        return any(host == h or (h.startswith(".") and host.endswith(h)) for h in self.download_hosts)


def _standard_secrets(raw: str | None) -> dict[str, tuple[str, ...]]:
    """``source:secret,source:secret`` (several per source for rotation) into {source: (secrets…)}."""
    out: dict[str, list[str]] = {}
    for entry in split_list(raw):
        source, sep, secret = entry.partition(":")
        if not sep or not source.strip() or not secret.strip():
            raise ConfigError(
                f"STANDARD_WEBHOOK_SECRETS entry {entry[:12]!r}…: expected source:whsec_… or source:whpk_…"
            )
        out.setdefault(source.strip().lower(), []).append(secret.strip())
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class Settings:
    """Secrets (keys, tokens, and the Redis URL, which may carry a password) are left out of ``repr``."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    #: seconds a worker, sweeper or notifier waits for Redis at start before it gives up; 0 = as long as it takes
    redis_start_timeout_s: int = 0
    queue_name: str = "veo-archiver"
    storage: StorageSettings = field(default_factory=StorageSettings)

    # receiver
    kie_hmac_keys: tuple[str, ...] = field(default=(), repr=False)
    kie_allow_unsigned: bool = False
    timestamp_tolerance_s: int = 300
    max_body_bytes: int = MiB
    #: a request's body must arrive within this many seconds (408 otherwise); its headers too (connection closed)
    request_read_timeout_s: float = 10.0
    #: bytes of a request's line and headers; past it 431 and the connection is closed (receiver/http_edge.py)
    max_header_bytes: int = 64 * 1024
    #: requests handled at once by one receiver process; past it 503 + Retry-After (shed, counted in /metrics)
    max_concurrent_requests: int = 256
    #: request slots one client (its trusted address, receiver/proxy.py) may hold at once; past it 503 +
    #: Retry-After. None (a Settings built in code): a quarter of max_concurrent_requests
    max_requests_per_client: int | None = None
    #: bytes of request bodies held in memory at once by one receiver process; past it 503 + Retry-After
    max_body_bytes_in_flight: int = 64 * MiB
    #: proxies whose X-Forwarded-For / -Proto are believed (addresses, networks, or ``*``); see receiver/proxy.py
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    public_base_url: str | None = None
    callback_signing_keys: tuple[str, ...] = field(default=(), repr=False)
    providers: dict[str, ProviderSettings] = field(
        default_factory=lambda: {
            name: ProviderSettings(name=name, api_base=spec.default_api_base) for name, spec in REGISTRY.items()
        }
    )
    standard_webhook_secrets: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    # "auto": WAITAOF when the server supports it and AOF is on; "none": trust Redis persistence settings
    redis_durability: str = "auto"
    enqueue_timeout_s: float = 5.0
    #: callbacks with more result URLs are refused (400 too_many_urls); Veo returns at most 4 per job
    max_result_urls: int = DEFAULT_MAX_RESULT_URLS
    #: local spool for verified callbacks Redis cannot take (receiver/spool.py); None = off. ``from_env``
    #: turns it on by default (DEFAULT_SPOOL_DIR); a Settings built in code (tests) leaves it off, so no test
    #: app writes into, or drains, a directory another one shares
    spool_dir: Path | None = None
    spool_max_bytes: int = 256 * MiB
    spool_max_files: int = 100_000

    # operations
    #: bearer token for the admin surfaces (ops page, POST /tasks, /metrics unless METRICS_PUBLIC)
    admin_token: str | None = field(default=None, repr=False)
    metrics_public: bool = False
    #: a tracked task with no terminal callback after this long is polled through the provider's status API
    reconcile_after_s: int = 30 * 60
    reconcile_interval_s: int = 5 * 60
    #: downstream URLs notified (Standard Webhooks-signed POST) after each archived task or dead letter
    notify_urls: tuple[str, ...] = ()
    notify_secret: str | None = field(default=None, repr=False)
    #: seconds a submission (``/submit``, ``veo-archiver submit``) waits for the provider's answer (504 after)
    submit_timeout_s: float = 30.0
    #: kie.ai: poll get-1080p-video after each archived generate/extend task, archive the 1080p beside it
    #: (workers/rendition_1080p.py); the pace (docs: 20-30 s) and how long to wait before recording "unavailable"
    kie_fetch_1080p: bool = False
    kie_1080p_poll_interval_s: float = 25.0
    kie_1080p_max_wait_s: int = 15 * 60

    # queue
    job_timeout_s: int = 3600
    dedupe_ttl_s: int = 7 * 24 * 3600
    raw_callback_ttl_s: int = 30 * 24 * 3600
    result_ttl_s: int = 7 * 24 * 3600
    failure_ttl_s: int = 30 * 24 * 3600
    #: RQ-level retries for crashes, timeouts and bugs (transient download errors schedule their own)
    retry_intervals_s: tuple[int, ...] = (5, 60, 300)
    download_attempts: int = 12
    retry_base_s: int = 15
    retry_cap_s: int = 3600
    worker_shutdown_grace_s: int = 25

    # downloads
    download_allow_hosts: frozenset[tuple[str, int]] = frozenset()
    download_max_bytes: int = 4 * 1024 * MiB
    download_connect_timeout_s: float = 10.0
    download_read_timeout_s: float = 60.0
    download_chunk_bytes: int = MiB

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        storage = storage_from_env(env)
        durability = (env.get("REDIS_DURABILITY") or "auto").strip().lower()
        if durability not in ("auto", "waitaof", "none"):
            raise ConfigError(f"REDIS_DURABILITY={durability!r}: expected auto, waitaof or none")
        intervals_raw = split_list(env.get("RETRY_INTERVALS"))
        try:
            intervals = tuple(int(v) for v in intervals_raw) or cls.retry_intervals_s
        except ValueError:
            raise ConfigError(
                f"RETRY_INTERVALS={env.get('RETRY_INTERVALS')!r}: expected seconds, comma-separated"
            ) from None
        open_providers = split_list((env.get("OPEN_PROVIDERS") or "").lower())
        unknown = [p for p in open_providers if p not in NAMES]
        if unknown:
            raise ConfigError(f"OPEN_PROVIDERS: unknown provider(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
        settings = cls(
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            redis_start_timeout_s=env_int(env, "REDIS_START_TIMEOUT", 0, minimum=0),
            queue_name=env.get("QUEUE_NAME") or "veo-archiver",
            storage=storage,
            kie_hmac_keys=split_list(env.get("KIE_WEBHOOK_HMAC_KEYS")),
            kie_allow_unsigned=env_bool(env, "KIE_ALLOW_UNSIGNED", False) or "kie" in open_providers,
            timestamp_tolerance_s=env_int(env, "WEBHOOK_TIMESTAMP_TOLERANCE", 300, minimum=1),
            max_body_bytes=env_int(env, "MAX_BODY_BYTES", MiB, minimum=1024),
            request_read_timeout_s=float(env_int(env, "REQUEST_READ_TIMEOUT", 10, minimum=1)),
            max_header_bytes=env_int(env, "MAX_HEADER_BYTES", 64 * 1024, minimum=1024, maximum=16 * MiB),
            max_concurrent_requests=env_int(env, "MAX_CONCURRENT_REQUESTS", 256, minimum=1),
            max_requests_per_client=env_int(  # default: a quarter of MAX_CONCURRENT_REQUESTS
                env,
                "MAX_REQUESTS_PER_CLIENT",
                max(1, env_int(env, "MAX_CONCURRENT_REQUESTS", 256, minimum=1) // 4),
                minimum=1,
            ),
            max_body_bytes_in_flight=env_int(env, "MAX_BODY_BYTES_IN_FLIGHT", 64 * MiB, minimum=1024),
            forwarded_allow_ips=split_list(env.get("FORWARDED_ALLOW_IPS")) or ("127.0.0.1",),
            public_base_url=(env.get("PUBLIC_BASE_URL") or None),
            callback_signing_keys=split_list(env.get("CALLBACK_SIGNING_KEYS")),
            providers={name: ProviderSettings.from_env(env, name) for name in NAMES},
            standard_webhook_secrets=_standard_secrets(env.get("STANDARD_WEBHOOK_SECRETS")),
            redis_durability=durability,
            max_result_urls=env_int(
                env, "MAX_RESULT_URLS", DEFAULT_MAX_RESULT_URLS, minimum=1, maximum=URL_LIST_CEILING
            ),
            spool_dir=_spool_dir(env),
            spool_max_bytes=env_int(env, "SPOOL_MAX_BYTES", 256 * MiB, minimum=64 * 1024),
            spool_max_files=env_int(env, "SPOOL_MAX_FILES", 100_000, minimum=1),
            job_timeout_s=env_int(env, "JOB_TIMEOUT", 3600, minimum=30),
            dedupe_ttl_s=env_int(env, "DEDUPE_TTL", 7 * 24 * 3600, minimum=72 * 3600),
            raw_callback_ttl_s=env_int(env, "RAW_CALLBACK_TTL", 30 * 24 * 3600, minimum=3600),
            retry_intervals_s=intervals,
            download_attempts=env_int(env, "DOWNLOAD_ATTEMPTS", 12, minimum=1),
            retry_base_s=env_int(env, "RETRY_BASE", 15, minimum=1),
            retry_cap_s=env_int(env, "RETRY_CAP", 3600, minimum=1),
            worker_shutdown_grace_s=env_int(env, "WORKER_SHUTDOWN_GRACE", 25, minimum=0),
            admin_token=env.get("ADMIN_TOKEN") or None,
            metrics_public=env_bool(env, "METRICS_PUBLIC", False),
            reconcile_after_s=env_int(env, "RECONCILE_AFTER", 30 * 60, minimum=10),
            reconcile_interval_s=env_int(env, "RECONCILE_INTERVAL", 5 * 60, minimum=5),
            notify_urls=split_list(env.get("NOTIFY_URLS")),
            notify_secret=env.get("NOTIFY_SECRET") or None,
            submit_timeout_s=float(env_int(env, "SUBMIT_TIMEOUT", 30, minimum=1, maximum=600)),
            kie_fetch_1080p=env_bool(env, "KIE_FETCH_1080P", False),
            kie_1080p_poll_interval_s=float(env_int(env, "KIE_1080P_POLL_INTERVAL", 25, minimum=1, maximum=600)),
            kie_1080p_max_wait_s=env_int(env, "KIE_1080P_MAX_WAIT", 15 * 60, minimum=60, maximum=14 * 24 * 3600),
            download_allow_hosts=frozenset(_host_port(e) for e in split_list(env.get("DOWNLOAD_ALLOW_HOSTS"))),
            download_max_bytes=env_int(env, "DOWNLOAD_MAX_BYTES", 4 * 1024 * MiB, minimum=1),
        )
        if settings.kie_fetch_1080p and settings.providers["kie"].api_key is None:
            raise ConfigError("KIE_FETCH_1080P=true needs KIE_API_KEY: get-1080p-video is called with it")
        return replace(settings, **overrides) if overrides else settings
