"""veo-archiver: receive video-generation callbacks, archive the videos, and operate the queue.

Settings come from the environment (README, "Configuration"), built once here and passed down; in a folder
where ``veo-archiver up`` runs, what it provided (embedded Redis, development keys, admin token) fills in the
variables that are not set (:mod:`veo_archiver.cli.local_env`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from veo_archiver.cli import arguments, local_env
from veo_archiver.cli.local_env import DEFAULT_DATA_DIR, SIMULATOR_PORT
from veo_archiver.cli.ports import check_port
from veo_archiver.cli.simulate import cmd_simulate
from veo_archiver.cli.up import cmd_up
from veo_archiver.errors import ArchiverError, ConfigError
from veo_archiver.logs import configure as configure_logging
from veo_archiver.logs import wants_json
from veo_archiver.providers import NAMES as PROVIDER_NAMES

log = logging.getLogger("veo_archiver")


# --------------------------------------------------------------------------------------------- serve / worker


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver import server
    from receiver.app import create_app
    from receiver.metrics import ReceiverMetrics

    check_port(args.host, args.port, command="serve")
    settings = local_env.settings()
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

    settings = local_env.settings()
    if args.count > 1:
        return runner.run_many(args.count, ["--burst"] if args.burst else [])
    return runner.run_one(settings, burst=args.burst)


# --------------------------------------------------------------------------------------------- up


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
