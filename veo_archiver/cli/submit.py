"""``veo-archiver submit PROVIDER OPERATION --json FILE|-``: submit a task through the archiver, tracked from birth.

The CLI twin of ``POST /submit/{provider}/{operation}``, running the same code (:mod:`veo_archiver.submit`)
in this process: the body is sent to the provider with its API key, its callback field aimed at this
receiver (``--base``, else ``PUBLIC_BASE_URL``, else the receiver of the ``veo-archiver up`` running in this
folder), and the new task is tracked in Redis.

Prints the task id on stdout (``--answer``: the whole JSON answer instead), a summary on stderr. Exit codes:
0 submitted; 1 the provider refused it or did not answer (the answer says whether a retry is safe);
2 it could not run (configuration, Redis).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from veo_archiver.cli import arguments, local_env, output
from veo_archiver.errors import ConfigError
from veo_archiver.providers import NAMES
from veo_archiver.providers.submission import PATHS
from veo_archiver.submit import Submitter, prepare


def _base_url(args: argparse.Namespace, public_base_url: str | None) -> str:
    if args.base:
        return str(args.base)
    if public_base_url:
        return public_base_url
    up = local_env.running()
    if up is not None and up.receiver_url:
        return up.receiver_url
    raise ConfigError(
        "no receiver URL for the callback: pass --base, set PUBLIC_BASE_URL, or run `veo-archiver up` in this folder"
    )


def _read_body(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"--json {source}: {exc.strerror or exc}") from exc


def cmd_submit(args: argparse.Namespace) -> int:
    from receiver.submission import callback_url_for

    settings = output.settings()
    body = _read_body(args.json)
    callback = callback_url_for(settings, _base_url(args, settings.public_base_url), args.provider, now=time.time())
    prepare(settings, args.provider, args.operation, body, callback_url=callback)  # the caller's mistakes first
    submitter = Submitter(settings, output.connect_redis(settings))
    try:
        answer = submitter.submit(
            args.provider, args.operation, body, callback_url=callback, idempotency_key=args.idempotency_key
        )
    finally:
        submitter.close()
    view: dict[str, Any] = answer.body
    if args.answer:
        print(json.dumps(view, indent=2))
    elif view.get("task_id"):
        print(view["task_id"])
    print(_summary(view, replayed=answer.replayed), file=sys.stderr)
    return arguments.OK if answer.status == 200 else arguments.FOUND_PROBLEM


def _summary(view: dict[str, Any], *, replayed: bool) -> str:
    again = " (the first answer to this idempotency key)" if replayed else ""
    if view.get("code") != 200:
        detail = view.get("provider_response")
        shown = f": {json.dumps(detail)[:300]}" if detail is not None else ""
        return f"veo-archiver: not submitted{again}: {view.get('msg')} [{view.get('reason')}]{shown}"
    parts = [f"submitted {view.get('provider')} {view.get('operation')}{again}: task {view.get('task_id')}"]
    if view.get("extends"):
        parts.append(f"extends {view['extends']['task_id']}")
    parts.append("tracked (the sweep archives it if no callback comes)" if view.get("tracked") else view["msg"])
    return "; ".join(parts)


def register(sub: Any) -> None:
    """Add ``submit`` to the ``veo-archiver`` sub-commands."""
    submit = sub.add_parser("submit", help="submit a task to a provider through the archiver (tracked from birth)")
    submit.add_argument("provider", choices=NAMES, help="the provider to submit the task to")
    submit.add_argument(
        "operation",
        choices=sorted({op for ops in PATHS.values() for op in ops}),
        help="generate, extend (kie.ai: also 4k)",
    )
    submit.add_argument("--json", required=True, metavar="FILE", help="the provider's request body (- for stdin)")
    submit.add_argument("--idempotency-key", help="a retry with the same key returns the first answer (a day)")
    submit.add_argument("--base", help="the receiver's public base URL (default PUBLIC_BASE_URL, then `up`'s)")
    submit.add_argument("--answer", action="store_true", help="print the whole JSON answer instead of the task id")
    submit.set_defaults(func=cmd_submit)
