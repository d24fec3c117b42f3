"""Content-addressed artifact storage: every blob is named by its sha256.

Versions that share an unchanged file (the base weights, an earlier stage) share one blob. Writes
are atomic (temp file, fsync, rename) and idempotent, so a crash leaves either no blob or a whole
one, never a torn file under a valid name. Blobs nobody references are harmless garbage.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from service.registry.errors import ArtifactCorrupt, ArtifactNotFound

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Reject anything but 64 lowercase hex characters (a digest is also a path: no traversal)."""
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ValueError(f"digest must be 64 lowercase hex characters (sha256), got {digest!r}")
    return digest


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@runtime_checkable
class ArtifactStore(Protocol):
    """What the registry and the model host need from storage: a local directory (here) or an
    S3-compatible bucket with a local cache (service/artifacts_s3.py); service/artifact_stores.py
    builds the configured one."""

    def put_bytes(self, data: bytes) -> str: ...

    def put_file(self, path: str | os.PathLike[str]) -> str: ...

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int: ...

    def open(self, digest: str) -> BinaryIO: ...

    def read_bytes(self, digest: str, *, verify: bool = True) -> bytes: ...

    def get_path(self, digest: str, *, verify: bool = False) -> Path: ...


class LocalArtifactStore:
    """Blobs under `root/ab/cdef...` (first two hex digits as a fan-out directory)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def put_bytes(self, data: bytes) -> str:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"put_bytes takes bytes, got {type(data).__name__}")
        digest = sha256_bytes(data)
        if self.exists(digest):
            return digest
        with self._temp_file() as (f, tmp):
            f.write(data)
            self._commit(f, tmp, digest)
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Copy a file in, hashing while copying so it is read once."""
        src = Path(path)
        if not src.is_file():
            raise ValueError(f"put_file: {str(src)!r} is not a file")
        with open(src, "rb") as source:
            return self.put_stream(source)

    def put_stream(self, source: BinaryIO, *, expect: str | None = None, origin: str = "") -> str:
        """Copy a readable stream in, hashing while copying. With `expect` (a digest), bytes that
        hash to anything else raise ArtifactCorrupt and are never committed (a download's check)."""
        if expect is not None:
            check_digest(expect)
        h = hashlib.sha256()
        with self._temp_file() as (f, tmp):
            while chunk := source.read(_CHUNK):
                h.update(chunk)
                f.write(chunk)
            digest = h.hexdigest()
            if expect is not None and digest != expect:
                where = origin or "its source"
                raise ArtifactCorrupt(
                    f"artifact {expect} in {where} does not match its sha256 (got {digest})"
                )
            if not self.exists(digest):
                self._commit(f, tmp, digest)
        return digest

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def size(self, digest: str) -> int:
        return self._existing(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        return open(self._existing(digest), "rb")  # noqa: SIM115 - the caller closes it

    def read_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        data = self._existing(digest).read_bytes()
        if verify and sha256_bytes(data) != digest:
            raise ArtifactCorrupt(f"artifact {digest} in {self.root} does not match its sha256")
        return data

    def get_path(self, digest: str, *, verify: bool = False) -> Path:
        """The blob's local path (read it, never write it); `verify` rehashes it first."""
        path = self._existing(digest)
        if verify and sha256_file(path) != digest:
            raise ArtifactCorrupt(f"artifact {digest} in {self.root} does not match its sha256")
        return path

    def _existing(self, digest: str) -> Path:
        path = self._path(digest)
        if not path.is_file():
            raise ArtifactNotFound(f"artifact {digest} not found in {self.root}", field="sha256")
        return path

    @contextmanager
    def _temp_file(self) -> Iterator[tuple[BinaryIO, Path]]:
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, tmp
        finally:
            tmp.unlink(missing_ok=True)  # already renamed on success

    def _commit(self, f: BinaryIO, tmp: Path, digest: str) -> None:
        f.flush()
        os.fsync(f.fileno())
        final = self._path(digest)
        final.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        # A concurrent writer of the same content may win the race; both files are identical.
        os.replace(tmp, final)
        _fsync_dir(final.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_out(store: ArtifactStore, digest: str, dest: str | os.PathLike[str]) -> Path:
    """Write a blob to `dest` (e.g. to rebuild a checkpoint directory for `flame_core`)."""
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store.open(digest) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
    return out
