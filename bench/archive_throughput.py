"""Benchmark: one big video archived to S3 by the real job code vs a plain streaming copy.

    .venv/bin/python bench/archive_throughput.py --sizes 100M,1G --repeat 3
    .venv/bin/python bench/archive_throughput.py --sizes 20M --repeat 1          # a short check

The parent starts SeaweedFS (benchlib, ``weed mini``) and a redis-server, writes each source video
with ``veo_archiver.sim.media.iter_mp4`` to a temp file and serves it from disk on 127.0.0.1
(bench/benchlib.py ``DiskFileServer``: sendfile, Content-Length, strong ETag, ranges: a CDN stand-in).
Every run of every variant is a fresh process:

  plain    THE REFERENCE: httpx ``client.stream().iter_raw()`` into ``obstore.put(S3Store, key, iterator,
           chunk_size=8 MiB, max_concurrency=4)``: the same library and part settings as workers/storage.py,
           with nothing else (no hashing, no checks)
  job      the job the receiver's own ``Intake.submit`` queued, run in a fresh process by RQ's public
           ``Job.fetch(...).perform()``: the real job code (SSRF-guarded client, VideoStream with sha256 + MP4
           box walk + size checks, callback record, manifest last), outside RQ's worker; a 1 KiB job runs first
           in the same process, so the clients a work horse builds once are built before the clock starts
  worker   a real ``veo-archiver worker --burst`` process, the job enqueued the same way; RQ forks a work
           horse for it. Time = the job's started_at..ended_at in Redis;
           peak RSS = the horse's VmHWM (polled every 20 ms from /proc: VmHWM only grows, so the last read
           is the peak but for at most 20 ms of growth)

MB/s = source bytes / seconds (MB = 10^6 bytes). Peak RSS = VmHWM of the process doing the archiving;
"base" = its VmHWM after imports and client setup (plain, job) or the horse's first reading (worker).
After every run the object is read back from S3 and its size and sha256 compared with the source; for job
and worker the manifest's sha256 and size are compared as well. Objects are deleted after verification.
Runs alternate order between repeats; figures are medians. Not a unit test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import (
    MIB,
    REPO_ROOT,
    DiskFileServer,
    RedisServer,
    SeaweedS3,
    checkout_env,
    cpu_seconds,
    machine_description,
    vm_status_mib,
    write_mp4,
)

VARIANTS = ("plain", "job", "worker")
REFERENCE = "plain"
PART_BYTES, PARTS_IN_FLIGHT = 8 * MIB, 4  # as workers/storage.py


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1024, "M": MIB, "G": 1024 * MIB}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * factor)


def label(size: int) -> str:
    return f"{size / 1024 / MIB:g} GiB" if size >= 1024 * MIB else f"{size / MIB:g} MiB"


# ---------------------------------------------------------------------------------------------------------
# children


def child_plain(url: str, key: str) -> dict[str, Any]:
    import httpx
    import obstore
    from obstore.store import S3Store

    env = os.environ
    bucket, _, prefix = env["ARCHIVE_URL"].removeprefix("s3://").partition("/")
    store = S3Store(
        bucket,
        endpoint=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_REGION"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    total = [0]

    def counted(chunks: Any) -> Any:
        for chunk in chunks:
            total[0] += len(chunk)
            yield chunk

    baseline = vm_status_mib()
    cpu0, start = os.times(), time.perf_counter()
    with httpx.Client(timeout=httpx.Timeout(60.0)) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        obstore.put(
            store,
            f"{prefix.strip('/')}/{key}".lstrip("/"),
            counted(response.iter_raw()),
            chunk_size=PART_BYTES,
            max_concurrency=PARTS_IN_FLIGHT,
        )
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    return {
        "bytes": total[0],
        "seconds": seconds,
        "cpu_s": cpu1.user - cpu0.user + cpu1.system - cpu0.system,
        "base_mib": baseline,
        "peak_mib": vm_status_mib(),
    }


def child_job(warm_job_id: str, job_id: str) -> dict[str, Any]:
    import redis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    warm, job = Job.fetch_many([warm_job_id, job_id], connection=connection, serializer=JSONSerializer)
    assert warm is not None and job is not None, (warm_job_id, job_id)
    warm.perform()  # the clients the job builds once per process, built here (as in a worker's horse)
    baseline = vm_status_mib()
    cpu0, start = os.times(), time.perf_counter()
    result = job.perform()
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    assert isinstance(result, dict), result
    return {
        "seconds": seconds,
        "cpu_s": cpu1.user - cpu0.user + cpu1.system - cpu0.system,
        "base_mib": baseline,
        "peak_mib": vm_status_mib(),
        "result": result,
    }


def spawn(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO_ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(
            f"child {args[:2]} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    out: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return out


# ---------------------------------------------------------------------------------------------------------
# parent


def enqueue(task_id: str, url: str, env: dict[str, str]) -> str:
    """Queue the archive job of a signed kie.ai success callback through the receiver's intake; its job id."""
    import redis.asyncio as aioredis

    from veo_archiver.event import Verification
    from veo_archiver.intake import Delivery, Intake
    from veo_archiver.providers import kie
    from veo_archiver.settings import Settings
    from veo_archiver.sim import kie as kie_sim

    raw = json.dumps(kie_sim.success_body(task_id, [url])).encode()
    event = kie.parse(json.loads(raw), verification=Verification.SIGNATURE)
    delivery = Delivery(
        body=raw,
        headers={"content-type": "application/json"},
        received_at=time.time(),
        remote="127.0.0.1",
        path="/callbacks/kie",
    )

    async def submit() -> str:
        client = aioredis.Redis.from_url(env["REDIS_URL"])
        try:
            intake = Intake(Settings.from_env(env), client)
            await intake.start()
            result = await intake.submit(event, delivery)
        finally:
            await client.aclose()
        assert result.outcome == "accepted" and result.job_id, result
        return result.job_id

    return asyncio.run(submit())


