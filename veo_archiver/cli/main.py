"""veo-archiver: receive video-generation callbacks, archive the videos, and operate the queue.

Settings come from the environment (README, "Configuration"), built once here and passed down; in a folder
where ``veo-archiver up`` runs, what it provided (embedded Redis, development keys, admin token) fills in the
variables that are not set (:mod:`veo_archiver.cli.local_env`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import FrameType

from veo_archiver import archive_keys
from veo_archiver.cli import arguments, local_env
from veo_archiver.cli.ports import check_port, wait_listening
from veo_archiver.env_values import is_loopback_host
from veo_archiver.errors import ArchiverError, ConfigError
from veo_archiver.logs import configure as configure_logging
from veo_archiver.logs import wants_json
from veo_archiver.providers import NAMES as PROVIDER_NAMES
from veo_archiver.settings import Settings

log = logging.getLogger("veo_archiver")

DEFAULT_DATA_DIR = ".veo-archiver"
SIMULATOR_PORT = 8765


def _settings() -> Settings:
    return local_env.settings()


# --------------------------------------------------------------------------------------------- serve / worker


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver import server
    from receiver.app import create_app
    from receiver.metrics import ReceiverMetrics

    check_port(args.host, args.port, command="serve")
    settings = _settings()
    counters = ReceiverMetrics()  # the app's registry: the server's refusals are counted with the app's
    config = server.config(
        create_app(settings, counters=counters),
        args.host,
        args.port,
        header_timeout_s=settings.request_read_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        on_refused=lambda reason: counters.shed.labels(reason).inc(),
    )
    log.info("receiver listening", extra={"host": args.host, "port": args.port})
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raises the Ctrl-C it caught: not an error
        log.info("receiver stopped")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers import runner

    settings = _settings()
    if args.count > 1:
        return runner.run_many(args.count, ["--burst"] if args.burst else [])
    return runner.run_one(settings, burst=args.burst)


# --------------------------------------------------------------------------------------------- up


def _up_env(args: argparse.Namespace, data_dir: Path) -> tuple[dict[str, str], dict[str, str], str]:
    """The children's environment, what `up` made up itself (for ``up.json``), and where the kie key is from."""
    env = dict(os.environ)
    provided: dict[str, str] = {}
    if not env.get("REDIS_URL"):
        from veo_archiver.cli.embedded import EmbeddedRedis

        provided["REDIS_URL"] = EmbeddedRedis(data_dir / "redis").url
    if not env.get("KIE_WEBHOOK_HMAC_KEYS"):
        provided["KIE_WEBHOOK_HMAC_KEYS"] = local_env.dev_keys(data_dir)["KIE_WEBHOOK_HMAC_KEYS"]
        kept = data_dir / local_env.DEV_ENV_FILE
        key_note = f"a development key kept in {kept} (set KIE_WEBHOOK_HMAC_KEYS for kie.ai's)"
    else:
        key_note = "from KIE_WEBHOOK_HMAC_KEYS"
    if not env.get("CALLBACK_SIGNING_KEYS"):
        provided["CALLBACK_SIGNING_KEYS"] = local_env.dev_keys(data_dir)["CALLBACK_SIGNING_KEYS"]
    if not env.get("ADMIN_TOKEN") and is_loopback_host(args.host):
        provided["ADMIN_TOKEN"] = secrets.token_urlsafe(32)  # a development token, for this run only
    env.update(provided)
    env.setdefault("SPOOL_DIR", str(data_dir / "spool"))  # the receiver's spool beside up's other data
    env.setdefault("DOWNLOAD_ALLOW_HOSTS", f"127.0.0.1:{SIMULATOR_PORT}")
    # the children write to this terminal too: same format and level as `up` itself
    env["LOG_FORMAT"] = "json" if args.json_logs else "text"
    env["LOG_LEVEL"] = args.log_level
    return env, provided, key_note


def _ops_line(local: str, provided: dict[str, str], env: dict[str, str]) -> str:
    if "ADMIN_TOKEN" in provided:
        return f"{local}/ops?token={provided['ADMIN_TOKEN']}  (development token, this run only)"
    if env.get("ADMIN_TOKEN"):
        return f"{local}/ops  (open /ops?token=<ADMIN_TOKEN> once)"
    return "off: set ADMIN_TOKEN to enable it (none is minted when the receiver listens beyond loopback)"


