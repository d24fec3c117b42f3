"""The one place that builds the artifact store: the api, the worker and the CLI all call it.

`FLAME_ARTIFACT_URL=s3://bucket/prefix` selects an S3-compatible bucket with this host's read-through
cache in `FLAME_ARTIFACT_CACHE`; unset, the store is the local folder `FLAME_ARTIFACT_ROOT` (the
embedded default). `open_store` also checks the bucket once, so a process with bad credentials, no
bucket or no endpoint stops at start with one line instead of failing its first request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.artifacts import ArtifactStore, LocalArtifactStore
from service.artifacts_s3 import S3ArtifactStore, StoreUnavailable

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["StoreUnavailable", "build_store", "open_store", "split_s3_url"]


def split_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the settings validated it."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def build_store(settings: Settings) -> ArtifactStore:
    """The configured store, unchecked (nothing is contacted)."""
    if settings.artifact_url is None:
        return LocalArtifactStore(settings.artifact_root)
    bucket, prefix = split_s3_url(settings.artifact_url)
    return S3ArtifactStore(bucket=bucket, prefix=prefix, cache_dir=settings.artifact_cache)


def open_store(settings: Settings) -> ArtifactStore:
    """The configured store after one check of its bucket; raises StoreUnavailable (one line)."""
    store = build_store(settings)
    if isinstance(store, S3ArtifactStore):
        store.check()
    return store
