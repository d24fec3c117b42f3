"""Served when it says so: the delay from a job reporting `succeeded` to the first prediction that
the new version answers, on the production stack.

    python bench/served_delay.py --trials 20 --out bench/results/served_delay.md

A real uvicorn server process and a real Celery worker process on a scratch PostgreSQL database
(migrated with Alembic) and Redis. A tiny FLAME is registered as v1; each trial submits a stage of
one epoch for a new task (`POST /tasks`), polls `GET /jobs/{id}` until it says `succeeded`, then
asks `POST /predict/<new task>` until the new version answers. The delay runs from the poll that saw
`succeeded` to that answer; the server hears of the alias move through PostgreSQL NOTIFY (its
polling fallback is set to 60 s here, so a poll cannot explain a short delay).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flame_core.benchmarks.synthetic_icu import generate  # noqa: E402
from flame_core.config import FlameConfig  # noqa: E402
from flame_core.continual import ContinualFlame  # noqa: E402
from flame_core.model import build_flame  # noqa: E402
from flame_core.training import TrainConfig, train  # noqa: E402
from service.artifacts import LocalArtifactStore  # noqa: E402
from service.cli.serve import register_model, run_migrations  # noqa: E402
from service.db import make_engine, make_session_factory  # noqa: E402

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
POLL_S = 0.01


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 20 trials, p99 is the slowest trial)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * q / 100), 1) - 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _labelled(samples: list[dict], names: list[str]) -> list[dict]:
    """Samples carrying the `los` label under every benchmark task name."""
    return [
        {"modalities": s["modalities"], "labels": {n: s["labels"]["los"] for n in names}}
        for s in samples
        if s["labels"].get("los") is not None and {"vitals", "labs"} & set(s["modalities"])
    ]


def _register_v1(url: str, artifacts: Path, icu) -> None:  # type: ignore[no-untyped-def]
    specs = icu.specs.subset(["mortality"])
    model = build_flame(TINY, specs)
    rows = [{**s, "labels": {"mortality": s["labels"]["mortality"]}} for s in icu.splits["train"]]
    val = [{**s, "labels": {"mortality": s["labels"]["mortality"]}} for s in icu.splits["val"]]
    train(model, specs, rows, val, TrainConfig(epochs=1, device="cpu", progress=False))
    engine = make_engine(url)
    register_model(
        session_factory=make_session_factory(engine),
        store=LocalArtifactStore(artifacts),
        cl=ContinualFlame(model.eval()),
    )
    engine.dispose()


def _wait_ready(client: httpx.Client, procs: list[subprocess.Popen], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("the server or the worker exited during start-up")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def _spec(task: str) -> dict:  # type: ignore[type-arg]
    return {"name": task, "modalities": ["vitals", "labs"], "head": {"type": "binary"}}


def _upload(client: httpx.Client, icu, task: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Train and validation datasets labelled for `task` (a stage refuses labels of other tasks)."""
    datasets = {}
    for split, key in (("train", "train"), ("val", "validation")):
        r = client.post(
            "/datasets",
            content="\n".join(json.dumps(s) for s in _labelled(icu.splits[split], [task])),
            params={"specs": json.dumps({"tasks": [_spec(task)]})},
            headers={"content-type": "application/x-ndjson"},
        )
        if r.status_code != 201:
            raise RuntimeError(f"dataset upload answered {r.status_code}: {r.text[:500]}")
        datasets[key] = r.json()["dataset_id"]
    return datasets


