"""``veo-archiver simulate-api``: the four providers' APIs on loopback, to try ``veo-archiver submit`` end to end.

Serves the simulated clouds (:class:`veo_archiver.sim.cloud.ProviderCloud`: submission endpoints, status
APIs, result files) until Ctrl-C. Every task submitted to it is finished ``--complete-after`` seconds later:
the sample video is served, the task reads as succeeded through the status API, and its callback is POSTed to
the URL the submission named (kie.ai's signed with the key ``simulate`` uses), unless ``--no-callback`` (then
only ``veo-archiver sweep`` finds it). It prints the variables that point the archiver at it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from veo_archiver.cli import arguments
from veo_archiver.errors import ConfigError
from veo_archiver.sim.cloud import DEFAULT_API_KEYS, ProviderCloud
from veo_archiver.sim.media import sample_mp4_padded
from veo_archiver.sim.submissions import Submitted

log = logging.getLogger("veo_archiver")

KEY_VARS = {"kie": "KIE_API_KEY", "apixo": "APIXO_API_KEY", "useapi": "USEAPI_API_TOKEN", "evolink": "EVOLINK_API_KEY"}


def cmd_simulate_api(args: argparse.Namespace) -> int:
    from veo_archiver.cli.simulate import kie_key

    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    video = sample_mp4_padded(args.size_kib)
    with ProviderCloud(port=args.port) as cloud:

        def finish(submitted: Submitted) -> None:
            if stopped.wait(args.complete_after):
                return
            hmac_key = None
            if submitted.provider == "kie" and not args.no_callback:
                try:  # read now: `up` may have made its development key after this command started
                    hmac_key = kie_key(args)
                except ConfigError:
                    print("no kie.ai signing key found: this kie.ai callback goes unsigned", flush=True)
            response = cloud.complete(submitted, video, hmac_key=hmac_key, send=not args.no_callback)
            sent = f"callback -> {response.status_code}" if response is not None else "no callback sent"
            print(f"{submitted.provider} {submitted.operation} {submitted.task_id}: succeeded; {sent}", flush=True)

        cloud.on_submit = lambda s: threading.Thread(target=finish, args=(s,), daemon=True).start()
        exports = " ".join(
            [f"{p.upper()}_API_BASE={cloud.base_url}" for p in KEY_VARS]
            + [f"{var}={DEFAULT_API_KEYS[p]}" for p, var in KEY_VARS.items()]
        )
        print(
            f"provider APIs simulated at {cloud.base_url} (Ctrl-C stops)\n"
            f"  point the archiver at it (`up` and `submit` alike):\n  export {exports}\n"
            f"  tasks succeed {args.complete_after:g} s after submission"
            + ("; no callback is sent (the sweep finds them)" if args.no_callback else ", then their callback is sent"),
            flush=True,
        )
        while not stopped.is_set():
            time.sleep(0.2)
    return arguments.OK


def register(sub: Any) -> None:
    """Add ``simulate-api`` to the ``veo-archiver`` sub-commands."""
    sim = sub.add_parser("simulate-api", help="serve the four providers' APIs on loopback (for `submit`)")
    sim.add_argument("--port", type=int, default=8765, help="default 8765 (what `up` lets downloads reach)")
    sim.add_argument("--complete-after", type=float, default=3.0, help="seconds until a submitted task succeeds")
    sim.add_argument("--no-callback", action="store_true", help="never send callbacks: leave them to the sweep")
    sim.add_argument("--size-kib", type=int, default=512, help="size of the video each task produces")
    sim.add_argument("--key", help="kie.ai signing key (default: KIE_WEBHOOK_HMAC_KEYS, then the `up` dev key)")
    sim.add_argument("--data-dir", default=".veo-archiver", help="where `up` keeps its data (default .veo-archiver)")
    sim.set_defaults(func=cmd_simulate_api)
