"""Artifacts in an S3-compatible bucket, read through a local cache on each host.

Blobs are content-addressed as in the local store: `<prefix>/<ab>/<rest of sha256>`. A put hashes
the bytes into the cache first, then uploads only when the bucket lacks the key, so a put is
idempotent and a second host putting the same file uploads nothing. Every download is hashed on its
way into the cache (temp file, then rename): an object whose bytes do not match its name raises
`ArtifactCorrupt` and never reaches the cache, so a cached blob is one that was verified once.
Endpoint, region and credentials come from the standard AWS_* variables (boto3 reads them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from service.artifacts import LocalArtifactStore, check_digest
from service.registry.errors import ArtifactNotFound

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _error_code(e: Any) -> str:
    """The S3 error code of a botocore ClientError ("NoSuchKey", "403", ...), "" when it has none."""
    return str(e.response.get("Error", {}).get("Code", ""))


class StoreUnavailable(Exception):
    """The configured artifact store cannot be used (bad credentials, no bucket, no endpoint)."""


def endpoint_url() -> str | None:
    """The S3 endpoint boto3 will use (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL), None for AWS."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client() -> Any:
    """A boto3 S3 client from the environment; path-style addressing on a custom endpoint (a MinIO,
    SeaweedFS or moto host name is no DNS wildcard)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path" if endpoint_url() else "auto"},
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    # a session of its own: the default one caches the credentials it resolved first, for good
    return boto3.session.Session().client("s3", region_name=region, config=config)


class S3ArtifactStore:
    """The ArtifactStore protocol on `s3://bucket/prefix`, with `cache_dir` as this host's cache."""

    def __init__(
        self, *, bucket: str, prefix: str = "", cache_dir: str | os.PathLike[str], client: Any = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = LocalArtifactStore(cache_dir)
        self.client = client if client is not None else make_client()

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.url!r}, cache={str(self.cache.root)!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, digest: str) -> str:
        check_digest(digest)
        name = f"{digest[:2]}/{digest[2:]}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def check(self) -> None:
        """One HEAD on the bucket: raises StoreUnavailable with one line saying what to fix."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"bucket {self.bucket!r} at {endpoint_url() or 'AWS S3'}"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise StoreUnavailable(
                f"no credentials for the artifact {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        except ClientError as e:
            code = _error_code(e)
            if code in _MISSING:
                fix = "create it, or fix the bucket in FLAME_ARTIFACT_URL"
                raise StoreUnavailable(f"the artifact {where} does not exist: {fix}") from None
            if code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                fix = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                raise StoreUnavailable(
                    f"the artifact {where} refused the credentials ({code}): {fix}"
                ) from None
            raise StoreUnavailable(
                f"the artifact {where} answered {code or e}: check FLAME_ARTIFACT_URL"
            ) from None
        except BotoCoreError as e:
            fix = "check AWS_ENDPOINT_URL (and that the server runs)"
            raise StoreUnavailable(f"cannot reach the artifact {where} ({type(e).__name__}): {fix}") from None

    def put_bytes(self, data: bytes) -> str:
        return self._upload(self.cache.put_bytes(data))

    def put_file(self, path: str | os.PathLike[str]) -> str:
        return self._upload(self.cache.put_file(path))

    def exists(self, digest: str) -> bool:
        """Whether the bucket holds it (the cache alone is no proof: an upload may have failed)."""
        return self._head(digest) is not None

    def size(self, digest: str) -> int:
        if self.cache.exists(digest):
            return self.cache.size(digest)
        head = self._head(digest)
        if head is None:
            raise self._not_found(digest)
        return int(head["ContentLength"])

    def open(self, digest: str) -> BinaryIO:
        return open(self.get_path(digest), "rb")  # noqa: SIM115 - the caller closes it

    def read_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        if not self.cache.exists(digest):
            self._download(digest)  # verified on the way in, whatever `verify` says
            return self.cache.read_bytes(digest, verify=False)
        return self.cache.read_bytes(digest, verify=verify)

    def get_path(self, digest: str, *, verify: bool = False) -> Path:
        """The cached copy's path (read it, never write it), downloaded and verified first if absent."""
        if not self.cache.exists(digest):
            self._download(digest)
            return self.cache.get_path(digest)
        return self.cache.get_path(digest, verify=verify)

    def _upload(self, digest: str) -> str:
        if self._head(digest) is None:
            self.client.upload_file(str(self.cache.get_path(digest)), self.bucket, self.key(digest))
        return digest

    def _download(self, digest: str) -> None:
        from botocore.exceptions import ClientError

        key = self.key(digest)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as e:
            if _error_code(e) in _MISSING:
                raise self._not_found(digest) from None
            raise
        try:
            self.cache.put_stream(body, expect=digest, origin=f"s3://{self.bucket}/{key}")
        finally:
            body.close()

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as e:
            if _error_code(e) in _MISSING:
                return None
            raise

    def _not_found(self, digest: str) -> ArtifactNotFound:
        return ArtifactNotFound(f"artifact {digest} not found in {self.url}", field="sha256")
