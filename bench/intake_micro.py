"""Benchmark: the intake alone, in one process, against a real redis-server: CPU per durable callback.

    .venv/bin/python bench/intake_micro.py --seconds 3 --concurrency 64              # this checkout's Intake
    .venv/bin/python bench/intake_micro.py --seconds 3 --baseline /tmp/base         # + another checkout's
    .venv/bin/python bench/intake_micro.py --seconds 2 --repeat 1 --commandstats    # redis time per command

Only the intake's public face is used: ``Intake(settings, client)``, ``await intake.start()``,
``await intake.submit(event, delivery)`` and its ``batches``/``batched`` counters. ``--concurrency`` coroutines
each submit distinct kie.ai success callbacks (events parsed with ``veo_archiver.providers.kie.parse`` and
deliveries built beforehand, as the handler hands them over) back to back for ``--seconds``; the figures are
the process's CPU time (``time.process_time``) and redis-server's (``INFO cpu`` used_cpu_user + used_cpu_sys)
per accepted callback, and the mean batch size (callbacks per batch). Every callback must come back
``accepted`` and the queue must hold one job per callback.

Each intake runs in a fresh child process of its checkout (this one; with ``--baseline PATH`` that one too,
alternating, in the same run, against the same redis-server). The reference is this checkout's first run:
each row prints its client CPU per callback against it.
``--loop uvloop`` runs the coroutines on uvloop. ``--profile`` prints cProfile's top functions (tottime) of
this checkout's intake; ``--commandstats`` splits redis-server's time per callback by command
(``INFO commandstats``). The per-part timings of earlier rounds (``--parts``) timed the intake's internals
one by one; they are gone with those internals' public names: profile the public path instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import KIE_KEY, QUEUE_KEY, REPO_ROOT, RedisServer, checkout_env, machine_description


def make_callbacks(prefix: str, count: int) -> list[tuple[Any, Any]]:
    from veo_archiver.event import Verification
    from veo_archiver.intake import Delivery
    from veo_archiver.providers import kie
    from veo_archiver.sim import kie as kie_sim

    out = []
    now = time.time()
    for n in range(count):
        task_id = f"{prefix}-{n:07d}"
        body = json.dumps(kie_sim.success_body(task_id, [f"https://tempfile.aiquickdraw.com/v/{task_id}.mp4"]))
        headers = {k.lower(): v for k, v in kie_sim.signed_headers(KIE_KEY, task_id, int(now)).items()}
        headers |= {"host": "127.0.0.1:8000", "content-length": str(len(body)), "user-agent": "kie-callback/1.0"}
        event = kie.parse(json.loads(body), verification=Verification.SIGNATURE)
        delivery = Delivery(
            body=body.encode(), headers=headers, received_at=now, remote="127.0.0.1", path="/callbacks/kie"
        )
        out.append((event, delivery))
    return out


async def drive(redis_url: str, concurrency: int, seconds: float, profile: cProfile.Profile | None) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from veo_archiver.intake import Intake
    from veo_archiver.settings import Settings

    settings = Settings(redis_url=redis_url, kie_hmac_keys=(KIE_KEY,))
    callbacks = make_callbacks(uuid.uuid4().hex[:8], int(seconds * 20000) + concurrency)
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=32, timeout=5.0, socket_timeout=5.0)
    client = aioredis.Redis(connection_pool=pool)
    try:
        intake = Intake(settings, client)
        await intake.start()
        outcomes: dict[str, int] = {}
        it = iter(callbacks)
        stop_at = 0.0

        async def worker() -> None:
            for event, delivery in it:
                if time.monotonic() >= stop_at:
                    return
                result = await intake.submit(event, delivery)
                outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1

        await asyncio.gather(*(intake.submit(e, d) for e, d in [next(it) for _ in range(concurrency)]))  # warm
        info = await client.info("cpu")
        redis0 = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        batches0, batched0 = intake.batches, intake.batched
        stop_at = time.monotonic() + seconds
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if profile:
            profile.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        info = await client.info("cpu")
        redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) - redis0
        n = sum(outcomes.values())
        batches = intake.batches - batches0
        return {
            "n": n,
            "outcomes": outcomes,
            "cpu_us": cpu / n * 1e6,
            "redis_us": redis_cpu / n * 1e6,
            "rate": n / wall,
            "batch": (intake.batched - batched0) / batches if batches else 1.0,
            "submitted": n + concurrency,
        }
    finally:
        await client.aclose()


def child(opts: argparse.Namespace) -> None:
    """One run of this process's checkout's Intake; a RESULT line of JSON (and the profile, if asked)."""
    logging.getLogger("veo_archiver").setLevel(logging.WARNING)
    runner = asyncio.run
    if opts.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    prof = cProfile.Profile() if opts.profile else None
    result = runner(drive(opts.child, opts.concurrency, opts.seconds, prof))
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    print("RESULT " + json.dumps(result), flush=True)


def spawn(checkout: Path, redis_url: str, opts: argparse.Namespace, *, profile: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", redis_url, "--seconds", str(opts.seconds)]
    cmd += ["--concurrency", str(opts.concurrency), "--loop", opts.loop, *(["--profile"] if profile else [])]
    proc = subprocess.run(cmd, env=checkout_env(checkout), cwd=checkout, capture_output=True, text=True, timeout=600)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("RESULT "):
        raise SystemExit(f"intake run in {checkout} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr}")
    if profile:
        print("\n".join(lines[:-1]))
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, measured in the same run")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--appendfsync", default="everysec", choices=("everysec", "always", "no"))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--commandstats", action="store_true", help="redis-server time per command per callback")
    parser.add_argument("--child", metavar="REDIS_URL", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(opts)
        return
    impls = [("this checkout", REPO_ROOT)]
    if opts.baseline:
        impls.insert(0, (f"baseline {opts.baseline.name}"[:24], opts.baseline.resolve()))
    with tempfile.TemporaryDirectory(prefix="intake-micro-") as tmp:
        with RedisServer(Path(tmp) / "redis", appendfsync=opts.appendfsync) as redis:
            rds = redis.client()
            version = rds.info("server")["redis_version"]
            extra = [
                f"redis:    {version} (AOF {opts.appendfsync}); loop {opts.loop}; "
                f"{opts.concurrency} concurrent submitters, {opts.seconds:g} s per run",
                f"baseline: {opts.baseline or '-'}",
            ]
            print(machine_description(("redis", "hiredis", "rq", "uvloop"), extra), flush=True)
            print()
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in impls}
            stats: dict[str, tuple[dict[str, Any], int]] = {}
            for rep in range(opts.repeat):
                for name, checkout in impls if rep % 2 == 0 else list(reversed(impls)):
                    rds.flushall()
                    rds.config_resetstat()
                    r = spawn(checkout, redis.url, opts, profile=opts.profile and checkout == REPO_ROOT and rep == 0)
                    stats[name] = (rds.info("commandstats"), r["submitted"])
                    if r["outcomes"] != {"accepted": r["n"]}:
                        print(f"  !! {name}: outcomes {r['outcomes']}")
                    queued = rds.llen(QUEUE_KEY)
                    if queued != r["submitted"]:
                        print(f"  !! {name}: {queued} jobs queued for {r['submitted']} accepted")
                    rows[name].append(r)
                    print(
                        f"  run {rep + 1} {name:<24} {r['n']:6d} cb  {r['rate']:7.0f} cb/s  client "
                        f"{r['cpu_us']:6.1f} us/cb  redis {r['redis_us']:5.1f} us/cb  batch {r['batch']:5.1f}",
                        flush=True,
                    )
            print_table(rows, stats if opts.commandstats else {})


def print_table(rows: dict[str, list[dict[str, Any]]], stats: dict[str, tuple[dict[str, Any], int]]) -> None:
    def med(runs: list[dict[str, Any]], f: str) -> float:
        return float(statistics.median(r[f] for r in runs))

    reference = med(rows["this checkout"], "cpu_us")
    print()
    header = f"{'intake':<26} {'cb/s':>7} {'client us/cb':>12} {'vs this':>8} {'redis us/cb':>11} {'cb/batch':>8}"
    print(header)
    print("-" * len(header))
    for name, runs in rows.items():
        print(
            f"{name:<26} {med(runs, 'rate'):>7.0f} {med(runs, 'cpu_us'):>12.1f} "
            f"{med(runs, 'cpu_us') / reference:>7.2f}x {med(runs, 'redis_us'):>11.1f} {med(runs, 'batch'):>8.1f}"
        )
    print("(medians; 'vs this': client CPU per callback over this checkout's, in this run)")
    if stats:
        print()
        print("redis-server time per callback by command (INFO commandstats of each intake's last run; the")
        print("commands a script runs are counted inside its EVALSHA too; network, parsing and the AOF write")
        print("of the event loop are outside all of them):")
        for name, (cmdstats, n) in stats.items():
            print(f"  {name}:")
            for cmd, v in sorted(cmdstats.items(), key=lambda kv: -kv[1]["usec"]):
                if v["calls"] >= n // 2 or cmd in ("cmdstat_evalsha", "cmdstat_eval"):
                    print(
                        f"    {cmd.removeprefix('cmdstat_'):<10} {v['calls'] / n:5.1f} calls/cb "
                        f"{v['usec'] / n:6.1f} us/cb  ({v['usec_per_call']:.1f} us/call)"
                    )


if __name__ == "__main__":
    main()
