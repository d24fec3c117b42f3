"""Continual-learning benchmark: every strategy on the same streams, plus cursor-inference latency.

    python bench/continual.py --out bench/results

Per stream: final average score, BWT, forgetting (max-based), stored parameters per stage, wall
time; for `flame`, the new tasks' scores before truncation, right after it and after the refit.
Stage 0 (multitask FLAME on the first stage) is trained once per stream and shared by every
strategy. Writes continual_<stream>.md/.json, PNG plots and continual_latency.md under --out;
`bench/continual_report.py` assembles them into continual.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flame_core.benchmarks import load_benchmark  # noqa: E402
from flame_core.config import FlameConfig  # noqa: E402
from flame_core.model import build_flame  # noqa: E402
from flame_core.report import markdown_table  # noqa: E402
from flame_core.strategies import STRATEGIES, build_strategy  # noqa: E402
from flame_core.stream import parse_stream, run_stream  # noqa: E402
from flame_core.training import TrainConfig, seed_everything, train  # noqa: E402

STREAMS = {
    "icu-shared-pool": (
        "synthetic-icu",
        "mortality;los;acuity;readmission",
        "every stage within the modality pool of stage 0",
    ),
    "icu-new-modality": (
        "synthetic-icu",
        "los;acuity;phenotype;readmission",
        "a new modality mid-stream (cxr, first used by acuity at stage 1), then new combinations",
    ),
    "icu-multitask-stages": (
        "synthetic-icu",
        "mortality,los;phenotype,acuity;readmission",
        "several tasks per stage",
    ),
    "digits-views": ("digits", "digit;parity;ge5", "views change between stages (quadrants new at stage 1)"),
    "support2": ("support2", "death_hosp;los;dzgroup", "real clinical data"),
}


def strategy_options(name: str, args) -> dict:  # type: ignore[no-untyped-def]
    if name == "flame":
        rank = args.rank if args.rank == "auto" else int(args.rank)
        return {"rank": rank, "energy": args.energy, "refit_epochs": args.refit_epochs}
    if name == "lora":
        return {"rank": 32}
    return {}


def pretrain(key: str, args):  # type: ignore[no-untyped-def]
    """The stream's data, stages, training config and its stage-0 model (shared by every strategy)."""
    bench, stream, _ = STREAMS[key]
    data = load_benchmark(bench, seed=0, n=args.n if bench == "synthetic-icu" else None)
    stages = parse_stream(stream)
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, progress=False, device="cpu", seed=0)
    seed_everything(0)
    first = data.specs.subset(stages[0])
    pretrained = build_flame(FlameConfig(), first)
    t0 = time.perf_counter()
    train(pretrained, first, data.splits["train"], data.splits["val"], cfg, tasks=stages[0])
    return data, stages, cfg, pretrained, time.perf_counter() - t0


def table_row(d: dict) -> list:
    """One strategy's row from its dump (`StreamResult.to_dict()` plus `wall_seconds`)."""
    s, stages = d["summary"], d["stages"]
    later = [(i, t) for i in range(1, len(stages)) for t in stages[i]]
    drop = [d["before_end"][i][t] - d["matrix"][i][t] for i, t in later]
    cut = [d["before_end"][i][t] - d["at_truncation"][i][t] for i, t in later]
    return [
        d["strategy"],
        s["final_average"],
        s["bwt"],
        s["forgetting"],
        s["max_forgetting"],
        ", ".join(f"{p / 1e3:.1f}k" for p in d["stage_params"][1:]),
        f"{d['serving_params'][-1] / 1e3:.0f}k",
        max(cut) if cut else 0.0,
        max(drop) if drop else 0.0,
        f"{d['wall_seconds']:.0f}",
    ]


def run_one_stream(key: str, strategies: list[str], args, results_dir: Path) -> tuple[str, list[dict]]:  # type: ignore[no-untyped-def]
    """Run `strategies` on the stream; with `args.merge`, replace only their entries in the stream's
    existing JSON (stage 0 is seeded, so it is the same model in every run)."""
    bench, stream, what = STREAMS[key]
    data, stages, cfg, pretrained, pretrain_s = pretrain(key, args)
    path = results_dir / f"continual_{key}.json"
    kept = json.loads(path.read_text()) if args.merge and path.exists() else []
    fresh = {}
    for name in strategies:
        t0 = time.perf_counter()
        strategy = build_strategy(name, **strategy_options(name, args))
        res = run_stream(strategy, data, stages, train_config=cfg, pretrained=pretrained)
        if name == "flame" and key == args.plot_stream:
            plot_flame(strategy.module, data, key, results_dir)
        dump = res.to_dict()
        dump["wall_seconds"] = time.perf_counter() - t0 + pretrain_s
        fresh[name] = dump
        print(f"  {key}/{name}: {dump['summary']} ({dump['wall_seconds']:.0f}s)", flush=True)
    by_name = {d["strategy"]: d for d in kept} | fresh
    dumps = [by_name[n] for n in STRATEGIES if n in by_name]
    rows = [table_row(d) for d in dumps]
    path.write_text(json.dumps(dumps, indent=2))
    metric = sorted(set(dumps[0]["metric"].values()))
    headers = [
        "strategy",
        f"final avg ({'/'.join(metric)})",
        "BWT",
        "forgetting",
        "max forgetting",
        "params per later stage",
        "params to serve all",
        "max drop at truncation",
        "max drop, final (after refit)",
        "wall s",
    ]
    from flame_core.plots import plot_trajectories

    plot_trajectories(dumps, results_dir / f"trajectories_{key}.png")
    lines = [
        f"### {key}: `{stream}` on {bench}",
        "",
        f"{what}. Splits: { {k: len(v) for k, v in data.splits.items()} }.",
        "",
        markdown_table(headers, rows),
        "",
    ]
    lines += ["Score matrix a[t][i] (rows: after stage t):", ""]
    tasks = [t for s in stages for t in s]
    for d in dumps:
        mrows = [
            [f"{d['strategy']} after {i}"] + [m.get(t, float("nan")) for t in tasks]
            for i, m in enumerate(d["matrix"])
        ]
        lines += [markdown_table(["", *tasks], mrows), ""]
    lines += [f"![trajectories](trajectories_{key}.png)", ""]
    return "\n".join(lines), dumps


