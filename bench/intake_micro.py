"""Benchmark: the intake alone, in one process, against a real redis-server: CPU per durable callback.

    .venv/bin/python bench/intake_micro.py --seconds 3 --concurrency 64            # this checkout's Intake
    .venv/bin/python bench/intake_micro.py --seconds 3 --baseline-rev 2a3c01e      # + the intake of that rev
    .venv/bin/python bench/intake_micro.py --parts                                 # the per-callback parts

``--concurrency`` coroutines each submit distinct, verified kie.ai success callbacks (events and deliveries
built beforehand, as the handler hands them over) back to back for ``--seconds``; the figures are the
process's CPU time (``time.process_time``) and redis-server's (``INFO cpu`` used_cpu_user + used_cpu_sys)
per accepted callback, and the mean batch size (scripts per pipeline) where the intake counts them.
Every callback must come back ``accepted`` and the queue must hold one job per callback.

``--baseline-rev REV`` also measures ``veo_archiver/intake.py`` as of git REV (``git show``, read-only),
loaded as a module of its own, in the same run; ``--variant-file PATH`` (repeatable) any other intake.py (an
experiment: a copy with one part taken out, to measure that part by difference).
``--loop uvloop`` runs the coroutines on uvloop.
``--parts`` times the per-callback pieces (timeit, best of 3) for where the microseconds go.
``--profile`` prints cProfile's top functions (tottime) for this checkout's intake; ``--commandstats`` splits
redis-server's time per callback by command (``INFO commandstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import logging
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import types
import uuid
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, machine_description

KEY = "bench-kie-hmac-key"


def make_callbacks(settings: Any, prefix: str, count: int) -> list[tuple[Any, Any]]:
    from receiver.verify import verify_provider
    from veo_archiver.intake import Delivery
    from veo_archiver.sim import kie as kie_sim

    out = []
    now = time.time()
    for n in range(count):
        task_id = f"{prefix}-{n:07d}"
        body = json.dumps(kie_sim.success_body(task_id, [f"https://tempfile.aiquickdraw.com/v/{task_id}.mp4"]))
        headers = {k.lower(): v for k, v in kie_sim.signed_headers(KEY, task_id, int(now)).items()}
        headers |= {"host": "127.0.0.1:8000", "content-length": str(len(body)), "user-agent": "kie-callback/1.0"}
        event = verify_provider(settings, "kie", headers, body.encode(), now=now, query={})
        out.append((event, Delivery(body=body.encode(), headers=headers, received_at=now, remote="127.0.0.1",
                                    path="/callbacks/kie")))  # fmt: skip
    return out


def load_rev(rev: str) -> types.ModuleType:
    text = subprocess.run(["git", "show", f"{rev}:veo_archiver/intake.py"], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="intake-rev-")) / f"intake_{rev}.py"
    path.write_text(text)
    return load_file(path)


def load_file(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"intake_{path.stem}_{uuid.uuid4().hex[:6]}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def drive(intake_cls: Any, settings: Any, callbacks: list[tuple[Any, Any]], concurrency: int,
                seconds: float, profile: cProfile.Profile | None) -> dict[str, Any]:  # fmt: skip
    import redis.asyncio as aioredis

    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=32, timeout=5.0, socket_timeout=5.0))  # fmt: skip
    try:
        intake = intake_cls(settings, client)
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
        batches0, batched0 = getattr(intake, "batches", 0), getattr(intake, "batched", 0)
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
        batches = getattr(intake, "batches", 0) - batches0
        return {"n": n, "outcomes": outcomes, "cpu_us": cpu / n * 1e6, "redis_us": redis_cpu / n * 1e6,
                "rate": n / wall,
                "batch": (getattr(intake, "batched", 0) - batched0) / batches if batches else 1.0}  # fmt: skip
    finally:
        await client.aclose()


def parts(settings: Any) -> None:
    from rq.scripts import _build_hset_args

    from receiver.verify import verify_provider
    from veo_archiver import intake as I
    from veo_archiver import redis_keys
    from veo_archiver.logs import JsonFormatter

    ((event, delivery),) = make_callbacks(settings, "parts", 1)
    template = I.JobTemplate(settings)
    env = I.build_envelope(event, delivery, "d" * 32)
    job_id = redis_keys.job_id(event.provider, event.task_id, event.status.value)
    from veo_archiver import jsontext

    ej, cj = jsontext.dumpb(event.to_json()), jsontext.dumpb(delivery.to_json())
    envj = I.envelope_json(ej, delivery, "d" * 32)

    def hset() -> Any:
        return template.hset_args(envj, provider="kie", task_id=event.task_id, status="succeeded", delivery_id="d")

    data = template._data_head + envj + template._data_tail
    log = logging.getLogger("bench.parts")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.INFO)
    rows = [
        ("verify_provider (HMAC + parse), in the handler", lambda: verify_provider(
            settings, "kie", delivery.headers, delivery.body, now=delivery.received_at, query={})),
        ("old: build_job (Job.create)", lambda: I.build_job(settings, job_id, env)),
        ("old: _build_hset_args (incl. zlib)", lambda: _build_hset_args(I.build_job(settings, job_id, env))),
        ("old: json.dumps(record) x2", lambda: (json.dumps({"e": event.to_json(), "c": delivery.to_json()}),
                                                json.dumps({"e": event.to_json(), "c": delivery.to_json()}))),
        ("new: event + callback JSON (once, orjson)", lambda: (jsontext.dumpb(event.to_json()),
                                                               jsontext.dumpb(delivery.to_json()))),
        ("new: envelope + record splices", lambda: (I.envelope_json(ej, delivery, "d"),
                                                    I.record_prefix(ej, cj, "d", None))),
        ("new: JobTemplate.hset_args (no zlib any more)", hset),
        ("  zlib.compress(data), no longer paid", lambda: __import__("zlib").compress(data)),
        ("uuid4().hex", lambda: uuid.uuid4().hex),
        ("redis keys (job id, dedupe, deliveries)", lambda: (
            redis_keys.job_id("kie", event.task_id, "succeeded"), redis_keys.dedupe_key("kie", event.task_id, "s"),
            redis_keys.deliveries_key("kie", event.task_id))),
        ("INFO log line 'callback accepted' (3 fields)", lambda: log.info("callback accepted", extra={
            "provider": "kie", "task_id": event.task_id, "job_id": job_id, "status": "succeeded"})),
    ]  # fmt: skip
    print(f"{'part':<48} {'us/call':>8}")
    for name, fn in rows:
        best = min(timeit.repeat(fn, number=2000, repeat=3)) / 2000 * 1e6
        print(f"{name:<48} {best:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--baseline-rev", default="")
    parser.add_argument("--variant-file", action="append", default=[], help="another intake.py to measure too")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--appendfsync", default="everysec", choices=("everysec", "always", "no"))
    parser.add_argument("--parts", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--commandstats", action="store_true", help="redis-server time per command per callback")
    opts = parser.parse_args()
    logging.getLogger("veo_archiver").setLevel(logging.WARNING)
    logging.getLogger(f"intake_{opts.baseline_rev}").setLevel(logging.WARNING)

    from tests.servers import RedisServer
    from veo_archiver.intake import Intake
    from veo_archiver.settings import Settings

    impls: list[tuple[str, Any]] = [("this checkout", Intake)]
    if opts.baseline_rev:
        impls.insert(0, (f"intake.py @ {opts.baseline_rev}", load_rev(opts.baseline_rev).Intake))
    for path in opts.variant_file:
        impls.append((f"{Path(path).parent.parent.name}/{Path(path).name}"[-24:], load_file(Path(path)).Intake))
    runner = asyncio.run
    if opts.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    with tempfile.TemporaryDirectory(prefix="intake-micro-") as tmp, \
            RedisServer(Path(tmp) / "redis", appendfsync=opts.appendfsync) as redis:  # fmt: skip
        settings = Settings(redis_url=redis.url, kie_hmac_keys=(KEY,))
        import redis as redis_py

        version = redis.client().info("server")["redis_version"]
        print(machine_description(("redis", "hiredis", "rq", "uvloop"), [
            f"redis:    {version} (AOF {opts.appendfsync}); hiredis in redis-py: {redis_py.utils.HIREDIS_AVAILABLE}; "
            f"loop {opts.loop}; {opts.concurrency} concurrent submitters, {opts.seconds:g} s per run"]))  # fmt: skip
        print()
        if opts.parts:
            parts(settings)
            print()
        per = int(opts.seconds * 20000) + opts.concurrency
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in impls}
        stats: dict[str, tuple[dict[str, Any], int]] = {}
        for rep in range(opts.repeat):
            for name, cls in impls if rep % 2 == 0 else list(reversed(impls)):
                redis.client().flushall()
                callbacks = make_callbacks(settings, f"{rep}-{uuid.uuid4().hex[:6]}", per)
                prof = cProfile.Profile() if opts.profile and cls is Intake else None
                redis.client().config_resetstat()
                r = runner(drive(cls, settings, callbacks, opts.concurrency, opts.seconds, prof))
                stats[name] = (redis.client().info("commandstats"), r["n"] + opts.concurrency)
                if r["outcomes"] != {"accepted": r["n"]}:
                    print(f"  !! {name}: outcomes {r['outcomes']}")
                queued = redis.client().llen("rq:queue:veo-archiver")
                if queued != r["n"] + opts.concurrency:
                    print(f"  !! {name}: {queued} jobs queued for {r['n'] + opts.concurrency} accepted")
                rows[name].append(r)
                print(f"  run {rep + 1} {name:<24} {r['n']:6d} cb  {r['rate']:7.0f} cb/s  client {r['cpu_us']:6.1f} "
                      f"us/cb  redis {r['redis_us']:5.1f} us/cb  batch {r['batch']:5.1f}", flush=True)  # fmt: skip
                if prof:
                    out = io.StringIO()
                    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
                    print(out.getvalue())
        print()
        print(f"{'intake':<26} {'cb/s':>7} {'client us/cb':>12} {'redis us/cb':>11} {'scripts/batch':>13}")
        for name, runs in rows.items():

            def med(f: str, runs: list[dict[str, Any]] = runs) -> float:
                return float(statistics.median(r[f] for r in runs))

            print(
                f"{name:<26} {med('rate'):>7.0f} {med('cpu_us'):>12.1f} {med('redis_us'):>11.1f} {med('batch'):>13.1f}"
            )
        if opts.commandstats:
            print()
            print("redis-server time per callback by command (INFO commandstats of each intake's last run; the")
            print("commands a script runs are counted inside its EVALSHA too; network, parsing and the AOF write")
            print("of the event loop are outside all of them):")
            for name, (cmdstats, n) in stats.items():
                print(f"  {name}:")
                for cmd, v in sorted(cmdstats.items(), key=lambda kv: -kv[1]["usec"]):
                    # per-callback commands, and the script itself (one call per batch since the batched script)
                    if v["calls"] >= n // 2 or cmd == "cmdstat_evalsha":
                        print(f"    {cmd.removeprefix('cmdstat_'):<10} {v['calls'] / n:5.1f} calls/cb "
                              f"{v['usec'] / n:6.1f} us/cb  ({v['usec_per_call']:.1f} us/call)")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
