"""Benchmark: the acknowledgement path. Signed kie.ai callbacks against the real receiver vs a bare handler.

    /work/venv/bin/python bench/ack_path.py --repeat 3 --duration 10

Starts a real redis-server (tests/servers.py: AOF on, appendfsync everysec) and, for each run, one server
process on 127.0.0.1, then drives it with ``wrk`` (Debian package; ``apt-get install -y wrk``), one thread,
64 connections (``--connections``), a 2 s warm-up, then ``--duration`` seconds measured:

  bare-static       bench/ack_apps.py bare, wrk sending one fixed request (wrk's fastest path, no Lua per
                    request): the load generator's own ceiling
  bare              the same bare Starlette POST handler (reads the body, answers the ACK), wrk cycling
                    through pre-signed requests: THE REFERENCE (same generator as the receiver runs)
  receiver-info     ``veo-archiver serve`` (veo_archiver.cli.main, uvicorn): verify the HMAC, dedupe and enqueue with
                    the intake's Lua script (receiver/intake.py), 200 after that; LOG_LEVEL=INFO (one JSON
                    line per callback)
  receiver-warning  the same with LOG_LEVEL=WARNING
  candidate-info, candidate-warning
                    with ``--candidate PATH``: the receiver of another checkout (a change being measured),
                    in the same run
  rq-sync           bench/ack_apps.py rq-sync: same verification, then a blocking ``Queue.enqueue(unique=True)``
                    inside the async handler (the naive design, RQ-AND-STORAGE.md §6: about 0.1x)

The per-request bodies and signatures cannot be made in wrk's Lua (no HMAC there), so the parent writes N
complete signed HTTP requests (unique task ids, fresh timestamps) to a file right before each run, and a
Lua ``request()`` hands them out in turn. ``bare-static`` vs ``bare`` shows what that costs the generator.
All servers use uvicorn exactly as ``veo-archiver serve`` configures it (same loop and HTTP implementation:
whatever uvicorn picks in this venv, printed in the header).

After each receiver run the number of jobs that landed in the queue is compared with the 200s wrk counted
(they differ by at most the requests still in flight), and Redis is flushed. CPU time of the server, of
redis-server and of wrk is read from /proc and shown per request. Finally, a paced run offers
``--paced-fraction`` of the receiver's median saturated throughput (wrk ``delay()``, 64 connections) to
the receiver (INFO) and to the bare handler: latency below saturation.

Runs alternate order between repeats; figures are medians. Not a unit test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import REPO_ROOT, machine_description

VARIANTS = ("bare-static", "bare", "receiver-info", "receiver-warning", "rq-sync")
REFERENCE = "bare"
KEY = "bench-kie-hmac-key"
SEP = "\n#WRK#\n"
CLK = os.sysconf("SC_CLK_TCK")
#: the checkout whose receiver/ is served (``--repo``: measure a candidate change in a scratch copy)
REPO_UNDER_TEST = str(REPO_ROOT)
#: ``--candidate``: a second checkout served as candidate-info / candidate-warning in the same run
CANDIDATE = ""

_LUA_DONE = r"""
function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  io.write(string.format(
    'WRKRESULT {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, w))
end
"""

_LUA_CYCLE = r"""
threads = {}
local count = 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  reqfile = args[1]
  mean_delay = tonumber(args[2] or "0")
  reqs, n, idx, wrapped = nil, 0, 1, 0
  math.randomseed(tid * 7919 + 17)
end

-- A thread reads its own file (write_requests' part tid) at its first request, not in init(): wrk runs each
-- thread's init() while the threads made before it already send, and starts its clock after the last one, so
-- a slow init() lets requests escape the measured duration (seen: 1.1 s of load outside a 4.1 s run, -t6).
local function load()
  local f = assert(io.open(reqfile .. "." .. tid, "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local pos = 1
  while true do
    local s, e = string.find(data, "%(sep)s", pos, true)
    if not s then break end
    reqs[#reqs + 1] = string.sub(data, pos, s - 1)
    pos = e + 1
  end
  n = #reqs
end

function request()
  if reqs == nil then load() end
  local r = reqs[idx]
  idx = idx + 1
  if idx > n then
    idx = 1
    wrapped = wrapped + 1
  end
  return r
end
""".replace("%(sep)s", SEP.replace("\n", "\\n"))

_LUA_DELAY = r"""
function delay()
  return math.floor(math.random() * 2 * mean_delay)
end
"""


def lua_static(body: bytes, headers: dict[str, str]) -> str:
    lines = ["threads = {}", "function setup(thread) table.insert(threads, thread) end", 'wrk.method = "POST"']
    lines.append(f"wrk.body = [==[{body.decode()}]==]")
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n" + _LUA_DONE


# ---------------------------------------------------------------------------------------------------------
# requests


def signed_request(task_id: str, port: int, ts: int) -> bytes:
    from veo_archiver.sim import kie as kie_sim

    url = f"https://tempfile.aiquickdraw.com/v/{task_id}.mp4"
    body = json.dumps(kie_sim.success_body(task_id, [url])).encode()
    headers = kie_sim.signed_headers(KEY, task_id, ts)
    head = f"POST /callbacks/kie HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def write_requests(path: Path, prefix: str, count: int, port: int, *, parts: int) -> None:
    """``count`` distinct signed requests in ``parts`` files ``PATH.0`` .. ``PATH.{parts-1}``: one per wrk thread
    (the thread numbered ``tid`` sends ``PATH.tid``, request ``n`` is in part ``n % parts``)."""
    ts = int(time.time())
    files = [Path(f"{path}.{i}").open("wb") for i in range(parts)]
    try:
        for n in range(count):
            f = files[n % parts]
            f.write(signed_request(f"{prefix}-{n:07d}", port, ts))
            f.write(SEP.encode())
    finally:
        for f in files:
            f.close()


# ---------------------------------------------------------------------------------------------------------
# processes


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


def free_port() -> int:
    from tests.procs import free_tcp_port

    return free_tcp_port()


class Server:
    """One server process (receiver or a bench app) on a free port, output to a log file."""

    def __init__(self, variant: str, redis_url: str, tmp: Path) -> None:
        self.variant = variant
        self.port = free_port()
        self.log_path = tmp / f"{variant}-{self.port}.log"
        level = "WARNING" if variant.endswith("-warning") or variant == "rq-sync" else "INFO"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "KIE_WEBHOOK_HMAC_KEYS": KEY,
            "LOG_LEVEL": level,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        repo = Path(CANDIDATE if variant.startswith("candidate") else REPO_UNDER_TEST)
        if variant.startswith(("receiver", "candidate")):
            cmd = [sys.executable, "-m", "veo_archiver", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            app = "bare" if variant.startswith("bare") else "rq-sync"
            cmd = [sys.executable, str(REPO_ROOT / "bench" / "ack_apps.py"), app, "--port", str(self.port)]
        self._log = self.log_path.open("ab")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=repo, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{variant} exited during start-up:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{variant} did not answer /healthz:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks/kie"

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def run_wrk(
    script: Path, url: str, args: list[str], *, connections: int, threads: int, seconds: float, out: Path
) -> tuple[dict[str, Any], float]:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        *args,
    ]
    with out.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("WRKRESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{text[-3000:]}")
    return json.loads(lines[-1].removeprefix("WRKRESULT ")), usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------------------
# one run


def one_run(
    variant: str, run: str, redis: Any, tmp: Path, opts: argparse.Namespace, *, paced_rate: float | None = None
) -> dict[str, Any]:
    rds = redis.client()
    rds.flushall()
    server = Server(variant, redis.url, tmp)
    try:
        cycle = tmp / "cycle.lua"
        paced = tmp / "paced.lua"
        if not cycle.exists():
            cycle.write_text(_LUA_CYCLE + _LUA_DONE)
            paced.write_text(_LUA_CYCLE + _LUA_DELAY + _LUA_DONE)
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
            script = tmp / "static.lua"
            script.write_text(lua_static(body, kie_sim.signed_headers(KEY, "static-task")))
            args: list[str] = []
        else:
            reqfile = tmp / "main.req"
            write_requests(reqfile, f"run-{run}-{variant}", opts.requests, server.port, parts=opts.threads)
            delay_ms = opts.connections / paced_rate * 1000 if paced_rate else 0
            script = paced if paced_rate else cycle
            args = [str(reqfile), f"{delay_ms:.3f}"]
        queued0 = int(rds.llen("rq:queue:veo-archiver"))
        log0 = server.log_bytes()
        cpu_srv0, cpu_redis0 = cpu_seconds(server.proc.pid), cpu_seconds(redis.pid)
        result, wrk_cpu = run_wrk(
            script,
            server.url,
            args,
            connections=opts.connections,
            threads=opts.threads,
            seconds=opts.duration,
            out=tmp / "wrk.out",
        )
        result["server_cpu_s"] = cpu_seconds(server.proc.pid) - cpu_srv0
        result["redis_cpu_s"] = cpu_seconds(redis.pid) - cpu_redis0
        result["wrk_cpu_s"] = wrk_cpu
        result["log_bytes"] = server.log_bytes() - log0
        result["queued"] = int(rds.llen("rq:queue:veo-archiver")) - queued0
    finally:
        server.stop()
    result["variant"] = variant
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    errors = sum(result[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    result["errors"] = errors
    if errors:
        counts = {k: v for k, v in result.items() if k.startswith("err")}
        print(f"  !! {variant}: {errors} errors: {json.dumps(counts)}")
    if variant.startswith(("receiver", "candidate", "rq-sync")):
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
        + (f"  queued {r['queued']}" if r["variant"].startswith(("receiver", "candidate", "rq-sync")) else "")
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
    for v in ("receiver-info", "receiver-warning", "candidate-info", "candidate-warning"):
        if v in results:
            ratio = med(v, "rps") / ref
            p99 = med(v, "p99_us") / 1000
            print(
                f"{v}: receiver/bare {ratio:.2f}x (target >= 0.5: {'MET' if ratio >= 0.5 else 'MISSED'}), "
                f"p99 {p99:.1f} ms at {results[v][0]['connections']} connections "
                f"(target <= 25 ms: {'MET' if p99 <= 25 else 'MISSED'})"
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
        "--repo",
        default=str(REPO_ROOT),
        help="checkout whose receiver is served (default: this one; bench apps always from here)",
    )
    parser.add_argument(
        "--candidate",
        default="",
        help="another checkout (a candidate change) served as candidate-info/-warning in the same run",
    )
    parser.add_argument(
        "--paced-fraction",
        type=float,
        default=0.5,
        help="paced run at this fraction of the receiver's throughput (0: skip)",
    )
    opts = parser.parse_args()
    global REPO_UNDER_TEST, CANDIDATE
    REPO_UNDER_TEST = str(Path(opts.repo).resolve())
    variants = tuple(v.strip() for v in opts.variants.split(",") if v.strip())
    if opts.candidate:
        CANDIDATE = str(Path(opts.candidate).resolve())
        variants += tuple(v for v in ("candidate-info", "candidate-warning") if v not in variants)
    if REFERENCE not in variants:
        raise SystemExit(f"the reference variant {REFERENCE!r} must be among --variants")

    import importlib.util

    from tests.servers import RedisServer

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    with tempfile.TemporaryDirectory(prefix="ack-path-") as tmpname:
        tmp = Path(tmpname)
        with RedisServer(tmp / "redis") as redis:
            redis_version = redis.client().info("server")["redis_version"]
            print(
                machine_description(
                    ("starlette", "uvicorn", "redis", "rq", "httpx"),
                    [
                        f"servers:  uvicorn loop={loop} http={http} (as `veo-archiver serve` gets them), one process; "
                        f"redis-server {redis_version} AOF appendfsync everysec (WAITAOF needs 7.2: not used)",
                        f"load:     {wrk_version}; -t{opts.threads} -c{opts.connections}, "
                        f"2 s warm-up + {opts.duration:g} s, "
                        f"{opts.repeat} runs per variant, order alternating, fresh server process per run",
                        f"receiver: {REPO_UNDER_TEST}" + (f"; candidate: {CANDIDATE}" if CANDIDATE else ""),
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


if __name__ == "__main__":
    main()
