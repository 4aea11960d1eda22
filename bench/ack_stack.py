"""Benchmark: durable callbacks per CPU-second, by server stack and process count, with a profile.

    .venv/bin/python bench/ack_stack.py --duration 5 --repeat 2 --variants \\
        'bare@serve,receiver-warning@serve,receiver-warning@servex2,bare@asyncio+h11,receiver-warning@asyncio+h11'
    .venv/bin/python bench/ack_stack.py --duration 5 --repeat 1 --baseline /tmp/base \\
        --variants 'bare@serve,baseline-warning@serve,receiver-warning@serve'
    .venv/bin/python bench/ack_stack.py --duration 5 --repeat 1 --profile 'receiver-warning@serve' \\
        --variants 'bare@serve,receiver-warning@serve'

Same generator as bench/ack_path.py (wrk, one thread, 64 connections, pre-signed kie.ai callbacks with unique
task ids, 2 s warm-up: benchlib + requests.lua), against servers started by bench/ack_servers.py. A variant is
``APP[-LEVEL]@STACK[xN][/nohiredis][/mtrim]``:

  APP        ``bare`` (the reference: read the body, answer the ACK), ``receiver`` (this checkout's
             ``receiver.app.create_app``) or ``baseline`` (the same from the checkout ``--baseline PATH``)
  LEVEL      ``info`` (one JSON log line per callback) or ``warning`` (default)
  STACK      ``serve``: uvicorn exactly as ``veo-archiver serve`` configures it; or uvicorn's ``loop`` and
             ``http`` named: ``asyncio+h11`` (what uvicorn gives without uvloop/httptools),
             ``uvloop+httptools``, or a mix (then without ``serve``'s header-read guard: bench/ack_servers.py)
  xN         N server processes on one port (SO_REUSEPORT), one Redis
  /nohiredis redis-py without hiredis even where it is installed
  /mtrim     the server processes run with MALLOC_TRIM_THRESHOLD_=16 MiB (see MTRIM_ENV)

Every receiver variant is compared with ``bare`` on the same stack measured in the same run ("vs bare"), with
as many processes where the run has that variant (``bare@servex4`` for ``receiver@servex4``).
Per run: answered requests/s, wrk's p50/p99, non-2xx answers, jobs queued vs 200s answered, and CPU per
answered request of the server processes (all of them), of redis-server (``INFO cpu``: used_cpu_user +
used_cpu_sys delta, split into its main thread, script time from ``INFO commandstats`` and background threads)
and of wrk. ``--profile VARIANT`` adds one run of that variant under py-spy (``--pyspy``) and splits its
samples by where they fall (uvicorn, Starlette, verification, intake, redis-py, log...), converted to
microseconds per callback with the CPU per callback of that variant's measured runs.

``--redis-bin PATH``: the redis-server (or valkey-server) binary to run; ``--appendfsync``: its AOF policy (the
receiver waits for WAITAOF when the server is >= 7.2). ``--site DIR``: a directory put on the servers'
PYTHONPATH (uvloop, httptools, hiredis installed with ``pip install --target DIR``), when they are not in the venv.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    CLK,
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
    wait_until,
    write_requests,
    wrk_script,
    wrk_version,
)

_VARIANT = re.compile(
    r"^(bare|receiver|baseline)(?:-(info|warning))?@(serve|(?:asyncio|uvloop)\+(?:h11|httptools))(?:x(\d+))?"
    r"((?:/nohiredis|/mtrim)*)$"
)
#: ``/mtrim``: glibc keeps up to this much free memory at the top of the heap instead of giving it back at once
#: (zlib allocates and frees ~256 KiB per compress(): without it, each compress page-faults ~20 pages back in)
MTRIM_ENV = {"MALLOC_TRIM_THRESHOLD_": str(16 * 1024 * 1024)}


@dataclass(frozen=True)
class Variant:
    name: str
    app: str
    level: str
    stack: str  # "serve" or LOOP+HTTP
    processes: int
    hiredis: bool
    mtrim: bool = False

    @classmethod
    def parse(cls, text: str) -> Variant:
        name = text.strip().replace(" ", "")
        m = _VARIANT.match(name)
        if not m:
            raise SystemExit(f"bad variant {text!r}: expected APP[-LEVEL]@STACK[xN][/nohiredis][/mtrim]")
        app, level, stack, procs, flags = m.groups()
        return cls(name, app, level or "warning", stack, int(procs or 1), "/nohiredis" not in flags, "/mtrim" in flags)


# ---------------------------------------------------------------------------------------------------------
# processes


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_scripts_s(client: Any) -> float:
    """Seconds redis-server's main thread spent running scripts so far (``INFO commandstats``: EVAL and EVALSHA;
    the commands a script calls are counted again under their own names, so they are not added)."""
    stats = client.info("commandstats")
    return sum(float(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in ("eval", "evalsha")) / 1e6


def thread_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds of each thread of ``pid`` by thread name: redis-server's main thread apart from its
    background threads (bio_aof_fsync, bio_close_file, bio_lazy_free, jemalloc's), which INFO cpu sums in."""
    out: dict[str, float] = collections.defaultdict(float)
    if pid is None:
        return out
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] += (int(fields[11]) + int(fields[12])) / CLK
    return out


