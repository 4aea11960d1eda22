"""Benchmark: callback to archived video, the whole system, with real processes.

    .venv/bin/python bench/end_to_end.py --callbacks 200 --mib 10 --workers 4
    .venv/bin/python bench/end_to_end.py --callbacks 20 --mib 2 --workers 2 --solo 3   # a short check

The parent starts redis-server and SeaweedFS (benchlib), serves ``--files`` distinct generated MP4s
of ``--mib`` MiB from disk (bench/benchlib.py ``DiskFileServer``; each task has its own URL, the bytes
repeat every ``--files`` tasks), then the real receiver (``veo-archiver serve``) and
``veo-archiver worker --count N`` (N processes, each forking a work horse per job). Signed kie.ai callbacks
are POSTed by an asyncio httpx client in this process. Phases, in this order:

  solo    THE LATENCY REFERENCE: ``--solo`` callbacks one at a time, each sent after the previous one was
          archived: the floor of callback-to-archived latency on this machine (no queueing)
  burst   ``--callbacks`` callbacks sent at once: queueing dominates, latency grows with position in the queue
  copy    THE THROUGHPUT REFERENCE: the same number of videos copied by N plain processes (httpx ``iter_raw``
          into ``obstore.put``, 8 MiB x 4, as in bench/archive_throughput.py), no Redis, no RQ, no checks
  paced   ``--callbacks`` callbacks at ``--paced-fraction`` x the burst's archive rate, evenly spaced: the
          latency a callback sees when the workers keep up

Latency of one callback = ``archived_at`` in its manifest (set just before the manifest PUT) minus the time
its 200 OK arrived here; "visible" uses the moment the worker published the outcome (after the manifest PUT;
the ``veo:outcomes`` stream entry id). Queue wait and job time come from the RQ job hashes (enqueued_at,
started_at, ended_at). Every manifest's sha256 and size are checked against the source, and ``--readback``
archived videos per phase are read back from S3 and hashed. Throughput = videos / (last archived - first
200 OK). Not a unit test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import (
    KIE_KEY,
    MIB,
    REPO_ROOT,
    DiskFileServer,
    RedisServer,
    SeaweedS3,
    Service,
    checkout_env,
    free_port,
    machine_description,
    pct,
    write_mp4,
)

PART_BYTES, PARTS_IN_FLIGHT = 8 * MIB, 4  # as workers/storage.py


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process, its live descendants, and every child they have reaped (RQ's horses)."""
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------------------
# reference copy child


