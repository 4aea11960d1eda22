"""Benchmark: stream an HTTP body into S3 (SeaweedFS on loopback) with obstore vs boto3, bounded memory.

    .venv/bin/python bench/storage_compare.py --mib 100 --repeat 3
    .venv/bin/python bench/storage_compare.py --mib 10 --repeat 1        # a short check

The parent starts SeaweedFS (benchlib), writes N MiB of random bytes to a temp file and serves it
from disk on 127.0.0.1 (benchlib's DiskFileServer). Every run of every variant is a fresh child process (this same
script with --child), so peak RSS belongs to one client. The child reads the body with httpx
``client.stream(...).iter_raw()`` and uploads it without holding it in memory:

  download       httpx only, bytes discarded: the ceiling set by the HTTP source
  obstore        obstore.put(S3Store, key, iterator of chunks): streaming multipart, 5 MiB x 12 default
  boto3          upload_fileobj(non-seekable read() adapter), default TransferConfig
  boto3-lowmem   same with max_concurrency=4 and max_in_memory_upload_chunks=2

After each upload the parent reads the object back and checks its size and SHA-256 against the source.
Runs alternate order between repeats. Not a unit test: numbers depend on the machine and its load.

Peak RSS is the child's VmHWM (/proc/self/status), baseline its VmHWM after imports and client setup.
resource.getrusage(RUSAGE_SELF).ru_maxrss is recorded as well but not used: on Linux, exec carries the
parent's RSS high-water mark into it, so every child would read at least the parent's size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchlib import MIB, DiskFileServer, SeaweedS3, machine_description, vm_status_mib

VARIANTS = ("download", "obstore", "boto3", "boto3-lowmem")


# ---------------------------------------------------------------------------------------------------------
# child: one transfer, one process


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class StreamReader:
    """Non-seekable file-like ``read(n)`` over an iterator of byte chunks (what s3transfer needs)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if size < 0 or size > len(self._buf):
            size = len(self._buf)
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out


def _counted(chunks: Iterator[bytes], total: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        total[0] += len(chunk)
        yield chunk


def run_child(variant: str, url: str, bucket: str, key: str) -> dict[str, Any]:
    """Import only what ``variant`` needs, note the baseline RSS, transfer once, report timing and RSS."""
    import httpx

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    access_key, secret_key = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    region = os.environ["AWS_REGION"]
    upload: Callable[[Iterator[bytes]], None]

    if variant == "download":

        def upload(chunks: Iterator[bytes]) -> None:
            for _ in chunks:
                pass

    elif variant == "obstore":
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            bucket,
            endpoint=endpoint,
            access_key_id=access_key,
            secret_access_key=secret_key,
            region=region,
            client_options={"allow_http": True},
        )

        def upload(chunks: Iterator[bytes]) -> None:
            obstore.put(store, key, chunks)

    elif variant in ("boto3", "boto3-lowmem"):
        import boto3
        from boto3.s3.transfer import TransferConfig

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        config = TransferConfig()
        if variant == "boto3-lowmem":
            config = TransferConfig(max_concurrency=4)
            config.max_in_memory_upload_chunks = 2  # not a constructor argument; s3transfer reads it

        def upload(chunks: Iterator[bytes]) -> None:
            s3.upload_fileobj(StreamReader(chunks), bucket, key, Config=config)

    else:
        raise SystemExit(f"unknown variant {variant!r}")

    baseline = vm_status_mib()
    total = [0]
    cpu0 = os.times()
    start = time.perf_counter()
    with httpx.Client(timeout=httpx.Timeout(60.0)) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        upload(_counted(response.iter_raw(), total))
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    return {
        "variant": variant,
        "bytes": total[0],
        "seconds": seconds,
        "cpu_seconds": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "baseline_rss_mib": baseline,
        "peak_rss_mib": vm_status_mib(),
        # ru_maxrss is reported too but not used: Linux carries the parent's RSS high-water mark over
        # fork+exec into it, so a small child of a big parent reads as big.
        "ru_maxrss_mib": _maxrss_mib(),
    }


# ---------------------------------------------------------------------------------------------------------
# parent: servers, source file, runs, verification, table