def redis_reads(client: Any) -> int:
    """Read events redis-server processed: with group commit, about one per batch (a pipeline in one read)."""
    return int(client.info("stats").get("total_reads_processed", 0))


class Server:
    def __init__(self, variant: Variant, redis_url: str, tmp: Path, checkout: Path, site: str | None) -> None:
        self.variant = variant
        self.port = free_port()
        ready = tmp / f"ready-{self.port}"
        ready.mkdir()
        env = checkout_env(checkout, *([site] if site else []))
        env |= {
            "REDIS_URL": redis_url,
            "KIE_WEBHOOK_HMAC_KEYS": KIE_KEY,
            "LOG_LEVEL": variant.level.upper(),
            "LOG_FORMAT": "json",
            "SPOOL_DIR": str(tmp / f"spool-{self.port}"),
            **(MTRIM_ENV if variant.mtrim else {}),
        }
        cmd = [
            sys.executable,
            str(REPO_ROOT / "bench" / "ack_servers.py"),
            "bare" if variant.app == "bare" else "receiver",
            "--port",
            str(self.port),
            "--stack",
            variant.stack,
            "--processes",
            str(variant.processes),
            "--ready-dir",
            str(ready),
        ]
        if not variant.hiredis:
            cmd.append("--no-hiredis")
        self.service = Service(cmd, tmp / f"{variant.app}-{self.port}.log", env=env, cwd=checkout)
        started = Path(ready)
        wait_until(
            lambda: len(list(started.iterdir())) >= variant.processes,
            self.service.proc,
            variant.name,
            self.service.log_path,
        )
        self.pids = tree_pids(self.service.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks/kie"

    def log_bytes(self) -> int:
        return self.service.log_path.stat().st_size

    def stop(self) -> None:
        self.service.stop(20)


# ---------------------------------------------------------------------------------------------------------
# one run


def one_run(
    variant: Variant, tag: str, redis: Any, tmp: Path, opts: argparse.Namespace, profile_to: Path | None = None
) -> dict[str, Any]:
    rds = redis.client()
    rds.flushall()
    checkout = opts.baseline if variant.app == "baseline" else REPO_ROOT
    server = Server(variant, redis.url, tmp, checkout, opts.site)
    spy: subprocess.Popen[bytes] | None = None
    try:
        cycle = wrk_script(tmp / "cycle.lua")
        warm = tmp / "warm.req"
        write_requests(warm, f"warm-{tag}-{variant.name}", 3000, server.port, parts=opts.threads)
        run_wrk(
            cycle,
            server.url,
            [str(warm), "0"],
            connections=opts.connections,
            threads=opts.threads,
            seconds=2,
            out=tmp / "wrk-warm.out",
        )
        reqfile = tmp / "main.req"
        write_requests(reqfile, f"run-{tag}-{variant.name}", opts.requests, server.port, parts=opts.threads)
        queued0 = int(rds.llen(QUEUE_KEY))
        log0 = server.log_bytes()
        if profile_to is not None:
            spy = subprocess.Popen(
                [
                    opts.pyspy,
                    "record",
                    "--pid",
                    str(server.pids[-1]),
                    "--duration",
                    str(max(1, int(opts.duration) - 1)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(profile_to),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.3)
        cpu0, redis0, reads0 = tree_cpu(server.pids), redis_cpu(rds), redis_reads(rds)
        commands0, threads0 = redis_scripts_s(rds), thread_cpu(redis.pid)
        started = time.monotonic()
        result, wrk_cpu = run_wrk(
            cycle,
            server.url,
            [str(reqfile), "0"],
            connections=opts.connections,
            threads=opts.threads,
            seconds=opts.duration,
            out=tmp / "wrk.out",
        )
        result["window_s"] = time.monotonic() - started  # wrk's start-up (reading the request file) included
        result["server_cpu_s"] = tree_cpu(server.pids) - cpu0
        result["redis_cpu_s"] = redis_cpu(rds) - redis0
        result["redis_reads"] = redis_reads(rds) - reads0
        result["redis_scripts_s"] = redis_scripts_s(rds) - commands0
        threads = thread_cpu(redis.pid)
        main = threads.pop("redis-server", 0.0) - threads0.pop("redis-server", 0.0)
        result["redis_main_s"] = main
        result["redis_background_s"] = sum(threads.values()) - sum(threads0.values())
        result["wrk_cpu_s"] = wrk_cpu
        result["log_bytes"] = server.log_bytes() - log0
        result["queued"] = int(rds.llen(QUEUE_KEY)) - queued0
        if spy is not None:
            spy.wait(30)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        server.stop()
        rds.close()
    result["variant"] = variant.name
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    if result["errors"]:
        print(
            f"  !! {variant.name}: {result['errors']} errors / non-2xx "
            f"{ {k: v for k, v in result.items() if k.startswith('err')} }"
        )
    if variant.app != "bare":
        if result["wrapped"]:
            print(f"  !! {variant.name}: the {opts.requests} pre-signed requests ran out: raise --requests")
        elif not (result["requests"] <= result["queued"] <= result["requests"] + opts.connections):
            print(f"  !! {variant.name}: {result['queued']} jobs queued for {result['requests']} answers")
    return result


def per_req(r: dict[str, Any], field: str) -> float:
    return float(r[field]) * 1e6 / max(int(r["requests"]), 1)


def describe(r: dict[str, Any]) -> str:
    return (
        f"{r['rps']:8.0f} req/s  p50 {r['p50_us'] / 1000:6.1f} ms  p99 {r['p99_us'] / 1000:7.1f} ms  "
        f"server {per_req(r, 'server_cpu_s'):5.0f} us/req  redis {per_req(r, 'redis_cpu_s'):5.1f} us/req "
        f"(main thread {per_req(r, 'redis_main_s'):5.1f}, in scripts {per_req(r, 'redis_scripts_s'):5.1f}, "
        f"background threads {per_req(r, 'redis_background_s'):5.1f}; main thread busy "
        f"{r['redis_main_s'] / r['window_s']:4.0%} of {r['window_s']:.1f} s, "
        f"wrk ran {r['duration_us'] / 1e6:.1f} s)  "
        f"wrk {per_req(r, 'wrk_cpu_s'):4.0f} us/req  cb/read {r['requests'] / max(r['redis_reads'], 1):5.1f}  "
        f"non-2xx {r['err_status']}  errors {r['errors']}"
    )


# ---------------------------------------------------------------------------------------------------------
# profile


#: (bucket, file, function names or None for any): the deepest frame that matches decides. ``file`` is matched
#: against py-spy's short file name: a package's first directory ("redis/") or the module's base name
BUCKETS: list[tuple[str, str, tuple[str, ...] | None]] = [
    ("log line (logging + JsonFormatter)", "logging/", None),
    ("log line (logging + JsonFormatter)", "logs.py", None),
    ("redis-py (pool, pack, parse)", "redis/", None),
    ("redis-py (pool, pack, parse)", "hiredis/", None),
    ("rq", "rq/", None),
    ("intake (submit, group commit, job hash, wire format)", "intake.py", None),
    ("intake (submit, group commit, job hash, wire format)", "intake_script.py", None),
    ("intake (submit, group commit, job hash, wire format)", "group_commit.py", None),
    ("intake (submit, group commit, job hash, wire format)", "job_template.py", None),
    ("intake (submit, group commit, job hash, wire format)", "jsontext.py", None),
    ("intake (submit, group commit, job hash, wire format)", "redact.py", None),
    ("intake (submit, group commit, job hash, wire format)", "redis_keys.py", None),
    ("intake (submit, group commit, job hash, wire format)", "event.py", None),
    ("intake (submit, group commit, job hash, wire format)", "uuid.py", None),
    ("intake (submit, group commit, job hash, wire format)", "clock.py", None),
    ("verify + parse (HMAC, JSON, provider)", "receiver/verify.py", None),
    ("verify + parse (HMAC, JSON, provider)", "verify.py", None),
    ("verify + parse (HMAC, JSON, provider)", "providers/", None),
    ("verify + parse (HMAC, JSON, provider)", "urls.py", None),
    ("verify + parse (HMAC, JSON, provider)", "payload.py", None),
    ("verify + parse (HMAC, JSON, provider)", "hmac.py", None),
    ("handler (receiver/*.py, prometheus)", "receiver/", None),
    ("handler (receiver/*.py, prometheus)", "prometheus_client/", None),
    ("the rest of veo_archiver/", "veo_archiver/", None),
    ("bare handler (ack_servers.py)", "ack_servers.py", None),
    ("Starlette (routing, request, response)", "starlette/", None),
    ("uvicorn + HTTP parser (h11/httptools)", "uvicorn/", None),
    ("uvicorn + HTTP parser (h11/httptools)", "h11/", None),
    ("uvicorn + HTTP parser (h11/httptools)", "httptools/", None),
    ("event loop (asyncio/uvloop)", "asyncio/", None),
    ("event loop (asyncio/uvloop)", "uvloop/", None),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _matches(file: str, pattern: str) -> bool:
    if pattern.endswith("/"):
        return file.startswith(pattern) or f"/{pattern}" in file
    return file == pattern or file.endswith(f"/{pattern}")


def bucket_profile(path: Path) -> collections.Counter[str]:
    shares: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        chosen = "other"
        for frame in reversed(frames):
            m = _FRAME.match(frame)
            func, file = (m.group("func"), m.group("file")) if m else (frame, "")
            hit = next(
                (b for b, pat, funcs in BUCKETS if _matches(file, pat) and (funcs is None or func in funcs)), None
            )
            if hit:
                chosen = hit
                break
        shares[chosen] += int(count)
    return shares


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="APP[-LEVEL]@STACK[xN][/nohiredis][/mtrim],...")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=60000)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, served as 'baseline'")
    parser.add_argument("--redis-bin", default="", help="redis-server/valkey-server binary (default: benchlib's)")
    parser.add_argument("--appendfsync", default="everysec", choices=("everysec", "always", "no"))
    parser.add_argument("--site", default=None, help="extra dir on the servers' PYTHONPATH (uvloop, httptools...)")
    parser.add_argument("--profile", default="", help="one more run of this variant under py-spy")
    parser.add_argument("--pyspy", default=shutil.which("py-spy") or "py-spy", help="py-spy (pip install py-spy)")
    opts = parser.parse_args()
    variants = [Variant.parse(v) for v in opts.variants.split(",") if v.strip()]
    for v in variants:
        if v.app != "bare" and not any(b.app == "bare" and b.stack == v.stack for b in variants):
            raise SystemExit(f"{v.name}: add bare@{v.stack}, its reference, to --variants")
    if any(v.app == "baseline" for v in variants) and not opts.baseline:
        raise SystemExit("a 'baseline' variant needs --baseline PATH (another checkout: git worktree add PATH REV)")
    opts.baseline = opts.baseline.resolve() if opts.baseline else None

    with tempfile.TemporaryDirectory(prefix="ack-stack-") as tmpname:
        tmp = Path(tmpname)
        with RedisServer(tmp / "redis", appendfsync=opts.appendfsync, binary=opts.redis_bin) as redis:
            info = redis.client().info("server")
            version = str(info.get("redis_version"))
            name = (
                f"valkey-server {info['valkey_version']} (redis_version {version})"
                if "valkey_version" in info
                else f"redis-server {version}"
            )
            waitaof = tuple(int(p) for p in version.split(".")[:2]) >= (7, 2)
            print(
                machine_description(
                    ("starlette", "uvicorn", "redis", "hiredis", "uvloop", "httptools", "rq"),
                    [
                        f"redis:    {name}, AOF appendfsync {opts.appendfsync}; receiver waits for WAITAOF: "
                        f"{'yes' if waitaof else 'no (needs 7.2)'}",
                        f"load:     {wrk_version()}; -t{opts.threads} -c{opts.connections}, "
                        f"2 s warm-up + "
                        f"{opts.duration:g} s, {opts.repeat} runs per variant, order alternating",
                        f"site:     {opts.site or '(venv only)'}; baseline: {opts.baseline or '-'}",
                    ],
                )
                + "\n(package versions above are the venv's; --site may add others)",
                flush=True,
            )
            print(flush=True)
            results: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
            for rep in range(opts.repeat):
                for v in variants if rep % 2 == 0 else list(reversed(variants)):
                    r = one_run(v, str(rep), redis, tmp, opts)
                    results[v.name].append(r)
                    print(f"  run {rep + 1} {v.name:<38} {describe(r)}", flush=True)
            profile: collections.Counter[str] | None = None
            if opts.profile:
                pv = Variant.parse(opts.profile)
                out = tmp / "profile.txt"
                r = one_run(pv, "profile", redis, tmp, opts, profile_to=out)
                print(f"  profiled {pv.name:<35} {describe(r)}", flush=True)
                profile = bucket_profile(out) if out.exists() else None
                if out.exists():
                    shutil.copy(out, Path(tempfile.gettempdir()) / "ack-stack-profile.txt")

    print()
    print_table(variants, results)
    if profile:
        pv = Variant.parse(opts.profile)
        runs = results.get(pv.name) or []
        cpu_us = statistics.median(per_req(r, "server_cpu_s") for r in runs) if runs else float("nan")
        total = sum(profile.values())
        print()
        print(
            f"profile of {pv.name} (py-spy, {total} samples; us/callback = share x {cpu_us:.0f} us, "
            f"the median server CPU per callback of its measured runs):"
        )
        for name, count in profile.most_common():
            print(f"  {name:<42} {count / total:6.1%}  {count / total * cpu_us:6.0f} us")
        print(f"  (raw collapsed stacks: {Path(tempfile.gettempdir()) / 'ack-stack-profile.txt'})")


def reference(variants: list[Variant], v: Variant) -> Variant:
    """The bare handler ``v`` is compared with: same stack and process count where the run has it, else the
    same stack with any count (the first listed)."""
    same_stack = [b for b in variants if b.app == "bare" and b.stack == v.stack]
    return next((b for b in same_stack if b.processes == v.processes), same_stack[0])


def print_table(variants: list[Variant], results: dict[str, list[dict[str, Any]]]) -> None:
    def med(name: str, f: str) -> float:
        return float(statistics.median(float(r[f]) for r in results[name]))

    def med_per(name: str, f: str) -> float:
        return float(statistics.median(per_req(r, f) for r in results[name]))

    header = (
        f"{'variant':<38} {'req/s med':>9} {'min-max':>11} {'vs bare':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'non-2xx':>7} {'srv us/cb':>9} {'redis us/cb':>11} {'wrk us/req':>10} {'cb/CPU-s':>8} "
        f"{'cb/read':>7}"
    )
    print(header)
    print("-" * len(header))
    for v in variants:
        rps = [r["rps"] for r in results[v.name]]
        bare = reference(variants, v)
        ratio = med(v.name, "rps") / med(bare.name, "rps")
        srv = med_per(v.name, "server_cpu_s")
        print(
            f"{v.name:<38} {med(v.name, 'rps'):>9.0f} {f'{min(rps):.0f}-{max(rps):.0f}':>11} {ratio:>7.2f}x "
            f"{med(v.name, 'p50_us') / 1000:>7.1f} {med(v.name, 'p99_us') / 1000:>7.1f} "
            f"{sum(r['err_status'] + r['errors'] for r in results[v.name]):>7} {srv:>9.0f} "
            f"{med_per(v.name, 'redis_cpu_s'):>11.1f} {med_per(v.name, 'wrk_cpu_s'):>10.0f} {1e6 / srv:>8.0f} "
            f"{statistics.median(r['requests'] / max(r['redis_reads'], 1) for r in results[v.name]):>7.1f}"
        )
    print(
        "(medians of the runs; 'vs bare': req/s over bare's on the same stack (and process count, where run) "
        "in this run; 'srv us/cb': CPU of "
        "all server processes per answered callback; 'redis us/cb': INFO cpu delta per callback; "
        "'cb/CPU-s': callbacks per server CPU-second; 'cb/read': answered callbacks per read event of "
        "redis-server, about the mean batch size; non-2xx: summed over runs)"
    )


if __name__ == "__main__":
    main()