def dequeue(env: dict[str, str], job_ids: list[str]) -> None:
    import redis
    from rq import Queue

    from veo_archiver.settings import Settings

    queue = Queue(Settings.from_env(env).queue_name, connection=redis.Redis.from_url(env["REDIS_URL"]))
    for job_id in job_ids:
        queue.remove(job_id)


def run_worker_variant(task_id: str, url: str, env: dict[str, str], redis_url: str, tmp: Path) -> dict[str, Any]:
    import psutil
    import redis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    job_id = enqueue(task_id, url, env)
    log_path = tmp / f"worker-{task_id}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "veo_archiver", "worker", "--burst"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = psutil.Process(proc.pid)
        horses: dict[int, dict[str, float]] = {}
        while proc.poll() is None:
            try:
                children = worker.children()
            except psutil.NoSuchProcess:
                children = []
            for child in children:
                hwm = vm_status_mib(child.pid)
                if hwm is None:
                    continue
                seen = horses.setdefault(child.pid, {"first": hwm, "peak": hwm, "cpu": 0.0})
                seen["peak"] = max(seen["peak"], hwm)
                try:
                    times = child.cpu_times()
                    seen["cpu"] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"worker exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
    job = Job.fetch(job_id, connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)
    if job.get_status() != "finished" or job.started_at is None or job.ended_at is None:
        raise SystemExit(f"job {job_id} is {job.get_status()}:\n{log_path.read_text()[-4000:]}")
    if len(horses) != 1:
        raise SystemExit(f"expected one work horse, saw {len(horses)}: {horses}")
    horse = next(iter(horses.values()))
    result = job.return_value()
    return {
        "seconds": (job.ended_at - job.started_at).total_seconds(),
        "cpu_s": horse["cpu"],
        "base_mib": horse["first"],
        "peak_mib": horse["peak"],
        "result": result,
    }


