"""A/B timing of the eval forward: `Flame.forward` as of REV (default 9388f1b, which computed the
balance and interaction losses on every call) against the working tree, on the demo-sized model
(untrained), one torch thread, batch 1 and 32. Both share the same modules; rounds alternate so CPU
contention hits both alike. Prints medians and minima.

    PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE python bench/eval_forward.py [--before REV]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import types

import torch

from flame_core.benchmarks import load_benchmark
from flame_core.collate import collate
from service.cli.serve import build_demo_model


def model_at(rev: str) -> types.ModuleType:
    src = subprocess.run(
        ["git", "show", f"{rev}:flame_core/model.py"], capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("model_before")
    exec(compile(src, f"{rev}:flame_core/model.py", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="9388f1b")
    parser.add_argument("--rounds", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cl, _ = build_demo_model(epochs=0)
    after = cl.model.eval()
    before = model_at(args.before).Flame(after.config, after.specs, after.encoders, after.blocks, after.heads)
    before.eval()
    data = list(load_benchmark("synthetic-icu", n=200, seed=0).splits["val"])
    tasks = list(after.specs.tasks)
    for bsz in (1, 32):
        batch = collate(data[:bsz], after.specs, tasks=tasks, tokenizer=after.config.tokenizer())
        times: dict[str, list[float]] = {"before": [], "after": []}
        with torch.inference_mode():
            outs = before(batch, tasks).outputs, after(batch, tasks).outputs
            assert all(torch.equal(outs[0][t], outs[1][t]) for t in tasks), "the outputs differ"
            for rnd in range(args.rounds):
                order = [("before", before), ("after", after)]
                for name, model in order if rnd % 2 else order[::-1]:
                    for _ in range(10):
                        t0 = time.perf_counter()
                        model(batch, tasks)
                        times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        low = {k: min(v) * 1e3 for k, v in times.items()}
        saved = {k: 100 * (1 - d["after"] / d["before"]) for k, d in (("median", med), ("min", low))}
        print(
            f"batch {bsz:2d}: "
            f"median {med['before']:.3f} -> {med['after']:.3f} ms ({saved['median']:.1f}% less); "
            f"min {low['before']:.3f} -> {low['after']:.3f} ms ({saved['min']:.1f}% less)"
        )


if __name__ == "__main__":
    main()
