"""The real-server helpers in tests/servers.py work: Redis with AOF, SeaweedFS S3 with required redis_keys."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import botocore.exceptions
import pytest
from botocore.config import Config

from tests.servers import GRPC_OFFSET, RedisServer, SeaweedS3, ephemeral_range, free_port


def test_free_port_and_offset_are_bindable() -> None:
    port = free_port(also_free_offset=GRPC_OFFSET)
    assert 10000 <= port and port + GRPC_OFFSET < ephemeral_range()[0]  # a restart finds its port free
    for p in (port, port + GRPC_OFFSET):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", p))
    assert free_port() != port  # never handed out twice


def test_redis_ping_and_aof_file(redis_server: RedisServer) -> None:
    client = redis_server.client()
    assert client.ping()
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client.set("k", "v")
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    # redis 6: appendonly.aof; redis 7+: appendonlydir/ with base and incr files
    assert list(redis_server.dir.glob("appendonly*")), os.listdir(redis_server.dir)
    client.close()


def test_redis_restart_keeps_data(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.rpush("queue", "job-1", "job-2")
    pid = redis_server.pid
    redis_server.restart()
    assert redis_server.pid != pid
    with redis_server.client() as client:
        assert client.lrange("queue", 0, -1) == [b"job-1", b"job-2"]


def test_redis_sigkill_with_fsync_always_keeps_acknowledged_writes(tmp_path: Path) -> None:
    with RedisServer(tmp_path, appendfsync="always") as server:
        with server.client() as client:
            client.set("acked", "1")
        server.kill()
        assert not server.running
        server.start()
        with server.client() as client:
            assert client.get("acked") == b"1"


def test_s3_put_get_roundtrip(seaweed: SeaweedS3, s3_bucket: str) -> None:
    s3 = seaweed.boto3_client()
    body = os.urandom(3 * 1024 * 1024 + 17)
    s3.put_object(Bucket=s3_bucket, Key="videos/a.mp4", Body=body)
    got = s3.get_object(Bucket=s3_bucket, Key="videos/a.mp4")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="videos/")
    assert [o["Key"] for o in listed["Contents"]] == ["videos/a.mp4"]
    assert seaweed.env(s3_bucket, "archive/") == {
        "ARCHIVE_URL": f"s3://{s3_bucket}/archive/",
        "AWS_ENDPOINT_URL": seaweed.endpoint,
        "AWS_ACCESS_KEY_ID": "admin",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "us-east-1",
    }


def test_s3_refuses_wrong_and_missing_credentials(seaweed: SeaweedS3, s3_bucket: str) -> None:
    import boto3

    def client(**kwargs: object) -> object:
        return boto3.client("s3", endpoint_url=seaweed.endpoint, region_name="us-east-1", **kwargs)

    wrong_secret = client(aws_access_key_id="admin", aws_secret_access_key="not-the-secret")  # noqa: S106
    unknown_key = client(aws_access_key_id="intruder", aws_secret_access_key="secret")  # noqa: S106
    anonymous = client(config=Config(signature_version=botocore.UNSIGNED))
    for bad, code in [
        (wrong_secret, "SignatureDoesNotMatch"),
        (unknown_key, "InvalidAccessKeyId"),
        (anonymous, "AccessDenied"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            bad.put_object(Bucket=s3_bucket, Key="x", Body=b"x")  # type: ignore[attr-defined]
        assert info.value.response["Error"]["Code"] == code
    assert seaweed.boto3_client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_s3_kill_and_start_keeps_data(seaweed: SeaweedS3, s3_bucket: str) -> None:
    seaweed.boto3_client().put_object(Bucket=s3_bucket, Key="kept", Body=b"survives a crash")
    ports = dict(seaweed.ports)
    seaweed.kill()
    down = seaweed.boto3_client(connect_timeout=1, retries={"max_attempts": 1})
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        down.list_buckets()
    seaweed.start()
    assert seaweed.ports == ports
    body = seaweed.boto3_client().get_object(Bucket=s3_bucket, Key="kept")["Body"].read()
    assert body == b"survives a crash"
