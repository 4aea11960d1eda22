"""Benchmark: the acknowledgement path. Signed kie.ai callbacks against the real receiver vs a bare handler.

    .venv/bin/python bench/ack_path.py --repeat 3 --duration 10            # needs wrk: apt-get install -y wrk
    .venv/bin/python bench/ack_path.py --repeat 2 --duration 5 --variants bare,receiver-warning,receiver-info
    .venv/bin/python bench/ack_path.py --baseline /tmp/base                # + another checkout, same run

THE GATE of the acknowledgement path: ``receiver-*`` over ``bare`` >= 0.3 (0.5 is the target), measured side by
side in one run. Starts a real redis-server (benchlib: AOF on, appendfsync everysec) and, for each run, one
server process on 127.0.0.1, then drives it with ``wrk``, one thread, 64 connections (``--connections``), a
2 s warm-up, then ``--duration`` seconds measured:

  bare-static       bench/ack_servers.py bare, wrk sending one fixed request (wrk's fastest path, no Lua per
                    request): the load generator's own ceiling
  bare              the same bare Starlette POST handler (reads the body, answers the ACK), wrk cycling
                    through pre-signed requests: THE REFERENCE (same generator as the receiver runs)
  receiver-info     ``veo-archiver serve`` of this checkout: verify the HMAC, dedupe and enqueue (the intake),
                    200 after Redis has it; LOG_LEVEL=INFO (one JSON line per callback)
  receiver-warning  the same with LOG_LEVEL=WARNING
  baseline-info, baseline-warning
                    with ``--baseline PATH``: ``veo-archiver serve`` of that checkout, in the same run
  rq-sync           bench/ack_servers.py rq-sync: the signature checked, then a blocking
                    ``Queue.enqueue(unique=True)`` inside the async handler (the naive design)

The per-request bodies and signatures cannot be made in wrk's Lua (no HMAC there), so the parent writes N
complete signed HTTP requests (unique task ids, fresh timestamps) to a file right before each run, and
bench/requests.lua hands them out in turn. ``bare-static`` vs ``bare`` shows what that costs the generator.
The bench servers run uvicorn exactly as ``veo-archiver serve`` configures it (``receiver.server.config``).

After each receiver run the number of jobs that landed in the queue is compared with the 200s wrk counted
(they differ by at most the requests still in flight), and Redis is flushed. CPU time of the server, of
redis-server and of wrk is read from /proc and shown per request. Finally, a paced run offers
``--paced-fraction`` of the receiver's median saturated throughput (wrk ``delay()``, 64 connections) to
the receiver (INFO) and to the bare handler: latency below saturation.

Runs alternate order between repeats; figures are medians. Exit status 1 when receiver-info or
receiver-warning falls under the gate. Not a unit test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    KIE_KEY,
    QUEUE_KEY,
    REPO_ROOT,
    RedisServer,
    Service,
    checkout_env,
    cpu_seconds,
    free_port,
    machine_description,
    run_wrk,
    write_requests,
    wrk_script,
    wrk_version,
)

VARIANTS = ("bare-static", "bare", "receiver-info", "receiver-warning", "rq-sync")
REFERENCE = "bare"
GATE, TARGET = 0.3, 0.5  # receiver / bare: the acknowledgement path must not fall under GATE; TARGET is the aim
ENQUEUING = ("receiver", "baseline", "rq-sync")


class Server:
    """One server process (receiver or a bench app) on a free port, its output in a log file."""

    def __init__(self, variant: str, redis_url: str, tmp: Path, baseline: Path | None) -> None:
        self.variant = variant
        self.port = free_port()
        level = "WARNING" if variant.endswith("-warning") or variant == "rq-sync" else "INFO"
        checkout = baseline if variant.startswith("baseline") and baseline else REPO_ROOT
        env = checkout_env(checkout)
        env |= {
            "REDIS_URL": redis_url,
            "KIE_WEBHOOK_HMAC_KEYS": KIE_KEY,
            "LOG_LEVEL": level,
            "LOG_FORMAT": "json",
            "SPOOL_DIR": str(tmp / f"spool-{self.port}"),
        }
        log = tmp / f"{variant}-{self.port}.log"
        if variant.startswith(("receiver", "baseline")):
            args = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
            self.service = Service.cli(args, log, env, checkout)
        else:
            app = "bare" if variant.startswith("bare") else "rq-sync"
            cmd = [sys.executable, str(REPO_ROOT / "bench" / "ack_servers.py"), app, "--port", str(self.port)]
            self.service = Service(cmd, log, env=env, cwd=checkout)
        self.service.wait_http(f"http://127.0.0.1:{self.port}/healthz")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks/kie"

    @property
    def pid(self) -> int:
        return self.service.pid

    def log_bytes(self) -> int:
        return self.service.log_path.stat().st_size

    def stop(self) -> None:
        self.service.stop(15)


# ---------------------------------------------------------------------------------------------------------
# one run


def one_run(
    variant: str, run: str, redis: Any, tmp: Path, opts: argparse.Namespace, *, paced_rate: float | None = None
) -> dict[str, Any]:
    rds = redis.client()
    rds.flushall()
    server = Server(variant, redis.url, tmp, opts.baseline)
    try:
        cycle, paced = wrk_script(tmp / "cycle.lua"), wrk_script(tmp / "paced.lua", paced=True)
        warm = tmp / "warm.req"
        write_requests(warm, f"warm-{run}-{variant}", 4000, server.port, parts=opts.threads)
        run_wrk(
            cycle,
            server.url,
            [str(warm), "0"],
            connections=opts.connections,
            threads=opts.threads,
            seconds=2,
            out=tmp / "wrk-warm.out",
        )
        if variant == "bare-static":
            from veo_archiver.sim import kie as kie_sim

            body = json.dumps(kie_sim.success_body("static-task", ["https://x.example/v.mp4"])).encode()
            script = wrk_script(tmp / "static.lua", static=(body, kie_sim.signed_headers(KIE_KEY, "static-task")))
            args: list[str] = []
        else:
            reqfile = tmp / "main.req"
            write_requests(reqfile, f"run-{run}-{variant}", opts.requests, server.port, parts=opts.threads)
            delay_ms = opts.connections / paced_rate * 1000 if paced_rate else 0
            script = paced if paced_rate else cycle
            args = [str(reqfile), f"{delay_ms:.3f}"]
        queued0 = int(rds.llen(QUEUE_KEY))
        log0 = server.log_bytes()
        cpu_srv0, cpu_redis0 = cpu_seconds(server.pid), cpu_seconds(redis.pid)
        result, wrk_cpu = run_wrk(
            script,
            server.url,
            args,
            connections=opts.connections,
            threads=opts.threads,
            seconds=opts.duration,
            out=tmp / "wrk.out",
        )
        result["server_cpu_s"] = cpu_seconds(server.pid) - cpu_srv0
        result["redis_cpu_s"] = cpu_seconds(redis.pid) - cpu_redis0
        result["wrk_cpu_s"] = wrk_cpu
        result["log_bytes"] = server.log_bytes() - log0
        result["queued"] = int(rds.llen(QUEUE_KEY)) - queued0
    finally:
        server.stop()
    result["variant"] = variant
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    errors = sum(result[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    result["errors"] = errors
    if errors:
        counts = {k: v for k, v in result.items() if k.startswith("err")}
        print(f"  !! {variant}: {errors} errors: {json.dumps(counts)}")
    if variant.startswith(ENQUEUING):
        if result["wrapped"]:
            print(
                f"  !! {variant}: the {opts.requests} pre-signed requests ran out (duplicates sent): raise --requests"
            )
        elif not (result["requests"] <= result["queued"] <= result["requests"] + opts.connections):
            print(f"  !! {variant}: {result['queued']} jobs queued for {result['requests']} answers")
    return result


def describe(r: dict[str, Any]) -> str:
    per = 1e6 / max(r["requests"], 1)
    return (
        f"{r['rps']:8.0f} req/s  p50 {r['p50_us'] / 1000:6.1f} ms  p99 {r['p99_us'] / 1000:7.1f} ms  "
        f"server {r['server_cpu_s'] * per:5.0f} us/req  redis {r['redis_cpu_s'] * per:4.0f} us/req  "
        f"wrk {r['wrk_cpu_s'] * per:4.0f} us/req  log {r['log_bytes'] / max(r['requests'], 1):4.0f} B/req"
        + (f"  queued {r['queued']}" if r["variant"].startswith(ENQUEUING) else "")
    )


def print_table(results: dict[str, list[dict[str, Any]]], paced: list[dict[str, Any]]) -> None:
    def med(v: str, f: str) -> float:
        return float(statistics.median(float(r[f]) for r in results[v]))

    ref = med(REFERENCE, "rps")
    header = (
        f"{'variant':<17} {'req/s med':>9} {'min-max':>11} {'p50 ms':>7} {'p99 ms':>7} {'vs bare':>8} "
        f"{'srv us/req':>10} {'redis us/req':>12} {'wrk us/req':>10} {'log B/req':>9}"
    )
    print(header)
    print("-" * len(header))
    for v in results:
        rps = [r["rps"] for r in results[v]]

        def per(field: str, v: str = v) -> float:
            scale = 1 if field == "log_bytes" else 1e6  # bytes per request, else CPU microseconds per request
            return float(statistics.median(r[field] * scale / max(r["requests"], 1) for r in results[v]))

        print(
            f"{v:<17} {med(v, 'rps'):>9.0f} {f'{min(rps):.0f}-{max(rps):.0f}':>11} "
            f"{med(v, 'p50_us') / 1000:>7.1f} {med(v, 'p99_us') / 1000:>7.1f} {med(v, 'rps') / ref:>7.2f}x "
            f"{per('server_cpu_s'):>10.0f} {per('redis_cpu_s'):>12.0f} {per('wrk_cpu_s'):>10.0f} "
            f"{per('log_bytes'):>9.0f}"
        )
    print()
    for v in ("receiver-info", "receiver-warning", "baseline-info", "baseline-warning"):
        if v in results:
            ratio = med(v, "rps") / ref
            p99 = med(v, "p99_us") / 1000
            print(
                f"{v}: receiver/bare {ratio:.2f}x (gate >= {GATE}: {'PASS' if ratio >= GATE else 'FAIL'}; "
                f"target {TARGET}: {'MET' if ratio >= TARGET else 'MISSED'}), p99 {p99:.1f} ms at "
                f"{results[v][0]['connections']} connections (target <= 25 ms: {'MET' if p99 <= 25 else 'MISSED'})"
            )
    if "rq-sync" in results:
        print(f"rq-sync (blocking enqueue in the loop) / bare: {med('rq-sync', 'rps') / ref:.2f}x")
    if "bare-static" in results:
        print(
            f"generator: bare with per-request Lua / bare-static {ref / med('bare-static', 'rps'):.2f}x "
            f"(wrk CPU {statistics.median(r['wrk_cpu_s'] / r['duration_us'] * 1e6 for r in results['bare']):.0%}"
            " of one core during the bare runs)"
        )
    if paced:
        print()
        print("paced (offered load below saturation, wrk delay(), open-ish loop):")
        for r in paced:
            print(
                f"  {r['variant']:<17} offered {r['offered']:6.0f}/s  got {r['rps']:6.0f}/s  p50 "
                f"{r['p50_us'] / 1000:6.1f} ms  p90 {r['p90_us'] / 1000:6.1f} ms  p99 {r['p99_us'] / 1000:6.1f} ms  "
                f"max {r['max_us'] / 1000:6.1f} ms"
            )
    print(
        "(p50/p99: wrk's latency histogram, per request; 'us/req': CPU time of that process per answered "
        "request; median of the runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: leaves a core to the server)")
    parser.add_argument("--requests", type=int, default=60000, help="pre-signed requests per run (default 60000)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout, served as baseline-info/-warning in the same run (git worktree add PATH REV)",
    )
    parser.add_argument(
        "--paced-fraction",
        type=float,
        default=0.5,
        help="paced run at this fraction of the receiver's throughput (0: skip)",
    )
    opts = parser.parse_args()
    variants = tuple(v.strip() for v in opts.variants.split(",") if v.strip())
    if opts.baseline:
        opts.baseline = opts.baseline.resolve()
        variants += tuple(v for v in ("baseline-info", "baseline-warning") if v not in variants)
    if REFERENCE not in variants:
        raise SystemExit(f"the reference variant {REFERENCE!r} must be among --variants")

    with tempfile.TemporaryDirectory(prefix="ack-path-") as tmpname:
        tmp = Path(tmpname)
        with RedisServer(tmp / "redis") as redis:
            redis_version = redis.client().info("server")["redis_version"]
            print(
                machine_description(
                    ("starlette", "uvicorn", "uvloop", "httptools", "redis", "hiredis", "rq"),
                    [
                        "servers:  one process each, uvicorn as `veo-archiver serve` configures it "
                        f"(receiver.server.config); redis-server {redis_version} AOF appendfsync everysec",
                        f"load:     {wrk_version()}; -t{opts.threads} -c{opts.connections}, "
                        f"2 s warm-up + {opts.duration:g} s, "
                        f"{opts.repeat} runs per variant, order alternating, fresh server process per run",
                        f"baseline: {opts.baseline or '-'}",
                    ],
                ),
                flush=True,
            )
            print(flush=True)
            results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for rep in range(opts.repeat):
                order = variants if rep % 2 == 0 else tuple(reversed(variants))
                for v in order:
                    r = one_run(v, str(rep), redis, tmp, opts)
                    r["connections"] = opts.connections
                    results[v].append(r)
                    print(f"  run {rep + 1} {v:<17} {describe(r)}", flush=True)
            paced: list[dict[str, Any]] = []
            base = "receiver-info" if "receiver-info" in variants else None
            if opts.paced_fraction > 0 and base:
                rate = opts.paced_fraction * statistics.median(r["rps"] for r in results[base])
                for v in (base, REFERENCE):
                    r = one_run(v, "paced", redis, tmp, opts, paced_rate=rate)
                    r["offered"] = rate
                    paced.append(r)
                    print(f"  paced {v:<17} offered {rate:.0f}/s: {describe(r)}", flush=True)
            print()
            print_table(results, paced)
    gated = [v for v in ("receiver-info", "receiver-warning") if v in results]
    if any(statistics.median(r["rps"] for r in results[v]) < GATE * bare_rps(results) for v in gated):
        raise SystemExit(1)


def bare_rps(results: dict[str, list[dict[str, Any]]]) -> float:
    return float(statistics.median(r["rps"] for r in results[REFERENCE]))


if __name__ == "__main__":
    main()