def _trial(client: httpx.Client, task: str, datasets: dict[str, str], seed: int) -> dict[str, float | str]:
    spec = _spec(task)
    body = {
        "tasks": [spec],
        "datasets": datasets,
        "options": {"epochs": 1, "refit_epochs": 0, "rank": 1, "seed": seed},
    }
    submitted = time.monotonic()
    r = client.post("/tasks", json=body)
    r.raise_for_status()
    job_id = r.json()["job_id"]
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(POLL_S)
    said_succeeded = time.monotonic()
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['state']}: {job['error']}")
    payload = {"modalities": {"labs": {"values": [0.1] * 12}}}
    misses = 0
    while True:
        r = client.post(f"/predict/{task}", json=payload)
        if r.status_code == 200 and r.json()["model_version"] == job["result_version"]:
            break
        misses += 1
        time.sleep(POLL_S)
    served = time.monotonic()
    return {
        "task": task,
        "version": job["result_version"],
        "stage_s": said_succeeded - submitted,
        "delay_s": served - said_succeeded,
        "misses": misses,
    }


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "FLAME_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "served_delay.md")
    args = parser.parse_args()

    broker = redis.Redis.from_url(args.redis)
    broker.ping()
    admin = make_engine(args.pg, isolation_level="AUTOCOMMIT")
    name = f"flame_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    workdir = Path(tempfile.mkdtemp(prefix="flame-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        run_migrations(url)
        icu = generate(seed=0, n=200)
        _register_v1(url, workdir / "artifacts", icu)
        port = _free_port()
        env = {
            **os.environ,
            "FLAME_DATABASE_URL": url,
            "FLAME_REDIS_URL": args.redis,
            "FLAME_ARTIFACT_ROOT": str(workdir / "artifacts"),
            "FLAME_AUTH_ENABLED": "false",
            "FLAME_DEVICE": "cpu",
            "FLAME_LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        server = (
            "import uvicorn; from service.app import create_app; "
            "uvicorn.run(create_app(reload_interval_s=60), host='127.0.0.1', "
            f"port={port}, access_log=False, log_level='warning')"
        )
        procs.append(_start([sys.executable, "-c", server], env, workdir / "server.log"))
        worker = ["-m", "celery", "-A", "service.jobs.celery_app", "worker", "--pool", "solo", "-c", "1"]
        procs.append(_start([sys.executable, *worker, "--loglevel", "WARNING"], env, workdir / "worker.log"))
        names = [f"bench_t{i:02d}" for i in range(1, args.trials + 1)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            _wait_ready(client, procs)
            rows = []
            for i, task in enumerate(names, start=1):
                row = _trial(client, task, _upload(client, icu, task), seed=i)
                rows.append(row)
                print(f"trial {i:2d}: {row['version']} delay {row['delay_s'] * 1000:.0f} ms", flush=True)
        report = _report(rows, args)
        print(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    except BaseException:
        for log in sorted(workdir.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        broker.flushdb()


def _report(rows: list[dict], args: argparse.Namespace) -> str:  # type: ignore[type-arg]
    delays = [r["delay_s"] * 1000 for r in rows]
    stages = [r["stage_s"] for r in rows]
    lines = [
        "# Served delay: job `succeeded` -> first prediction from the new version",
        "",
        f"`python bench/served_delay.py --trials {args.trials}` on {platform.platform()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs (shared), {time.strftime('%Y-%m-%d')}.",
        "One uvicorn server process and one Celery worker (solo pool) on PostgreSQL (Alembic-migrated)",
        "and Redis; a tiny FLAME (d_model 16, 4 experts); each trial a stage of 1 epoch for a new task.",
        "The server hears alias moves by PostgreSQL NOTIFY; its polling fallback was 60 s.",
        "Delay: from the `GET /jobs/{id}` poll (every 10 ms) that first said `succeeded` to the first",
        "`POST /predict/<new task>` (every 10 ms) answered by the new version. p99 is nearest-rank",
        f"(with {len(rows)} trials, the slowest).",
        "",
        "| trials | p50 ms | p90 ms | p99 ms | max ms | mean ms | stage s (p50) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(rows)} | {_percentile(delays, 50):.0f} | {_percentile(delays, 90):.0f} | "
        f"{_percentile(delays, 99):.0f} | {max(delays):.0f} | {statistics.mean(delays):.0f} | "
        f"{_percentile(stages, 50):.1f} |",
        "",
        f"Target p99 < 1000 ms: **{'met' if _percentile(delays, 99) < 1000 else 'NOT met'}**.",
        "",
        "| trial | version | stage s | delay ms | predictions before the new version |",
        "|---:|---|---:|---:|---:|",
    ]
    for i, r in enumerate(rows, start=1):
        lines.append(
            f"| {i} | {r['version']} | {r['stage_s']:.2f} | {r['delay_s'] * 1000:.0f} | {r['misses']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