def cmd_up(args: argparse.Namespace) -> int:
    from veo_archiver.cli.embedded import EmbeddedRedis

    other = local_env.running()
    if other is not None:
        raise ConfigError(f"`veo-archiver up` already runs in this folder (pid {other.pid}, {other.receiver_url})")
    check_port(args.host, args.port, command="up")  # before a line is printed or a token minted
    data_dir = Path(args.data_dir).resolve()
    env, provided, key_note = _up_env(args, data_dir)
    settings = Settings.from_env(env)  # validate before starting anything else
    if settings.notify_urls:
        from workers.notify import check_config

        check_config(settings)  # a bad NOTIFY_SECRET stops `up` here, not in a child
    host = args.host if is_loopback_host(args.host) else "127.0.0.1"
    local = f"http://{f'[{host}]' if ':' in host else host}:{args.port}"
    state_path = Path.cwd() / local_env.STATE_FILE
    python = [sys.executable, "-m", "veo_archiver"]
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    embedded = EmbeddedRedis(data_dir / "redis") if "REDIS_URL" in provided else None
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    try:
        if embedded is not None:
            embedded.start()
        local_env.write(state_path, local_env.UpState(os.getpid(), local, provided, state_path))

        def start(name: str, argv: list[str]) -> None:
            children.append((name, subprocess.Popen(python + argv, env=env, start_new_session=True)))

        start("receiver", ["serve", "--host", args.host, "--port", str(args.port)])
        start("worker", ["worker", "--count", str(args.workers)])
        if settings.notify_urls:
            start("notifier", ["notify"])
        base = (settings.public_base_url or f"http://{args.host}:{args.port}").rstrip("/")
        redis_line = f"embedded, data in {embedded.data_dir}" if embedded else "REDIS_URL"
        receiver = children[0][1]
        # the banner only once the receiver answers: "is up" is true when it is printed
        if wait_listening(args.host, args.port, alive=lambda: receiver.poll() is None and not stop_requested):
            print(
                "\nveo-archiver is up\n"
                f"  register as callBackUrl:  {base}/callbacks/kie\n"
                f"  kie.ai signing key:       {key_note}\n"
                f"  archive:                  {settings.storage.describe()}\n"
                f"  redis:                    {redis_line}\n"
                f"  ops page:                 {_ops_line(local, provided, env)}\n"
                "  queue status:             veo-archiver status  "
                "(show, failed, retry: run here, no variables needed)\n"
                f"  other providers:          veo-archiver callback-url apixo|useapi|evolink --base {base}\n"
                f"  see a video archived:     veo-archiver simulate kie --to {local}/callbacks/kie\n"
                f"                            (or apixo, useapi, evolink with --to {local})\n"
                "  Ctrl-C stops everything (the worker finishes its current download first).\n",
                flush=True,
            )
        while not stop_requested:
            for name, child in children:
                if child.poll() is not None:
                    print(f"veo-archiver: the {name} exited with code {child.returncode}; stopping", file=sys.stderr)
                    stop_requested, exit_code = True, 1
            time.sleep(0.3)
    finally:
        # receiver first (stop taking callbacks), then workers (warm shutdown), then Redis (flush to disk)
        for name, child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=args.stop_timeout)
                except subprocess.TimeoutExpired:
                    print(f"veo-archiver: the {name} did not stop in {args.stop_timeout} s; killing", file=sys.stderr)
                    child.kill()
                    child.wait()
        local_env.remove(state_path, os.getpid())
        if embedded is not None:
            embedded.stop()
        print("veo-archiver: stopped", flush=True)
    return exit_code


# --------------------------------------------------------------------------------------------- simulate


def _kie_key(args: argparse.Namespace) -> str:
    if args.key:
        return str(args.key)
    configured = local_env.environ().get("KIE_WEBHOOK_HMAC_KEYS", "").split(",")[0].strip()
    if configured:
        return configured
    dev = Path(args.data_dir) / local_env.DEV_ENV_FILE
    if dev.exists():
        return local_env.dev_keys(Path(args.data_dir))["KIE_WEBHOOK_HMAC_KEYS"].split(",")[0]
    raise ConfigError("no signing key: pass --key, set KIE_WEBHOOK_HMAC_KEYS, or run `veo-archiver up` first")


def _signing_key(args: argparse.Namespace) -> str | None:
    configured = local_env.environ().get("CALLBACK_SIGNING_KEYS", "").split(",")[0].strip()
    if configured:
        return configured
    dev = Path(args.data_dir) / local_env.DEV_ENV_FILE
    if dev.exists():
        return local_env.dev_keys(Path(args.data_dir)).get("CALLBACK_SIGNING_KEYS", "").split(",")[0] or None
    return None


