"""The local artifact store: content addressing, idempotence, atomic writes, verified reads."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from service import artifacts
from service.artifacts import ArtifactStore, LocalArtifactStore, copy_out
from service.registry.errors import ArtifactCorrupt, ArtifactNotFound


def _blobs(store: LocalArtifactStore) -> list[str]:
    return sorted(p.parent.name + p.name for p in store.root.glob("??/*"))


def test_blobs_are_named_by_sha256(store, tmp_path):
    data = b"\x00weights\xff" * 100
    digest = store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get_path(digest) == store.root / digest[:2] / digest[2:]
    assert store.read_bytes(digest) == data and store.size(digest) == len(data)
    with store.open(digest) as f:
        assert f.read() == data
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    assert store.put_file(src) == digest  # same content, same blob
    assert store.put_bytes(data) == digest
    assert _blobs(store) == [digest]
    assert copy_out(store, digest, tmp_path / "out" / "w.bin").read_bytes() == data
    assert isinstance(store, ArtifactStore)


def test_a_crash_before_the_rename_leaves_no_blob(store, monkeypatch):
    def crash(src, dst):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes(b"half-written")
    digest = hashlib.sha256(b"half-written").hexdigest()
    assert not store.exists(digest) and _blobs(store) == []
    assert list((store.root / ".tmp").iterdir()) == []  # the temp file was cleaned up
    monkeypatch.undo()
    assert store.put_bytes(b"half-written") == digest and store.exists(digest)


def test_concurrent_writers_of_the_same_content_agree(store):
    data = os.urandom(1 << 16)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(store.put_bytes(data))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 8
    assert _blobs(store) == results[:1] and store.read_bytes(results[0]) == data


def test_reads_detect_corruption(store):
    digest = store.put_bytes(b"good")
    path = store.get_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"evil")
    with pytest.raises(ArtifactCorrupt, match=digest):
        store.read_bytes(digest)
    with pytest.raises(ArtifactCorrupt):
        store.get_path(digest, verify=True)
    assert store.read_bytes(digest, verify=False) == b"evil"


def test_digests_are_validated_and_missing_blobs_reported(store):
    for bad in ("../../etc/passwd", "AB" * 32, "ab" * 31, ""):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            store.exists(bad)
    with pytest.raises(ArtifactNotFound, match="not found"):
        store.read_bytes("0" * 64)
    with pytest.raises(ValueError, match="bytes"):
        store.put_bytes("text")  # type: ignore[arg-type]
