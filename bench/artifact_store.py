"""What the object store costs a model version: put, then load on a host with a cold or a warm cache.

    OMP_WAIT_POLICY=PASSIVE python bench/artifact_store.py [--repeats 5] [--out FILE]

Two versions, as the service stores them (`service.versioning.version_files`: manifest + weights):
the demo model (v1) and the same model with 19 continual stages stacked on it (v20). Two stores,
built by the service's own factory (`service.artifact_stores.build_store`): the local folder (the
embedded default) and an S3 bucket with this host's read-through cache. The S3 server is
FLAME_BENCH_S3_ENDPOINT, else a `moto_server` started here on a free port (moto keeps objects in
memory, in Python: a real object store over a network differs; read the S3 rows as this stack's
overhead on loopback, not as S3's latency). Each cell is the median of `--repeats` runs:

- put (new): both files into a store that lacks them (a fresh prefix each run);
- put (present): the same again (S3: one HEAD per file, no upload);
- load (cold cache): `load_version` on a host whose cache is empty (S3: download, hash, rename into
  the cache, then read and rebuild the model; the local folder has no cache: it reads its own files,
  which the OS has cached);
- load (warm cache): the same host again (no request to the bucket).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving_setup import _reload, _stack_stages  # noqa: E402
from service.artifacts_s3 import make_client  # noqa: E402
from service.cli.serve import DEMO_N, build_demo_model  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.versioning import load_version, version_files  # noqa: E402
from tests.service.s3_server import TEST_ENV, answers, start_moto  # noqa: E402


class Files:
    """The part of a registry row `load_version` reads: each file's digest."""

    def __init__(self, digests: dict[str, str]) -> None:
        self.digests = digests

    def file(self, name: str) -> dict[str, str]:
        return {"sha256": self.digests[name]}


def versions() -> dict[str, dict[str, bytes]]:
    from flame_core.benchmarks import load_benchmark

    cl, _ = build_demo_model(epochs=0)
    stacked = _reload(cl)
    data = load_benchmark("synthetic-icu", n=DEMO_N, seed=0)
    _stack_stages(stacked, list(data.splits["train"])[:128], list(data.splits["val"])[:64], 19)
    return {"v1 (demo)": version_files(cl), "v20 (+19 stages)": version_files(stacked)}


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(kind: str, files: dict[str, bytes], work: Path, bucket: str | None, repeats: int) -> list[str]:
    from service.artifact_stores import build_store

    def settings(host: str, prefix: str) -> Settings:
        url = None if bucket is None else f"s3://{bucket}/{prefix}"
        return Settings(
            home=work / host, artifact_root=work / "local" / prefix, artifact_url=url,
            artifact_cache=work / host / f"cache-{uuid.uuid4().hex}",
        )  # fmt: skip

    def put_new() -> None:
        store = build_store(settings("writer", uuid.uuid4().hex))
        for data in files.values():
            store.put_bytes(data)

    prefix = uuid.uuid4().hex
    writer = build_store(settings("writer", prefix))
    row = Files({name: writer.put_bytes(data) for name, data in files.items()})
    put_present = median_ms(lambda: [writer.put_bytes(d) for d in files.values()], repeats)
    cold = median_ms(lambda: load_version(build_store(settings("reader", prefix)), row), repeats)
    reader = build_store(settings("reader", prefix))
    load_version(reader, row)
    warm = median_ms(lambda: load_version(reader, row), repeats)
    size = sum(len(d) for d in files.values())
    cells = [f"{median_ms(put_new, repeats):,.1f}", f"{put_present:,.1f}", f"{cold:,.1f}", f"{warm:,.1f}"]
    return [kind, f"{size / 2**20:.2f}", *cells]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "artifact_store.md")
    args = parser.parse_args()
    for k, v in TEST_ENV.items():
        os.environ.setdefault(k, v)
    work = Path(tempfile.mkdtemp(prefix="flame-bench-store-"))
    moto = None
    endpoint = os.environ.get("FLAME_BENCH_S3_ENDPOINT")
    if endpoint is None or not answers(endpoint):
        moto, endpoint = start_moto(work / "moto.log")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        make_client().create_bucket(Bucket=bucket)
        rows = []
        for name, files in versions().items():
            for kind, b in (("local folder", None), ("S3 + local cache", bucket)):
                rows.append([name, *measure(kind, files, work, b, args.repeats)])
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
    head = ["version", "store", "MiB", "put (new) ms", "put (present) ms", "load, cold cache ms"]
    head.append("load, warm cache ms")
    table = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    page = [
        "# Artifact stores (issue 10): a model version's put and load, local folder vs S3",
        "",
        f"- {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"- S3 server: {'moto_server started by this run' if moto else endpoint} on loopback "
        "(in-memory, Python: the S3 rows are this stack's cost, not a real object store's latency)",
        f"- median of {args.repeats} runs per cell; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        *table,
        "",
    ]
    print("\n".join(page))
    args.out.write_text("\n".join(page))


if __name__ == "__main__":
    main()
