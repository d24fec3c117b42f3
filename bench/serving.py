"""Serving benchmark (issue 8): ceilings, the service, a naive anchor and the stress cases, in one run.

    OMP_WAIT_POLICY=PASSIVE python bench/serving.py [--quick] [--device cpu|cuda] [--out FILE]

a. in-process ceiling: the demo model's raw forward, and validation + collation + forward;
b. HTTP ceiling: an empty route on the service's own stack (same process, same middleware);
c. the service: `POST /predict/mortality`, 1 and 32 instances per request, closed loop;
d. a naive FastAPI endpoint around the same model version (`bench/naive_serve.py`);
e. FLAME_BATCH_INVARIANT on and off; 1 vs 20 stages served; a 20,000-request soak; an overload
   burst (concurrency 512 against FLAME_MAX_QUEUE_DEPTH=64);
f. p99 / p50 at half the peak requests/s of (c), open loop.
Servers run as `flame serve` runs them (uvicorn, one worker, no access log) on a scratch SQLite
registry; the load comes from `bench/loadgen.py` in its own process. `--quick`: an untrained model
and short runs (about 3 minutes); the full run takes about 12 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving_report import LOAD_HEADERS, errors, load_cells, machine, table  # noqa: E402
from bench.serving_server import Server  # noqa: E402
from bench.serving_setup import TASK, Registry, build_registry, ceiling  # noqa: E402
from bench.serving_stress import INSTANCES  # noqa: E402
from bench.serving_verdict import Verdict  # noqa: E402
from service.cli.serve import DEMO_EPOCHS  # noqa: E402

CONCURRENCY = (1, 8, 32, 64)
BATCHES = (1, 8, 32, 64)
QUICK = {"epochs": 0, "warmup": 0.5, "duration": 2.0, "soak": 1_000, "burst": 3.0, "open": 4.0, "ceil": 0.3}
FULL = {
    "epochs": DEMO_EPOCHS,  # the demo model as `flame bootstrap` trains it
    "warmup": 2.0,
    "duration": 8.0,
    "soak": 20_000,
    "burst": 15.0,
    "open": 20.0,
    "ceil": 2.0,
}


class Bench(Verdict):
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.p = QUICK if args.quick else FULL
        self.sections: list[str] = []
        self.notes: list[str] = []
        self.torch_threads = int(os.environ.get("FLAME_TORCH_THREADS", "1"))
        self.forward_ceiling: dict[int, float] = {}
        self.validated_ceiling: dict[int, float] = {}
        self.http_rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.results: dict[str, Any] = {}

    def emit(self, title: str, text: str) -> None:
        """Print a table as soon as it is measured; the file keeps the sections in letter order."""
        block = f"## {title}\n\n{text}\n"
        print(block, flush=True)
        self.sections.append(block)
        self.write()

    def write(self) -> None:
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        ordered = sorted(self.sections, key=lambda b: b.split(".", 1)[0] if "." in b[:8] else "~")
        self.args.out.write_text(self.header + "\n\n" + "\n".join(ordered))

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "FLAME_HOME": str(self.reg.home),
            "FLAME_DEVICE": self.args.device,
            "FLAME_LOG_LEVEL": "WARNING",
            "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONPATH": str(ROOT),
            **extra,
        }

    def bodies(self) -> None:
        samples = self.reg.samples
        self.single = self.workdir / "single.jsonl"
        self.single.write_text("\n".join(json.dumps(s) for s in samples) + "\n")
        ring = samples * 2
        groups = [ring[i : i + INSTANCES] for i in range(0, len(samples), INSTANCES)]
        self.batch = self.workdir / "batch32.jsonl"
        self.batch.write_text("\n".join(json.dumps({"instances": g}) for g in groups) + "\n")

    def closed(self, server: Server, path: str, bodies: Path, c: int) -> dict[str, Any]:
        return server.load(path, bodies, concurrency=c, duration=self.p["duration"], warmup=self.p["warmup"])

    def run(self) -> None:
        p, args = self.p, self.args
        self.header = "# Serving benchmark (issue 8)\n\n" + machine(ROOT, args.device)
        self.header += f"\n- mode: {'--quick (untrained model, short runs)' if args.quick else 'full'}"
        print(self.header, flush=True)
        t0, self.load = time.perf_counter(), os.getloadavg()
        self.reg: Registry = build_registry(self.workdir / "home", epochs=p["epochs"])
        self.header += (
            f"\n- fixtures: demo model {self.reg.v1} and {self.reg.v20} (= {self.reg.v1} + 19 stages, "
            f"trained in {self.reg.stage_s:.0f} s), set up in {time.perf_counter() - t0:.0f} s; requests "
            f"cycle through the {len(self.reg.samples)} demo validation samples (labels stripped); "
            f"closed-loop runs: {p['warmup']} s warm-up + {p['duration']} s recorded; p50/p99 nearest rank"
        )
        self.bodies()
        self.ceilings()
        env = self.env()  # the defaults: batch-invariant, FLAME_TORCH_THREADS=1
        main = Server("service", "bench/serving_app.py", env, self.workdir, self.reg.predict_token)
        try:
            self.http_ceiling(main)
            peak = self.service(main)
            self.half_peak(main, peak)
            self.soak(main)
            self.stages(main)
            invariant_on = self.invariance_runs(main)  # right before the `false` server's runs
        finally:
            main.stop()
        self.batch_invariance(invariant_on)
        self.naive()
        self.overload()
        self.two_workers()
        self.verdict()
        start, end = ("/".join(f"{x:.1f}" for x in load) for load in (self.load, os.getloadavg()))
        self.notes.append(
            f"load average (1/5/15 min): {start} at the start, {end} at the end, on {os.cpu_count()} "
            "CPUs (above the CPU count: other work competed with this run)"
        )
        self.emit("Notes", "\n".join(f"- {n}" for n in self.notes))
        print(f"wrote {args.out} in {(time.perf_counter() - t0) / 60:.1f} min")

    def ceilings(self) -> None:
        rows = []
        threads = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)  # as the server runs (FLAME_TORCH_THREADS)
        try:
            for b in BATCHES:
                r = ceiling(self.reg.model, self.reg.samples, b, self.p["ceil"], self.args.device)
                raw, full, nat = r["raw"], r["full"], r["raw_natural"]
                self.forward_ceiling[b] = raw["samples_s"]
                self.validated_ceiling[b] = full["samples_s"]
                rows.append(
                    [
                        b,
                        raw["samples_s"],
                        raw["median_ms"],
                        full["samples_s"],
                        full["median_ms"],
                        nat["samples_s"],
                        raw["samples_s"] / nat["samples_s"],
                    ]
                )
        finally:
            torch.set_num_threads(threads)
        headers = [
            "batch",
            "forward samples/s",
            "forward median ms",
            "+validate+collate samples/s",
            "median ms",
            "natural padding: forward samples/s",
            "invariant / natural",
        ]
        self.emit(
            "a. Ceiling 1: in-process forward (mortality, cursor model, inference_mode)",
            f"As served: batch-invariant (fixed lengths, rows padded to 8), {self.torch_threads} torch "
            "thread(s) like the server. The last two columns give the invariance cost: the same forward "
            "with each batch padded to its longest sample.\n\n" + table(headers, rows),
        )

    def http_ceiling(self, server: Server) -> None:
        rows = []
        for route, label in ((f"/bench/empty/{TASK}", "empty"), (f"/bench/empty-auth/{TASK}", "empty + key")):
            for c in CONCURRENCY:
                r = self.closed(server, route, self.single, c)
                self.http_rows[(label, c)] = r
                rows.append([label, c, *load_cells(r, 1)])
        self.emit(
            "b. Ceiling 2: HTTP, an empty route on the service's stack (read, parse_json, constant answer)",
            "Same process and middleware as (c); `empty + key` adds the `predict` key check.\n\n"
            + table(["route", "concurrency", *LOAD_HEADERS], rows),
        )

    def service(self, server: Server) -> float:
        rows, self.service_rows = [], {}
        for bodies, n in ((self.single, 1), (self.batch, INSTANCES)):
            for c in CONCURRENCY:
                r = self.closed(server, f"/predict/{TASK}", bodies, c)
                self.service_rows[(n, c)] = r
                rows.append([n, c, *load_cells(r, n)])
        self.emit(
            f"c. The service: POST /predict/{TASK} (predict key, audit, metrics)",
            table(["instances/request", "concurrency", *LOAD_HEADERS], rows),
        )
        return max(r["rps"] for (n, _), r in self.service_rows.items() if n == 1)

    def half_peak(self, server: Server, peak: float) -> None:
        rate = peak / 2
        r = server.load(
            f"/predict/{TASK}", self.single, rate=f"{rate:.2f}", duration=self.p["open"], warmup=1
        )
        self.results["half_peak"] = r
        ratio = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        rows = [[f"{peak:.1f}", f"{rate:.1f}", r["rps"], r["p50_ms"], r["p99_ms"], f"{ratio:.1f}", errors(r)]]
        self.emit(
            "f. Open loop at half the peak requests/s of (c), single-instance requests",
            "Requests due at a fixed rate; latency counts from when each was due.\n\n"
            + table(
                [
                    "peak req/s (c)",
                    "offered req/s",
                    "achieved req/s",
                    "p50 ms",
                    "p99 ms",
                    "p99/p50",
                    "errors",
                ],
                rows,
            ),
        )

    def naive(self) -> None:
        env = self.env()
        naive = Server("naive", "bench/naive_serve.py", env, self.workdir, "unused")
        rows = []
        try:
            for c in CONCURRENCY:
                r = self.closed(naive, f"/predict/{TASK}", self.single, c)
                ours = self.service_rows[(1, c)]
                self.results[f"naive_{c}"] = r
                rows.append([c, *load_cells(r, 1), f"{ours['rps'] / r['rps']:.2f}"])
        finally:
            naive.stop()
        self.emit(
            "d. Naive anchor: bench/naive_serve.py (one validate + collate + forward per request)",
            "Same model version; no auth, audit, metrics or middleware. Last column: the service's "
            "requests/s (c) over the naive one's.\n\n"
            + table(["concurrency", *LOAD_HEADERS, "service / naive"], rows),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="untrained model, short runs")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, registry)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="flame-serving-"))
    try:
        Bench(args, workdir).run()
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