def sha256_speed() -> str:
    """hashlib's SHA-256 speed on this CPU, and whether it has the SHA extensions OpenSSL would use."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(64):
        digest.update(block)
    mbps = 64 * MIB / 1e6 / (time.perf_counter() - start)
    flags = Path("/proc/cpuinfo").read_text()
    return f"{mbps:.0f} MB/s on one core (CPU {'has' if ' sha_ni' in flags else 'lacks'} SHA-NI)"


def verify(s3: Any, bucket: str, key: str, size: int, sha256: str) -> None:
    head = s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        raise SystemExit(f"VERIFY FAILED {key}: size {head['ContentLength']} != source {size}")
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(4 * MIB):
        digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"VERIFY FAILED {key}: sha256 {digest.hexdigest()} != source {sha256}")


def one_run(variant: str, size: int, source: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    from veo_archiver import archive_keys

    s3, bucket, prefix, env = ctx["s3"], ctx["bucket"], ctx["prefix"], ctx["env"]
    task_id = f"bench-{variant}-{uuid.uuid4().hex[:10]}"
    weed0 = cpu_seconds(ctx["weed_pid"])
    if variant == "plain":
        key = f"plain/{task_id}.mp4"
        r = spawn(["--child-plain", source["url"], key], env)
        if r["bytes"] != size:
            raise SystemExit(f"plain: {r['bytes']} bytes read, expected {size}")
        objects = [f"{prefix}/{key}"]
    else:
        if variant == "job":
            job_ids = [enqueue(f"warm-{task_id}", ctx["warm_url"], env), enqueue(task_id, source["url"], env)]
            r = spawn(["--child-job", *job_ids], env)
            dequeue(env, job_ids)  # run here, not by a worker
        else:
            r = run_worker_variant(task_id, source["url"], env, ctx["redis_url"], ctx["tmp"])
        result = r.pop("result")
        if result.get("outcome") != "archived":
            raise SystemExit(f"{variant}: job result {result}")
        manifest_key = f"{prefix}/{archive_keys.manifest_key('kie', task_id)}"
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        (entry,) = manifest["files"]
        if entry["sha256"] != source["sha256"] or entry["size"] != size:
            raise SystemExit(
                f"{variant}: manifest says {entry['size']} bytes sha256 {entry['sha256']}, "
                f"source is {size} bytes sha256 {source['sha256']}"
            )
        key = entry["key"]
        objects = [f"{prefix}/{key}", manifest_key, f"{prefix}/{manifest['callback']['key']}"]
    r["s3_cpu_s"] = cpu_seconds(ctx["weed_pid"]) - weed0
    verify(s3, bucket, objects[0], size, source["sha256"])
    for obj in objects:
        s3.delete_object(Bucket=bucket, Key=obj)
    r.update(variant=variant, size=size, mbps=size / 1e6 / r["seconds"])
    return r


def print_table(results: dict[int, dict[str, list[dict[str, Any]]]], variants: tuple[str, ...]) -> None:
    header = (
        f"{'size':<8} {'variant':<7} {'MB/s med':>8} {'min-max':>9} {'vs plain':>8} {'peak RSS MiB':>12} "
        f"{'base':>6} {'over base':>9} {'CPU s/GB':>8} {'S3 srv CPU s/GB':>15}"
    )
    print(header)
    print("-" * len(header))
    for size, per in results.items():
        ref = statistics.median(r["mbps"] for r in per[REFERENCE])
        for v in variants:
            rs = per[v]
            speeds = [r["mbps"] for r in rs]
            med = statistics.median(speeds)
            peak = statistics.median(r["peak_mib"] for r in rs)
            base = statistics.median(r["base_mib"] for r in rs)
            over = statistics.median(r["peak_mib"] - r["base_mib"] for r in rs)
            cpu = statistics.median(r["cpu_s"] / (size / 1e9) for r in rs)
            s3cpu = statistics.median(r["s3_cpu_s"] / (size / 1e9) for r in rs)
            print(
                f"{label(size):<8} {v:<7} {med:>8.1f} {f'{min(speeds):.0f}-{max(speeds):.0f}':>9} "
                f"{med / ref:>7.2f}x {peak:>12.1f} {base:>6.1f} {over:>9.1f} {cpu:>8.2f} {s3cpu:>15.2f}"
            )
    print()
    for size, per in results.items():
        ref = statistics.median(r["mbps"] for r in per[REFERENCE])
        for v in variants:
            if v == REFERENCE:
                continue
            ratio = statistics.median(r["mbps"] for r in per[v]) / ref
            verdict = "MET" if ratio >= 0.9 else "MISSED"
            line = f"{label(size)} {v}: throughput {ratio:.2f}x plain (target >= 0.9: {verdict})"
            if size >= 1024 * MIB:
                peak = max(r["peak_mib"] for r in per[v])
                verdict = "MET" if peak * MIB <= 150e6 else "MISSED"
                line += f"; peak RSS (max of runs) {peak:.1f} MiB (target <= 150 MB: {verdict})"
            print(line)
    print(
        "(MB = 10^6 bytes; RSS in MiB; 'CPU s/GB': CPU seconds of the archiving process per 10^9 bytes, "
        "'S3 srv': of weed mini during the run)"
    )


def main_parent(opts: argparse.Namespace) -> None:
    sizes = [parse_size(s) for s in opts.sizes.split(",") if s.strip()]
    variants = tuple(v.strip() for v in opts.variants.split(",") if v.strip())
    if REFERENCE not in variants:
        raise SystemExit(f"the reference variant {REFERENCE!r} must be among --variants")
    with tempfile.TemporaryDirectory(prefix="archive-throughput-", dir=opts.tmpdir) as tmpname:
        tmp = Path(tmpname)
        sources: dict[int, dict[str, Any]] = {}
        with DiskFileServer() as files, SeaweedS3(tmp / "seaweed") as seaweed, RedisServer(tmp / "redis") as rds:
            for n, size in enumerate(sizes):
                path = tmp / f"source-{n}.mp4"
                sha = write_mp4(path, size, seed=n)
                sources[size] = {"sha256": sha, "url": files.add(f"/cdn/{n}.mp4", path, sha)}
            warm_sha = write_mp4(tmp / "warm.mp4", 1024, seed=99)
            warm_url = files.add("/cdn/warm.mp4", tmp / "warm.mp4", warm_sha)
            print(
                machine_description(
                    ("httpx", "obstore", "rq", "redis"),
                    [
                        f"seaweed:  {SeaweedS3.version()} (weed mini, loopback, HTTP); "
                        "redis-server for the worker variant",
                        f"workload: {', '.join(label(s) for s in sizes)} MP4 (iter_mp4) served from disk by a threaded "
                        f"sendfile server on 127.0.0.1 -> S3 multipart 8 MiB x 4 in flight; {opts.repeat} runs per "
                        f"variant and size, fresh process per run, order alternating",
                        f"sha256:   {sha256_speed()}",
                    ],
                ),
                flush=True,
            )
            print(flush=True)
            bucket = seaweed.create_bucket("bench")
            s3 = seaweed.boto3_client()
            prefix = "videos"
            env = {
                **checkout_env(REPO_ROOT),
                **seaweed.env(bucket, prefix),
                "REDIS_URL": rds.url,
                "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
                "LOG_LEVEL": "INFO",
                "LOG_FORMAT": "json",
            }
            ctx = {
                "s3": s3,
                "bucket": bucket,
                "prefix": prefix,
                "env": env,
                "tmp": tmp,
                "redis_url": rds.url,
                "weed_pid": seaweed.pid,
                "warm_url": warm_url,
            }
            results: dict[int, dict[str, list[dict[str, Any]]]] = {s: {v: [] for v in variants} for s in sizes}
            for size in sizes:
                for rep in range(opts.repeat):
                    order = variants if rep % 2 == 0 else tuple(reversed(variants))
                    for v in order:
                        r = one_run(v, size, sources[size], ctx)
                        results[size][v].append(r)
                        print(
                            f"  {label(size):<8} run {rep + 1} {v:<7} {r['mbps']:7.1f} MB/s  {r['seconds']:6.2f} s  "
                            f"peak RSS {r['peak_mib']:6.1f} MiB (base {r['base_mib']:5.1f})  CPU {r['cpu_s']:5.2f} s"
                            f"  S3 server CPU {r['s3_cpu_s']:5.2f} s  size+sha256 verified",
                            flush=True,
                        )
            print()
            print_table(results, variants)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100M,1G", help="comma-separated, K/M/G = KiB/MiB/GiB (default 100M,1G)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--tmpdir", default=None, help="where sources and SeaweedFS data go (default: system tmp)")
    parser.add_argument("--child-plain", nargs=2, metavar=("URL", "KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--child-job", nargs=2, metavar=("WARM_JOB_ID", "JOB_ID"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child_plain:
        print("RESULT " + json.dumps(child_plain(*opts.child_plain)), flush=True)
    elif opts.child_job:
        print("RESULT " + json.dumps(child_job(*opts.child_job)), flush=True)
    else:
        main_parent(opts)


if __name__ == "__main__":
    main()
