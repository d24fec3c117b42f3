"""Multitask benchmark: single-task FLAME vs multitask FLAME vs a scikit-learn baseline per task.

    python bench/multitask.py --out bench/results/multitask.md

Data splits are fixed (data seed 0); the seeds vary model initialisation and batch order. Prints
the tables and writes them as Markdown. Numbers are test-split AUROC / AUPRC, mean +- sd.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flame_core.benchmarks import load_benchmark  # noqa: E402
from flame_core.collate import collate  # noqa: E402
from flame_core.config import FlameConfig  # noqa: E402
from flame_core.flatten import flatten_samples, label_array  # noqa: E402
from flame_core.metrics import task_metrics  # noqa: E402
from flame_core.report import markdown_table  # noqa: E402
from flame_core.training import TrainConfig, evaluate, fit, predict_batch  # noqa: E402


def sklearn_baseline(data, task: str, seed: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """HistGradientBoosting on hand-flattened features of the task's modalities."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    spec = data.specs.tasks[task]
    y_tr, m_tr = label_array(data.splits["train"], task)
    y_te, m_te = label_array(data.splits["test"], task)
    train = [s for s, m in zip(data.splits["train"], m_tr, strict=True) if m]
    test = [s for s, m in zip(data.splits["test"], m_te, strict=True) if m]
    x_tr = flatten_samples(train, data.specs, spec.modalities)
    x_te = flatten_samples(test, data.specs, spec.modalities)

    def model():  # type: ignore[no-untyped-def]
        return HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, early_stopping=True, random_state=seed
        )

    head = spec.head
    if head.type == "regression":
        reg = HistGradientBoostingRegressor(random_state=seed).fit(x_tr, y_tr)
        return task_metrics(head, reg.predict(x_te), y_te)
    if head.type == "multilabel":
        prob = np.column_stack(
            [
                model().fit(x_tr, y_tr[:, c]).predict_proba(x_te)[:, 1]
                if 0 < y_tr[:, c].sum() < len(y_tr)
                else np.full(len(x_te), y_tr[:, c].mean())
                for c in range(head.classes)
            ]
        )
        return task_metrics(head, prob, y_te)
    clf = model().fit(x_tr, y_tr)
    prob = clf.predict_proba(x_te)
    if head.type == "binary":
        return task_metrics(head, prob[:, 1], y_te)
    full = np.zeros((len(x_te), head.classes))
    full[:, clf.classes_.astype(int)] = prob
    return task_metrics(head, full, y_te)


def inference_rate(model, data, tasks) -> float:  # type: ignore[no-untyped-def]
    sub = data.specs.subset(tasks)
    batch = collate(data.splits["test"], sub, tasks=tasks, tokenizer=model.config.tokenizer())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        predict_batch(model, batch, sub, tasks, batch_size=256)
        times.append(time.perf_counter() - t0)
    return batch.size / statistics.median(times)


def ms(values: list[float]) -> str:
    vals = [v for v in values if not np.isnan(v)]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {sd:.3f}"


def run_benchmark(name: str, seeds: list[int], train_config: TrainConfig, model_config: FlameConfig) -> str:
    data = load_benchmark(name, seed=0)
    tasks = list(data.specs.tasks)
    res: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    speed: dict[str, list[float]] = defaultdict(list)
    t_start = time.perf_counter()
    for seed in seeds:
        cfg = TrainConfig(**{**train_config.__dict__, "seed": seed})
        model, result = fit(
            data.specs,
            data.splits["train"],
            data.splits["val"],
            model_config=model_config,
            train_config=cfg,
            tasks=tasks,
        )
        speed["train"].append(result.samples_per_s)
        speed["infer"].append(inference_rate(model, data, tasks))
        for task, m in evaluate(model, data.specs.subset(tasks), data.splits["test"], tasks).items():
            for k, v in m.items():
                res[(task, "multi", k)].append(v)
        for task in tasks:
            single, _ = fit(
                data.specs,
                data.splits["train"],
                data.splits["val"],
                model_config=model_config,
                train_config=cfg,
                tasks=[task],
            )
            for k, v in evaluate(single, data.specs.subset([task]), data.splits["test"], [task])[
                task
            ].items():
                res[(task, "single", k)].append(v)
            for k, v in sklearn_baseline(data, task, seed).items():
                res[(task, "sklearn", k)].append(v)
        print(f"  {name} seed {seed} done ({time.perf_counter() - t_start:.0f}s)", flush=True)

    headers = [
        "task",
        "type",
        "modalities",
        "achievable AUROC",
        "multitask FLAME AUROC",
        "single-task FLAME AUROC",
        "sklearn HGB AUROC",
        "multitask AUPRC",
        "single-task AUPRC",
        "sklearn AUPRC",
        "multitask acc",
        "single-task acc",
        "sklearn acc",
    ]
    rows = []
    for task in tasks:
        spec = data.specs.tasks[task]
        ach = data.achievable.get(task)
        rows.append(
            [task, spec.head.type, ", ".join(spec.modalities), "-" if ach is None else f"{ach:.3f}"]
            + [ms(res[(task, w, "auroc")]) for w in ("multi", "single", "sklearn")]
            + [ms(res[(task, w, "auprc")]) for w in ("multi", "single", "sklearn")]
            + [ms(res[(task, w, "accuracy")]) for w in ("multi", "single", "sklearn")]
        )
    n = {k: len(v) for k, v in data.splits.items()}
    lines = [
        f"## {name}",
        "",
        f"{data.description} Splits: {n}. Wall time for this benchmark: "
        f"{time.perf_counter() - t_start:.0f} s.",
        "",
        markdown_table(headers, rows),
        "",
        f"Multitask FLAME throughput on this machine: training {statistics.median(speed['train']):.0f} "
        f"samples/s (optimisation steps, batch {train_config.batch_size}), inference "
        f"{statistics.median(speed['infer']):.0f} samples/s (batch 256, eval mode); medians over seeds.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmarks", default="synthetic-icu,digits,support2,pbc2")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 lets two benchmark processes share 2 cores without OpenMP thrash",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    train_config = TrainConfig(
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, progress=False, device="cpu"
    )
    model_config = FlameConfig()
    header = [
        "# Multitask benchmark",
        "",
        f"Command: `python bench/multitask.py --benchmarks {args.benchmarks} --seeds {args.seeds} "
        f"--epochs {args.epochs}`. Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU. Test-split metrics, "
        f"mean ± sd over seeds {seeds} (model init and batch order; the data split is fixed). "
        f"Model config: `{model_config}`.",
        "",
        "Achievable AUROC (synthetic-icu) is the AUROC of the generator's true risk against the drawn "
        "labels on the test split: the ceiling for any model.",
        "",
    ]
    sections = []
    for name in args.benchmarks.split(","):
        print(f"running {name} ...", flush=True)
        section = run_benchmark(name.strip(), seeds, train_config, model_config)
        print(section, flush=True)
        sections.append(section)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text("\n".join(header + sections))


if __name__ == "__main__":
    main()