def plot_flame(cl, data, key: str, out: Path) -> None:  # type: ignore[no-untyped-def]
    """Spectra, routing fingerprints and task affinity of the final FLAME model of one stream."""
    from flame_core.analysis import expert_spectra, routing_fingerprints, task_affinity
    from flame_core.collate import collate
    from flame_core.plots import plot_affinity, plot_routing, plot_spectra

    tasks = list(cl.cursor)
    batch = collate(data.splits["test"], cl.specs, tasks=tasks, tokenizer=cl.config.tokenizer())
    last = [t for t in tasks if cl.cursor[t] == max(cl.cursor.values())]
    spectra = expert_spectra(cl.model, cl, batch, last)
    plot_spectra(spectra, out / f"spectra_{key}.png", title=f"{key}: expert spectra at the last cursor")
    fps = routing_fingerprints(cl, batch, tasks)
    plot_routing(fps, out / f"routing_{key}.png")
    aff = task_affinity(fps)
    plot_affinity(aff.tasks, aff.matrix, out / f"affinity_{key}.png")
    ranks = {n: r.ranks() for n, r in spectra.items()}
    (out / f"analysis_{key}.json").write_text(
        json.dumps(
            {"ranks": ranks, "affinity_pairs": [p._asdict() for p in aff.pairs]}, indent=2, default=float
        )
    )


@torch.no_grad()
def latency_table(stages: int = 10, repeats: int = 30) -> str:
    """Forward latency of a task at cursor 1 vs cursor `stages` (each cursor's effective weights
    materialised once into a frozen copy), and without the cache (W_0 + sum B_s A_s rebuilt per call)."""
    from flame_core.collate import collate
    from flame_core.continual import ContinualFlame
    from flame_core.specs import SpecSet

    data = load_benchmark("synthetic-icu", seed=0, n=400)
    base = data.specs.subset(["mortality"])
    seed_everything(0)
    cl = ContinualFlame(build_flame(FlameConfig(), base))
    for s in range(1, stages + 1):
        spec = data.specs.tasks["los"]
        renamed = SpecSet(
            modalities=dict(base.modalities),
            tasks={f"los{s}": type(spec)(f"los{s}", spec.modalities, spec.head)},
        )
        cl.begin_stage(renamed)
        for p in cl.live_deltas.values():
            p.normal_(0, 1e-3)
        cl.end_stage(rank=8)
    cl.eval()
    batch = collate(data.splits["test"][:64], cl.specs, tasks=["los1"], tokenizer=cl.config.tokenizer())

    def timed(cached: bool) -> tuple[float, float]:
        """Alternate the two cursors call by call so machine noise hits both alike."""
        times: dict[str, list[float]] = {"los1": [], f"los{stages}": []}
        for _ in range(repeats):
            for task, bucket in times.items():
                if not cached:
                    cl.clear_cache()
                t0 = time.perf_counter()
                cl(batch, [task])
                bucket.append(time.perf_counter() - t0)
        return statistics.median(times["los1"]) * 1e3, statistics.median(times[f"los{stages}"]) * 1e3

    timed(True)  # warm the caches and the allocator
    one, many = timed(True)
    one_nc, many_nc = timed(False)
    rows = [
        ["cached effective weights (FLAME host)", one, many, many / one],
        ["re-materialised every call", one_nc, many_nc, many_nc / one_nc],
    ]
    return markdown_table(
        ["forward, batch 64, 1 thread (ms, median)", "cursor 1", f"cursor {stages}", "ratio"], rows
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000, help="synthetic-icu patients")
    ap.add_argument("--rank", default="auto")
    ap.add_argument("--energy", type=float, default=0.99)
    ap.add_argument("--refit-epochs", type=int, default=3, help="flame: refit after truncation")
    ap.add_argument("--no-latency", action="store_true", help="skip the cursor-latency measurement")
    ap.add_argument("--merge", action="store_true", help="replace only these strategies in existing JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot-stream", default="icu-new-modality", help="stream whose FLAME model is analysed")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    strategies = args.strategies.split(",")
    for key in filter(None, args.streams.split(",")):
        print(f"stream {key} ...", flush=True)
        text, _ = run_one_stream(key, strategies, args, args.out)
        (args.out / f"continual_{key}.md").write_text(text)
    if not args.no_latency:
        table = latency_table()
        print(table, flush=True)
        (args.out / "continual_latency.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