def make_source(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(mib):
            block = os.urandom(MIB)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def verify_object(s3: Any, bucket: str, key: str, size: int, sha256: str) -> None:
    head = s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        raise SystemExit(f"VERIFY FAILED {key}: size {head['ContentLength']} != source {size}")
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MIB):
        digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"VERIFY FAILED {key}: sha256 {digest.hexdigest()} != source {sha256}")


def spawn_child(variant: str, url: str, bucket: str, key: str, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--url", url, "--bucket", bucket, "--key", key]
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{variant} child failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    def med(variant: str, field: str) -> float:
        return float(statistics.median(float(r[field]) for r in results[variant]))

    def mbps(r: dict[str, Any]) -> float:
        return float(r["bytes"]) / 1e6 / float(r["seconds"])

    speed = {v: statistics.median(mbps(r) for r in results[v]) for v in VARIANTS}
    header = (
        f"{'variant':<13} {'MB/s med':>8} {'min-max':>11} {'peak RSS MiB':>12} {'baseline':>8} "
        f"{'over base':>9} {'CPU s':>6} {'vs download':>11}"
    )
    print(header)
    print("-" * len(header))
    for v in VARIANTS:
        speeds = [mbps(r) for r in results[v]]
        over = statistics.median(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in results[v])
        print(
            f"{v:<13} {speed[v]:>8.1f} {f'{min(speeds):.0f}-{max(speeds):.0f}':>11} "
            f"{med(v, 'peak_rss_mib'):>12.1f} {med(v, 'baseline_rss_mib'):>8.1f} {over:>9.1f} "
            f"{med(v, 'cpu_seconds'):>6.2f} {speed[v] / speed['download']:>10.2f}x"
        )
    print()
    for other in ("boto3", "boto3-lowmem"):
        print(f"obstore / {other:<12} throughput ratio: {speed['obstore'] / speed[other]:.2f}x")
    print("(MB = 10^6 bytes; peak RSS = child's VmHWM; 'over base' = peak minus VmHWM after imports/setup)")


def main_parent(mib: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="storage-compare-") as tmp:
        tmpdir = Path(tmp)
        source = tmpdir / "video.bin"
        sha256 = make_source(source, mib)
        size = mib * MIB
        with SeaweedS3(tmpdir / "seaweed") as seaweed, DiskFileServer() as files:
            extra = [
                f"seaweed:  {SeaweedS3.version()} (weed mini, loopback, HTTP)",
                f"workload: {mib} MiB random bytes served from disk on 127.0.0.1 -> httpx iter_raw -> S3 PUT, "
                f"{repeat} runs per variant, fresh process per run, order alternating",
            ]
            print(machine_description(("httpx", "obstore", "boto3", "s3transfer"), extra), flush=True)
            print(flush=True)
            bucket = seaweed.create_bucket("bench")
            s3 = seaweed.boto3_client()
            url = files.add("/video.mp4", source, sha256)
            results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
            for run in range(repeat):
                order = VARIANTS if run % 2 == 0 else tuple(reversed(VARIANTS))
                for variant in order:
                    key = f"bench/{variant}-{run}.mp4"
                    r = spawn_child(variant, url, bucket, key, seaweed.env(bucket))
                    if r["bytes"] != size:
                        raise SystemExit(f"{variant}: read {r['bytes']} bytes from HTTP, expected {size}")
                    if variant != "download":
                        verify_object(s3, bucket, key, size, sha256)
                        s3.delete_object(Bucket=bucket, Key=key)
                    results[variant].append(r)
                    print(
                        f"  run {run + 1} {variant:<13} {r['bytes'] / 1e6 / r['seconds']:7.1f} MB/s  "
                        f"peak RSS {r['peak_rss_mib']:6.1f} MiB"
                        + ("  (size+sha256 verified)" if variant != "download" else ""),
                        flush=True,
                    )
            print()
            print_table(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=100, help="size of the served file in MiB (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_child(args.child, args.url, args.bucket, args.key)), flush=True)
    else:
        main_parent(args.mib, args.repeat)


if __name__ == "__main__":
    main()