def child_copy(spec_path: str) -> None:
    import httpx
    import obstore
    from obstore.store import S3Store

    env = os.environ
    spec = json.loads(Path(spec_path).read_text())
    bucket = env["ARCHIVE_URL"].removeprefix("s3://").partition("/")[0]
    store = S3Store(
        bucket,
        endpoint=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_REGION"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    with httpx.Client(timeout=httpx.Timeout(60.0)) as client:
        for url, key in spec:
            with client.stream("GET", url) as response:
                response.raise_for_status()
                obstore.put(store, key, response.iter_raw(), chunk_size=PART_BYTES, max_concurrency=PARTS_IN_FLIGHT)
    print("DONE", flush=True)


# ---------------------------------------------------------------------------------------------------------
# parent


class Harness:
    def __init__(
        self,
        opts: argparse.Namespace,
        tmp: Path,
        redis: Any,
        seaweed: Any,
        files: DiskFileServer,
        sources: list[dict[str, Any]],
    ) -> None:
        self.opts = opts
        self.tmp = tmp
        self.redis = redis
        self.rds = redis.client()
        self.seaweed = seaweed
        self.s3 = seaweed.boto3_client()
        self.files = files
        self.sources = sources
        self.bucket = "bench"
        self.prefix = "videos"
        self.base = ""
        self.outcomes_seen = "0-0"
        self.visible: dict[str, float] = {}
        self.failed: dict[str, dict[str, Any]] = {}
        #: 503 answers by body: sent again after 1 s (latency counts from the 200)
        self.refused: dict[str, int] = {}
        self.pids: dict[str, int | None] = {}

    def env(self) -> dict[str, str]:
        return {
            **self.seaweed.env(self.bucket, self.prefix),
            "REDIS_URL": self.redis.url,
            "KIE_WEBHOOK_HMAC_KEYS": KIE_KEY,
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{self.files.port}",
            "LOG_LEVEL": self.opts.log_level,
            "LOG_FORMAT": "json",
            "SPOOL_DIR": str(self.tmp / "spool"),
        }

    def task_url(self, task_id: str, n: int) -> str:
        src = self.sources[n % len(self.sources)]
        return self.files.add(f"/cdn/{task_id}.mp4", src["path"], src["sha256"])

    async def post(self, client: Any, task_id: str, url: str) -> tuple[str, float, str]:
        import httpx

        from veo_archiver.sim import kie as kie_sim

        body = json.dumps(kie_sim.success_body(task_id, [url])).encode()
        for _attempt in range(20):
            try:
                response = await client.post(
                    self.base + "/callbacks/kie", content=body, headers=kie_sim.signed_headers(KIE_KEY, task_id)
                )
            except httpx.TransportError as exc:  # counted and sent again, like a 503
                self.refused[f"({type(exc).__name__})"] = self.refused.get(f"({type(exc).__name__})", 0) + 1
                await asyncio.sleep(1.0)
                continue
            acked = time.time()
            if response.status_code == 200:
                return task_id, acked, response.headers.get("x-archiver-outcome", "")
            if response.status_code != 503:
                break
            # the receiver could not take it (it answers Retry-After: 5): count it, send it again like a
            # provider would, sooner, so the measurement is not padded with a fixed 5 s
            self.refused[response.text[:200]] = self.refused.get(response.text[:200], 0) + 1
            await asyncio.sleep(1.0)
        raise SystemExit(f"callback {task_id}: gave up, last answer {response.status_code} {response.text[:300]}")

    def cpu(self) -> dict[str, float]:
        import resource

        out = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["copy processes"] = usage.ru_utime + usage.ru_stime
        return out

    def poll_outcomes(self) -> None:
        """Read new entries of veo:outcomes: the moment each task's manifest became visible."""
        while True:
            entries = self.rds.xread({"veo:outcomes": self.outcomes_seen}, count=1000)
            if not entries:
                return
            for entry_id, fields in entries[0][1]:
                self.outcomes_seen = entry_id.decode()
                task = fields[b"task_id"].decode()
                if fields[b"outcome"] == b"archived":
                    self.visible[task] = int(entry_id.split(b"-")[0]) / 1000
                else:
                    self.failed[task] = {k.decode(): v.decode() for k, v in fields.items()}

    def wait_archived(self, tasks: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll_outcomes()
            missing = [t for t in tasks if t not in self.visible]
            bad = [t for t in tasks if t in self.failed]
            if bad:
                raise SystemExit(f"{len(bad)} task(s) not archived, e.g. {self.failed[bad[0]]}")
            if not missing:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(missing)} of {len(tasks)} tasks not archived after {timeout:.0f} s")
            time.sleep(0.05)

    def collect(self, phase: str, acks: list[tuple[str, float, str]]) -> dict[str, Any]:
        """Manifests (checked against the sources), RQ job timings, latencies for one phase."""
        from rq.job import Job
        from rq.serializers import JSONSerializer

        from veo_archiver import archive_keys

        rows: list[dict[str, Any]] = []
        index = {task: n for n, (task, _, _) in enumerate(acks)}
        for task, acked, outcome in acks:
            if outcome != "accepted":
                raise SystemExit(f"{task}: receiver outcome {outcome!r}")
            manifest = json.loads(
                self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{archive_keys.manifest_key('kie', task)}")[
                    "Body"
                ].read()
            )
            (entry,) = manifest["files"]
            src = self.sources[index[task] % len(self.sources)]
            if entry["sha256"] != src["sha256"] or entry["size"] != src["size"]:
                raise SystemExit(
                    f"{task}: manifest {entry['size']} B {entry['sha256']} != source {src['size']} B {src['sha256']}"
                )
            rows.append(
                {
                    "task": task,
                    "acked": acked,
                    "archived": parse_iso(manifest["archived_at"]),
                    "visible": self.visible[task],
                    "job_id": manifest["job_id"],
                    "key": entry["key"],
                    "sha256": entry["sha256"],
                }
            )
        jobs = Job.fetch_many([r["job_id"] for r in rows], connection=self.rds, serializer=JSONSerializer)
        for row, job in zip(rows, jobs, strict=True):
            assert job is not None and job.enqueued_at and job.started_at and job.ended_at, row
            row["queued_s"] = (job.started_at - job.enqueued_at).total_seconds()
            row["job_s"] = (job.ended_at - job.started_at).total_seconds()
        for row in random.Random(0).sample(rows, min(self.opts.readback, len(rows))):
            digest = hashlib.sha256()
            body = self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{row['key']}")["Body"]
            for chunk in body.iter_chunks(4 * MIB):
                digest.update(chunk)
            if digest.hexdigest() != row["sha256"]:
                raise SystemExit(f"{row['task']}: object in S3 does not match its manifest's sha256")
        lat = [r["archived"] - r["acked"] for r in rows]
        vis = [r["visible"] - r["acked"] for r in rows]
        span = max(r["visible"] for r in rows) - min(r["acked"] for r in rows)
        return {
            "phase": phase,
            "n": len(rows),
            "p50": pct(lat, 50),
            "p90": pct(lat, 90),
            "p99": pct(lat, 99),
            "max": max(lat),
            "vis_p50": pct(vis, 50),
            "vis_p99": pct(vis, 99),
            "queued_p50": pct([r["queued_s"] for r in rows], 50),
            "queued_p99": pct([r["queued_s"] for r in rows], 99),
            "job_p50": pct([r["job_s"] for r in rows], 50),
            "job_p99": pct([r["job_s"] for r in rows], 99),
            "span_s": span,
            "videos_per_s": len(rows) / span,
            "mb_per_s": sum(self.sources[index[r["task"]] % len(self.sources)]["size"] for r in rows) / 1e6 / span,
            "ack_spread_s": max(r["acked"] for r in rows) - min(r["acked"] for r in rows),
        }

    async def _client(self) -> Any:
        import httpx

        return httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=256))

    def phase_solo(self, count: int) -> dict[str, Any]:
        acks: list[tuple[str, float, str]] = []

        async def go() -> None:
            async with await self._client() as client:
                for n in range(count):
                    task = f"solo-{uuid.uuid4().hex[:12]}"
                    acks.append(await self.post(client, task, self.task_url(task, n)))
                    await asyncio.to_thread(self.wait_archived, [task], 120)
                    await asyncio.sleep(0.2)

        asyncio.run(go())
        return self.collect("solo", acks)

    def phase_burst(self, count: int) -> dict[str, Any]:
        tasks = [f"burst-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        urls = [self.task_url(t, n) for n, t in enumerate(tasks)]

        async def go() -> list[tuple[str, float, str]]:
            async with await self._client() as client:
                return list(await asyncio.gather(*(self.post(client, t, u) for t, u in zip(tasks, urls, strict=True))))

        self.refused = {}
        acks = asyncio.run(go())
        self.wait_archived(tasks, self.opts.timeout)
        result = self.collect("burst", acks)
        result["refused"] = dict(self.refused)
        return result

    def phase_paced(self, count: int, rate: float) -> dict[str, Any]:
        tasks = [f"paced-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        urls = [self.task_url(t, n) for n, t in enumerate(tasks)]

        async def go() -> list[tuple[str, float, str]]:
            async with await self._client() as client:
                start = time.monotonic()
                pending = []
                for n, (t, u) in enumerate(zip(tasks, urls, strict=True)):
                    await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                    pending.append(asyncio.create_task(self.post(client, t, u)))
                return list(await asyncio.gather(*pending))

        self.refused = {}
        acks = asyncio.run(go())
        self.wait_archived(tasks, self.opts.timeout)
        result = self.collect("paced", acks)
        result["refused"] = dict(self.refused)
        result["offered_per_s"] = rate
        return result

    def phase_copy(self, count: int, processes: int) -> dict[str, Any]:
        specs: list[list[tuple[str, str]]] = [[] for _ in range(processes)]
        for n in range(count):
            task = f"copy-{uuid.uuid4().hex[:12]}"
            specs[n % processes].append((self.task_url(task, n), f"{self.prefix}/copy/{task}.mp4"))
        env = {**checkout_env(REPO_ROOT), **self.env()}
        procs = []
        start = time.time()
        for n, spec in enumerate(specs):
            path = self.tmp / f"copy-{n}.json"
            path.write_text(json.dumps(spec))
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--child-copy", str(path)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            out, err = proc.communicate(timeout=self.opts.timeout)
            if proc.returncode != 0 or "DONE" not in out:
                raise SystemExit(f"copy child failed ({proc.returncode}):\n{err[-3000:]}")
        span = time.time() - start
        total = sum(self.sources[n % len(self.sources)]["size"] for n in range(count))
        for spec in specs[:1]:
            key = spec[0][1]
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            assert head["ContentLength"] == self.sources[0]["size"], head
        return {
            "phase": "copy",
            "n": count,
            "span_s": span,
            "videos_per_s": count / span,
            "mb_per_s": total / 1e6 / span,
        }


def print_report(results: dict[str, dict[str, Any]], opts: argparse.Namespace) -> None:
    header = (
        f"{'phase':<6} {'n':>4} {'p50 s':>6} {'p90 s':>6} {'p99 s':>6} {'max s':>6} {'vis p50':>7} "
        f"{'vis p99':>7} {'queued p50/p99 s':>16} {'job p50/p99 s':>14} {'videos/s':>8} {'MB/s':>6} "
        f"{'acks spread s':>13}"
    )
    print(header)
    print("-" * len(header))
    for phase in ("solo", "burst", "paced"):
        r = results.get(phase)
        if r is None:
            continue
        queued = "{:.2f}/{:.2f}".format(r["queued_p50"], r["queued_p99"])
        job = "{:.2f}/{:.2f}".format(r["job_p50"], r["job_p99"])
        print(
            f"{phase:<6} {r['n']:>4} {r['p50']:>6.2f} {r['p90']:>6.2f} {r['p99']:>6.2f} {r['max']:>6.2f} "
            f"{r['vis_p50']:>7.2f} {r['vis_p99']:>7.2f} {queued:>16} {job:>14} {r['videos_per_s']:>8.2f} "
            f"{r['mb_per_s']:>6.1f} {r['ack_spread_s']:>13.2f}"
        )
    if "copy" in results:
        c = results["copy"]
        print(
            f"{'copy':<6} {c['n']:>4} {'':>6} {'':>6} {'':>6} {'':>6} {'':>7} {'':>7} {'':>16} {'':>14} "
            f"{c['videos_per_s']:>8.2f} {c['mb_per_s']:>6.1f}"
        )
    print()
    names = list(next(iter(results.values()))["cpu_per_video"])
    print(
        "CPU seconds per video: "
        + ", ".join(
            f"{phase} ["
            + ", ".join(f"{n} {r['cpu_per_video'][n]:.3f}" for n in names if r["cpu_per_video"][n] >= 0.0005)
            + "]"
            for phase, r in results.items()
        )
    )
    print()
    solo = results.get("solo")
    for phase in ("burst", "paced"):
        r = results.get(phase)
        if r is None:
            continue
        extra = f", {r['p50'] / solo['p50']:.1f}x the solo p50" if solo else ""
        print(
            f"{phase}: p50 {r['p50']:.2f} s (target <= 1.5 s: {'MET' if r['p50'] <= 1.5 else 'MISSED'}){extra}, "
            f"p99 {r['p99']:.2f} s, {r['videos_per_s']:.2f} videos/s"
            + (
                f" ({r['videos_per_s'] / results['copy']['videos_per_s']:.2f}x the plain {opts.workers}-process copy)"
                if "copy" in results and phase == "burst"
                else ""
            )
            + (f", offered {r['offered_per_s']:.2f}/s" if "offered_per_s" in r else "")
        )
    for phase in ("burst", "paced"):
        for body, count in (results.get(phase) or {}).get("refused", {}).items():
            print(f"{phase}: {count} answer(s) 503 / transport error: {body} (sent again 1 s later)")
    print(
        "(latency = manifest archived_at - 200 OK received; 'vis' = outcome published after the manifest PUT; "
        "queued = RQ started_at - enqueued_at; job = ended_at - started_at)"
    )


def main_parent(opts: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="end-to-end-", dir=opts.tmpdir) as tmpname:
        tmp = Path(tmpname)
        sources = []
        for n in range(opts.files):
            path = tmp / f"source-{n}.mp4"
            size = int(opts.mib * MIB)
            sources.append({"path": path, "size": size, "sha256": write_mp4(path, size, seed=100 + n)})
        with DiskFileServer() as files, RedisServer(tmp / "redis") as redis, SeaweedS3(tmp / "seaweed") as seaweed:
            h = Harness(opts, tmp, redis, seaweed, files, sources)
            seaweed.create_bucket(h.bucket)
            env = {**checkout_env(REPO_ROOT), **h.env()}
            port = free_port()
            receiver = Service.cli(["serve", "--host", "127.0.0.1", "--port", str(port)], tmp / "receiver.log", env)
            h.base = f"http://127.0.0.1:{port}"
            receiver.wait_http(h.base + "/healthz")
            workers = Service.cli(["worker", "--count", str(opts.workers)], tmp / "workers.log", env)
            try:
                from rq import Worker

                deadline = time.monotonic() + 60
                while len(Worker.all(connection=h.rds)) < opts.workers:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"workers did not register:\n{workers.log()[-3000:]}")
                    time.sleep(0.2)
                print(
                    machine_description(
                        ("starlette", "uvicorn", "rq", "redis", "httpx", "obstore"),
                        [
                            f"seaweed:  {SeaweedS3.version()} (weed mini, loopback); redis-server AOF everysec",
                            f"system:   receiver (veo-archiver serve) + `veo-archiver worker --count {opts.workers}` "
                            f"(fork per job), LOG_LEVEL={opts.log_level}",
                            f"workload: {opts.callbacks} signed kie.ai callbacks of one {opts.mib:g} MiB MP4 each "
                            f"({opts.files} distinct files served from disk on 127.0.0.1), solo reference x{opts.solo}",
                        ],
                    ),
                    flush=True,
                )
                print(flush=True)
                h.pids = {
                    "workers+horses": workers.pid,
                    "receiver": receiver.pid,
                    "redis-server": redis.pid,
                    "weed (S3)": seaweed.pid,
                }
                results: dict[str, dict[str, Any]] = {}

                def measured(phase: Any, *args: Any) -> dict[str, Any]:
                    before = h.cpu()
                    result: dict[str, Any] = phase(*args)
                    after = h.cpu()
                    result["cpu_per_video"] = {k: (after[k] - before[k]) / result["n"] for k in after}
                    return result

                if opts.solo:
                    results["solo"] = measured(h.phase_solo, opts.solo)
                    print(
                        f"  solo   p50 {results['solo']['p50']:.2f} s  p99 {results['solo']['p99']:.2f} s "
                        f" job p50 {results['solo']['job_p50']:.2f} s",
                        flush=True,
                    )
                results["burst"] = measured(h.phase_burst, opts.callbacks)
                b = results["burst"]
                print(
                    f"  burst  p50 {b['p50']:.2f} s  p99 {b['p99']:.2f} s  {b['videos_per_s']:.2f} videos/s "
                    f"(all {b['n']} acked within {b['ack_spread_s']:.2f} s; "
                    f"{sum(b['refused'].values())} 503 answers sent again)",
                    flush=True,
                )
                if opts.copy:
                    results["copy"] = measured(h.phase_copy, opts.callbacks, opts.workers)
                    print(f"  copy   {results['copy']['videos_per_s']:.2f} videos/s", flush=True)
                if opts.paced_fraction > 0:
                    rate = opts.paced_rate or opts.paced_fraction * b["videos_per_s"]
                    results["paced"] = measured(h.phase_paced, opts.callbacks, rate)
                    p = results["paced"]
                    print(
                        f"  paced  offered {rate:.2f}/s  p50 {p['p50']:.2f} s  p99 {p['p99']:.2f} s  "
                        f"{p['videos_per_s']:.2f} videos/s",
                        flush=True,
                    )
            finally:
                workers.stop(30)
                receiver.stop()
                if opts.logs:
                    Path(opts.logs).mkdir(parents=True, exist_ok=True)
                    for log in tmp.glob("*.log"):
                        shutil.copy(log, Path(opts.logs) / log.name)
            print()
            print_report(results, opts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=200)
    parser.add_argument("--mib", type=float, default=10.0, help="video size in MiB (default 10)")
    parser.add_argument("--files", type=int, default=8, help="distinct source files (default 8)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--solo", type=int, default=10, help="callbacks of the sequential reference (0: skip)")
    parser.add_argument("--copy", type=int, default=1, help="1: run the plain-copy throughput reference")
    parser.add_argument(
        "--paced-fraction",
        type=float,
        default=0.7,
        help="paced phase at this fraction of the burst's archive rate (0: skip)",
    )
    parser.add_argument("--paced-rate", type=float, default=0.0, help="paced rate in callbacks/s (overrides)")
    parser.add_argument("--readback", type=int, default=10, help="archived videos read back and hashed per phase")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for a phase")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--logs", default=None, help="copy the receiver's and workers' logs here at the end")
    parser.add_argument("--child-copy", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child_copy:
        child_copy(opts.child_copy)
    else:
        main_parent(opts)


if __name__ == "__main__":
    main()
