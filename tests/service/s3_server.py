"""A real S3-compatible server for the artifact-store tests, and a fresh bucket per test.

The server is FLAME_TEST_S3_ENDPOINT (default http://127.0.0.1:9000, which `.ci/run` starts: moto's
standalone server). Outside CI, if nothing answers there, a `moto_server` is started on a free port
for the test session; under CI=true a missing server is a failure, never a skip.
Import the fixtures into a test module: `from .s3_server import s3_bucket, s3_endpoint  # noqa: F401`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ENDPOINT = os.environ.get("FLAME_TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
# moto's server takes any credentials; these only keep boto3 from looking for real ones
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "flame-test",
    "AWS_SECRET_ACCESS_KEY": "flame-test-secret",
    "AWS_REGION": "us-east-1",
}


def answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(endpoint, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an S3 error document is an answer
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """A `moto_server` on a free port (its output in `log`); returns the process and its endpoint."""
    exe = shutil.which("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed: run `make install` (the dev extra has moto[server])")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    deadline = time.monotonic() + 30
    while not answers(endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"moto_server did not start on {endpoint}: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, endpoint


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if answers(ENDPOINT):
        yield ENDPOINT
        return
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"an S3-compatible server is required and none answers at {ENDPOINT} "
            "(.ci/run starts moto_server there; or set FLAME_TEST_S3_ENDPOINT)",
            pytrace=False,
        )
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_env(endpoint: str) -> dict[str, str]:
    """The standard AWS_* variables a process needs to reach the test server."""
    return {**TEST_ENV, "AWS_ENDPOINT_URL": endpoint}


def client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=TEST_ENV["AWS_REGION"],
        aws_access_key_id=TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_ENV["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the test server, with this process's AWS_* variables pointing at it;
    emptied and deleted after the test."""
    for name, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = client(s3_endpoint)
    bucket = f"flame-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)


def keys(endpoint: str, bucket: str) -> set[str]:
    """Every object key in `bucket`."""
    s3 = client(endpoint)
    return {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    }
