"""The S3 artifact store against a real S3-compatible server (moto's standalone server).

Each test gets a fresh bucket. Two stores on one bucket with separate cache folders play two hosts.
Requests are counted through botocore's own event hooks on the real client (nothing is mocked).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest

from service.artifact_stores import StoreUnavailable, open_store
from service.artifacts_s3 import S3ArtifactStore
from service.registry.errors import ArtifactCorrupt, ArtifactNotFound
from service.settings import Settings

from .s3_server import client, free_port, keys, s3_bucket, s3_endpoint, start_moto  # noqa: F401

DATA = b"weights " * 1000


def counted(store: S3ArtifactStore) -> Counter[str]:
    """The S3 operations `store` sends from now on, by name."""
    calls: Counter[str] = Counter()
    store.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    return calls


def host(bucket: str, cache: Path) -> S3ArtifactStore:
    return S3ArtifactStore(bucket=bucket, prefix="blobs", cache_dir=cache)


def blobs(root: Path) -> list[Path]:
    """Content-addressed files under a store root (not its temp folder)."""
    return [p for p in root.glob("??/*") if p.is_file()]


def test_protocol_on_a_real_bucket(s3_bucket, s3_endpoint, tmp_path):  # noqa: F811
    store = host(s3_bucket, tmp_path / "cache")
    digest = store.put_bytes(DATA)
    assert digest == hashlib.sha256(DATA).hexdigest()
    assert keys(s3_endpoint, s3_bucket) == {f"blobs/{digest[:2]}/{digest[2:]}"}
    assert store.exists(digest) and store.size(digest) == len(DATA)
    assert store.read_bytes(digest) == DATA
    with store.open(digest) as f:
        assert f.read() == DATA
    assert store.get_path(digest, verify=True).read_bytes() == DATA

    src = tmp_path / "config.json"
    src.write_bytes(b'{"d_model": 16}')
    file_digest = store.put_file(src)
    assert file_digest == hashlib.sha256(src.read_bytes()).hexdigest()
    other = host(s3_bucket, tmp_path / "other-cache")  # another host: everything comes from the bucket
    assert other.read_bytes(file_digest) == src.read_bytes() and other.size(digest) == len(DATA)

    missing = "0" * 64
    assert not store.exists(missing)
    for read in (other.read_bytes, other.get_path, other.size, other.open):
        with pytest.raises(ArtifactNotFound, match=f"{missing} not found in s3://{s3_bucket}/blobs"):
            read(missing)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.exists("../../etc/passwd")


def test_put_is_idempotent_across_hosts(s3_bucket, s3_endpoint, tmp_path):  # noqa: F811
    first, second = host(s3_bucket, tmp_path / "a"), host(s3_bucket, tmp_path / "b")
    calls_first, calls_second = counted(first), counted(second)
    digest = first.put_bytes(DATA)
    assert calls_first["PutObject"] + calls_first["CreateMultipartUpload"] == 1
    etag = client(s3_endpoint).head_object(Bucket=s3_bucket, Key=first.key(digest))["ETag"]
    assert first.put_bytes(DATA) == digest and second.put_bytes(DATA) == digest
    src = tmp_path / "same.bin"
    src.write_bytes(DATA)
    assert second.put_file(src) == digest
    assert calls_first["PutObject"] + calls_first["CreateMultipartUpload"] == 1  # no second upload
    assert calls_second["PutObject"] + calls_second["CreateMultipartUpload"] == 0
    assert calls_second["HeadObject"] >= 2  # each put asked the bucket instead
    assert client(s3_endpoint).head_object(Bucket=s3_bucket, Key=first.key(digest))["ETag"] == etag
    assert len(keys(s3_endpoint, s3_bucket)) == 1


def test_a_cache_hit_does_not_download_again(s3_bucket, tmp_path):  # noqa: F811
    digest = host(s3_bucket, tmp_path / "writer").put_bytes(DATA)
    reader = host(s3_bucket, tmp_path / "reader")
    calls = counted(reader)
    path = reader.get_path(digest)
    assert path.parent.parent == reader.cache.root and path.read_bytes() == DATA
    assert reader.read_bytes(digest) == DATA and reader.read_bytes(digest, verify=True) == DATA
    with reader.open(digest) as f:
        assert f.read() == DATA
    assert reader.size(digest) == len(DATA) and reader.get_path(digest, verify=True) == path
    assert calls["GetObject"] == 1, calls
    assert calls["HeadObject"] == 0, calls  # reads never ask the bucket once the blob is cached


def test_a_corrupted_object_is_refused_by_its_digest_and_never_cached(s3_bucket, s3_endpoint, tmp_path):  # noqa: F811
    digest = host(s3_bucket, tmp_path / "writer").put_bytes(DATA)
    client(s3_endpoint).put_object(
        Bucket=s3_bucket, Key=f"blobs/{digest[:2]}/{digest[2:]}", Body=b"tampered " * 1000
    )
    reader = host(s3_bucket, tmp_path / "reader")
    for read in (reader.read_bytes, reader.get_path, reader.open):
        with pytest.raises(ArtifactCorrupt, match=f"artifact {digest} in s3://{s3_bucket}/blobs/.* does not"):
            read(digest)
        assert not reader.cache.exists(digest)
    assert blobs(reader.cache.root) == [] and list((reader.cache.root / ".tmp").iterdir()) == []
    assert reader.exists(digest)  # the object is there; it is its bytes that are refused


def test_no_or_bad_credentials_are_one_clear_line(s3_bucket, s3_endpoint, tmp_path, monkeypatch):  # noqa: F811
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreUnavailable, match="no credentials .* set AWS_ACCESS_KEY_ID and AWS_SECRET"):
        open_store(Settings(home=tmp_path, artifact_url=f"s3://{s3_bucket}"))

    # A server that checks signatures (moto with authentication on from its first request).
    proc, endpoint = start_moto(tmp_path / "moto-auth.log", INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        with pytest.raises(StoreUnavailable) as e:
            open_store(Settings(home=tmp_path, artifact_url=f"s3://{s3_bucket}"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert f"the artifact bucket '{s3_bucket}' at {endpoint} refused the credentials" in str(e.value)
    assert "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in str(e.value)
    assert os.environ["AWS_ACCESS_KEY_ID"] not in str(e.value)  # never the key itself
