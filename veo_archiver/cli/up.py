"""``veo-archiver up``: Redis, a receiver and a worker on embedded defaults, supervised in one terminal."""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from veo_archiver.cli import local_env
from veo_archiver.cli.ports import check_port, wait_listening
from veo_archiver.env_values import is_loopback_host
from veo_archiver.errors import ConfigError
from veo_archiver.redis_client import connect, redacted
from veo_archiver.settings import Settings


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
    env.setdefault("DOWNLOAD_ALLOW_HOSTS", f"127.0.0.1:{local_env.SIMULATOR_PORT}")
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
        redis_line = f"embedded, data in {embedded.data_dir}" if embedded else external_redis_line(env["REDIS_URL"])
        rq_url = shlex.quote(embedded.url) if embedded else '"$REDIS_URL"'
        receiver = children[0][1]
        # the banner only once the receiver answers: "is up" is true when it is printed
        if wait_listening(args.host, args.port, alive=lambda: receiver.poll() is None and not stop_requested):
            print(
                "\nveo-archiver is up\n"
                f"  register as callBackUrl:  {base}/callbacks/kie\n"
                f"  kie.ai signing key:       {key_note}\n"
                f"  archive:                  {settings.storage.describe()}\n"
                f"  redis:                    {redis_line}\n"
                f"  RQ's own tools:           rq info -u {rq_url} {settings.queue_name}\n"
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


def external_redis_line(url: str) -> str:
    """The banner's line for a REDIS_URL given by the operator: where (no password), and whether it answers."""
    line = f"REDIS_URL {redacted(url)}"
    try:
        connect(url, socket_timeout=1.0).close()
    except ConfigError:
        return line + " (not answering yet: callbacks go to the local spool and the worker waits until it does)"
    return line


# --------------------------------------------------------------------------------------------- simulate