def cmd_simulate(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from receiver import tokens
    from veo_archiver.sim.cloud import ProviderCloud
    from veo_archiver.sim.media import sample_mp4_padded

    provider = args.provider
    target = args.to
    if provider != "kie" and "token=" not in (urlsplit(target).query or ""):
        key = _signing_key(args)
        if key is None:
            raise ConfigError(
                f"{provider} callbacks need a callback-URL token: pass the URL printed by "
                f"`veo-archiver callback-url {provider}`, or set CALLBACK_SIGNING_KEYS"
            )
        target = tokens.callback_url(
            target.split("/callbacks/")[0], provider, tokens.mint(provider, [key], now=time.time())
        )
    hmac_key = None if (provider != "kie" or args.unsigned) else _kie_key(args)
    with ProviderCloud(port=args.serve_port) as cloud:
        task_id = args.task_id or cloud.new_task_id(provider)
        video = sample_mp4_padded(args.size_kib)  # a real, playable H.264 sample, padded by a `free` box
        urls = [cloud.add_video(f"/videos/{provider}/{n}-{uuid.uuid4().hex[:8]}.mp4", video) for n in range(args.count)]
        if args.fail:
            cloud.set_task(provider, task_id, "failed", failure_code=str(args.fail), failure_message=None)
        else:
            cloud.set_task(provider, task_id, "succeeded", urls=urls)
        variant = args.form if provider == "kie" else None
        response = cloud.send_callback(provider, task_id, target, variant=variant, hmac_key=hmac_key)
        shown = target.split("?")[0]
        print(f"POST {shown} -> {response.status_code} {response.text.strip()[:200]}")
        if response.status_code != 200:
            return 1
        print(f"{provider} task {task_id}: {0 if args.fail else len(urls)} video(s) served from {cloud.base_url}")
        return _await_manifest(provider, task_id, args.wait, expect_failure=bool(args.fail))


def _await_manifest(provider: str, task_id: str, wait_s: float, *, expect_failure: bool = False) -> int:
    from workers.storage import open_archive

    settings = _settings()
    archive = open_archive(settings.storage)
    key = archive_keys.manifest_key(provider, task_id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        manifest = archive.get_json(key)
        if manifest is not None:
            return _print_manifest(manifest, archive.location(key), expect_failure=expect_failure)
        time.sleep(0.25)
    print(f"not archived within {wait_s:.0f} s: is a worker running against {settings.storage.describe()}?")
    return 1


def _print_manifest(manifest: dict[str, object], location: str, *, expect_failure: bool) -> int:
    """What the archive holds for the simulated task, in words that never read as success when it failed."""
    files = manifest.get("files")
    files = files if isinstance(files, list) else []
    if manifest.get("status") == "succeeded" and not manifest.get("failure"):
        print(f"archived: {location}")
        for f in files:
            print(f"  {f['key']}  {f['size']} bytes  sha256 {f['sha256']}")
        return arguments.OK
    failure = manifest.get("failure")
    print(f"the task did not succeed (status {manifest.get('status')}); no video archived")
    if failure:
        print(f"  provider's failure: {json.dumps(failure)}")
    print(f"  the failure is recorded in {location}")
    # a failure callback that was asked for (--fail) is the simulation working; any other is a failure
    return arguments.OK if expect_failure else arguments.FOUND_PROBLEM


# --------------------------------------------------------------------------------------------- callback-url


def cmd_callback_url(args: argparse.Namespace) -> int:
    from receiver import tokens

    settings = local_env.settings(quiet=True)  # prints a URL: no note about where the keys came from
    if not settings.callback_signing_keys:
        raise ConfigError(
            "CALLBACK_SIGNING_KEYS is not set: generate one with `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'` and give the same value to the receiver"
        )
    base = args.base or settings.public_base_url
    up = local_env.running() if not base else None
    if up is not None and up.receiver_url:
        base = up.receiver_url  # the receiver of the `up` running here: right for `simulate`, loopback only
        print(
            f"# the receiver of `veo-archiver up` here ({base}); a provider needs the public URL: set "
            "PUBLIC_BASE_URL or pass --base",
            file=sys.stderr,
        )
    if not base:
        raise ConfigError(
            "set PUBLIC_BASE_URL (e.g. https://archiver.example.com), pass --base, or run `veo-archiver up` here"
        )
    ttl = int(args.ttl_days * 86400) if args.ttl_days else None
    token = tokens.mint(args.provider, settings.callback_signing_keys, now=time.time(), ttl_s=ttl)
    url = tokens.callback_url(base, args.provider, token)
    print(url)
    if args.provider == "useapi":
        print(
            f"# useapi.net: pass it as replyUrl; or pass {base.rstrip('/')}/callbacks/useapi as replyUrl and "
            f"replyRef=token={token}",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = arguments.CommandParser(
        prog="veo-archiver",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=f"Start with `veo-archiver up`; `veo-archiver COMMAND --help` for one command. {arguments.EXIT_CODES}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {arguments.version()}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="say on stderr, every time, which values came from the `veo-archiver up` running in this folder "
        "(by default: once per terminal session)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: LOG_LEVEL, else INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=os.environ.get("LOG_FORMAT") or None,
        help="default: LOG_FORMAT, else text on a terminal and JSON lines otherwise",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the receiver (Starlette on uvicorn)", description="Run the receiver (Starlette on uvicorn)."
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser(
        "worker",
        help="run RQ workers that download and archive videos",
        description="Run RQ workers that download and archive videos (the scheduler runs in one of them).",
    )
    worker.add_argument("--count", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=cmd_worker)

    up = sub.add_parser(
        "up",
        help="all in one: embedded Redis (unless REDIS_URL is set), receiver and worker",
        description="Run everything in this folder: an embedded Redis (unless REDIS_URL is set), the receiver and "
        "a worker. Other commands run in the same folder find them by themselves. Ctrl-C stops everything.",
    )
    up.add_argument("--host", default="127.0.0.1", help="address the receiver listens on (default 127.0.0.1)")
    up.add_argument(
        "--port", type=int, default=8000, help="the receiver's TCP port (default 8000); pick another when it is taken"
    )
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    up.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help=f"where the embedded Redis, the development keys and the spool live (default {DEFAULT_DATA_DIR})",
    )
    up.add_argument("--stop-timeout", type=float, default=120.0, help="seconds to wait for each part to stop")
    up.set_defaults(func=cmd_up)

    simulate = sub.add_parser(
        "simulate",
        help="act as a provider: serve a video and send its callback",
        description="Act as a provider: serve a generated MP4 and its status API on loopback, send the callback, "
        "and wait for the manifest in the archive.",
    )
    simulate.add_argument("provider", choices=PROVIDER_NAMES, help="the provider to play")
    simulate.add_argument("--to", required=True, help="the receiver's callback URL")
    simulate.add_argument("--key", help="signing key (default: KIE_WEBHOOK_HMAC_KEYS, then the `up` dev key)")
    simulate.add_argument("--unsigned", action="store_true", help="send without signature headers")
    simulate.add_argument("--task-id", help="the task id to use (default: a new one in the provider's format)")
    simulate.add_argument("--count", type=int, default=1, help="videos in the result (default 1)")
    simulate.add_argument(
        "--form",
        choices=("list", "json", "bracket", "bare"),
        default="list",
        help="kie.ai only: how resultUrls is written in the callback (default list)",
    )
    simulate.add_argument("--fail", type=int, choices=(400, 422, 500, 501), help="send a failure callback")
    simulate.add_argument(
        "--size-kib", type=int, default=512, help="video size: the playable sample padded with a free box (default 512)"
    )
    simulate.add_argument(
        "--serve-port",
        type=int,
        default=SIMULATOR_PORT,
        help=f"loopback port the simulated provider serves videos on (default {SIMULATOR_PORT}; 0 = any free one)",
    )
    simulate.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the manifest")
    simulate.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help=f"where `up` keeps its development keys (default {DEFAULT_DATA_DIR})",
    )
    simulate.set_defaults(func=cmd_simulate)
    cb = sub.add_parser(
        "callback-url",
        help="print the signed callback URL to register with a provider",
        description="Print the token-carrying callback URL to register with a provider (base: --base, else "
        "PUBLIC_BASE_URL, else the receiver of the `up` running in this folder).",
    )
    cb.add_argument("provider", choices=PROVIDER_NAMES, help="the provider the URL is for")
    cb.add_argument("--ttl-days", type=float, default=0, help="token lifetime in days (default: no expiry)")
    cb.add_argument("--base", help="public base URL (default PUBLIC_BASE_URL, else the `up` running here)")
    cb.set_defaults(func=cmd_callback_url)
    from veo_archiver.cli import manifests, ops, reconcile, spool

    ops.register(sub)  # status, failed, retry, replay, show
    spool.register(sub)  # spool quarantined, spool requeue: the receiver's local spool
    reconcile.register(sub)  # track, tracked, sweep, notify
    manifests.register(sub)  # manifests --since: catch up past the outcome stream's retention
    from veo_archiver.cli import simulate_api, submit

    submit.register(sub)  # submit: through the archiver, tracked from birth
    simulate_api.register(sub)  # simulate-api: the providers' APIs on loopback, for submit
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        local_env.verbose = args.verbose
        args.json_logs = wants_json(args.log_format)
        configure_logging(args.log_level, json_lines=args.json_logs)
        return int(args.func(args))
    except ArchiverError as exc:
        print(f"veo-archiver: error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
