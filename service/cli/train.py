"""`flame train` and `flame evaluate`: multitask FLAME on a benchmark or on your own JSONL data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

METRIC_KEYS = ("auroc", "auprc", "f1", "accuracy", "mse")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _load_user_data(path: Path, specs, tasks, option: str, *, drop_other_labels: bool = False) -> list[dict]:  # type: ignore[no-untyped-def]
    """Read and validate a JSONL file; errors name the 1-based line of the file, as the API does.
    `drop_other_labels` ignores labels of tasks the model lacks (evaluating a model of some tasks on
    a file labelled for more)."""
    from flame_core.jsonl import iter_jsonl_numbered
    from flame_core.validation import SampleInvalid, validate_sample

    if not path.is_file():
        raise _fail(f"{option} {path}: file not found")
    out = []
    try:
        for line, sample in iter_jsonl_numbered(path):
            if drop_other_labels and isinstance(sample.get("labels"), dict):
                sample["labels"] = {t: v for t, v in sample["labels"].items() if t in specs.tasks}
            try:
                out.append(validate_sample(sample, specs, tasks))
            except SampleInvalid as e:
                e.sample = None  # the line says where
                raise _fail(f"{option} {path}: line {line}: {e}") from None
    except ValueError as e:
        raise _fail(f"{option} {path}: {e}") from None
    return out


def _print_metrics(title: str, metrics: dict[str, dict[str, float]]) -> None:
    from flame_core.report import metrics_rows, text_table

    keys = [k for k in METRIC_KEYS if any(k in m for m in metrics.values())]
    typer.echo(f"\n{title}")
    typer.echo(text_table(["task", *keys], metrics_rows(metrics, keys)))


def train_command(
    out: Annotated[Path, typer.Option(help="directory for the checkpoint and metrics.json")],
    benchmark: Annotated[str | None, typer.Option(help="synthetic-icu | digits | support2 | pbc2")] = None,
    tasks: Annotated[str | None, typer.Option(help="comma-separated task names (default: all)")] = None,
    data: Annotated[Path | None, typer.Option(help="training JSONL (bring your own data)")] = None,
    val: Annotated[Path | None, typer.Option(help="validation JSONL (with --data)")] = None,
    test: Annotated[Path | None, typer.Option(help="optional test JSONL (with --data)")] = None,
    task_spec: Annotated[Path | None, typer.Option(help="task-spec JSON (with --data)")] = None,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    patience: int = 5,
    seed: int = 0,
    device: str = "auto",
    d_model: int = 64,
    n_experts: int = 8,
    top_k: int = 2,
    gating: str = "laplace",
    n: Annotated[int | None, typer.Option(help="patients to generate (synthetic-icu)")] = None,
) -> None:
    """Train multitask FLAME; print per-task metrics and write DIR/metrics.json and a checkpoint."""
    from flame_core.checkpoint import save_checkpoint
    from flame_core.config import FlameConfig
    from flame_core.continual import ContinualFlame
    from flame_core.ranges import record_training_ranges
    from flame_core.specs import SpecError, SpecSet
    from flame_core.task_stats import record_task_statistics
    from flame_core.training import TrainConfig, evaluate, fit, labelled_tasks
    from service.runtime import apply_training_threads

    apply_training_threads()
    try:
        model_config = FlameConfig(d_model=d_model, n_experts=n_experts, top_k=top_k, gating=gating)
        train_config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            patience=patience,
            seed=seed,
            device=device,
        )
    except ValueError as e:
        raise _fail(str(e)) from None
    wanted = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    if (benchmark is None) == (data is None):
        raise _fail("give either --benchmark NAME or --data FILE --val FILE --task-spec FILE")
    if benchmark is not None:
        from flame_core.benchmarks import load_benchmark

        try:
            bench = load_benchmark(benchmark, seed=seed, n=n)
        except ValueError as e:
            raise _fail(str(e)) from None
        specs = bench.specs
        train_s, val_s, test_s = bench.splits["train"], bench.splits["val"], bench.splits.get("test")
    else:
        if data is None or val is None or task_spec is None:
            raise _fail("--data needs --val and --task-spec")
        try:
            specs = SpecSet.load(task_spec)
        except (SpecError, OSError) as e:
            raise _fail(f"--task-spec {task_spec}: {e}") from None
        train_s = _load_user_data(data, specs, wanted, "--data")
        val_s = _load_user_data(val, specs, wanted, "--val")
        test_s = _load_user_data(test, specs, wanted, "--test") if test else None
    try:
        chosen = wanted or labelled_tasks(train_s, specs)
        specs.subset(chosen)
        model, result = fit(
            specs, train_s, val_s, model_config=model_config, train_config=train_config, tasks=chosen
        )
    except (ValueError, SpecError) as e:
        raise _fail(str(e)) from None
    sub = specs.subset(chosen)
    report: dict[str, Any] = {
        "tasks": chosen,
        "best_epoch": result.best_epoch,
        "val": result.val_metrics,
        "train_seconds": result.seconds,
        "train_samples_per_s": result.samples_per_s,
    }
    _print_metrics(f"validation (best epoch {result.best_epoch})", result.val_metrics)
    if test_s:
        report["test"] = evaluate(model.cpu(), sub, test_s, chosen)
        _print_metrics("test", report["test"])
    # the observed range of each input feature, per task: a served model names values outside them
    ranges: dict[str, dict] = {}
    record_training_ranges(ranges, train_s, sub, chosen)
    stats = ContinualFlame(model.cpu().eval())  # calibration on validation, summaries on training data
    record_task_statistics(stats, train_s, val_s, chosen)
    extra = {
        "train": report,
        "training_ranges": ranges,
        "calibration": stats.calibration,
        "shift": stats.shift,
    }
    save_checkpoint(out, model, sub, extra=extra)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    typer.echo(f"\nwrote checkpoint and metrics.json to {out}")


def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="directory written by `flame train`")],
    data: Annotated[Path, typer.Option(help="labelled JSONL to evaluate on")],
    out: Annotated[Path | None, typer.Option(help="write the metrics JSON here")] = None,
) -> None:
    """Evaluate a trained checkpoint on labelled JSONL data; print per-task metrics."""
    from flame_core.checkpoint import load_checkpoint
    from flame_core.training import evaluate, labelled_tasks
    from service.runtime import apply_training_threads

    apply_training_threads()
    try:
        model, specs, _ = load_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    samples = _load_user_data(data, specs, None, "--data", drop_other_labels=True)
    tasks = labelled_tasks(samples, specs)
    if not tasks:
        raise _fail(f"--data {data}: no sample has a label for any of {sorted(specs.tasks)}")
    metrics = evaluate(model, specs, samples, tasks)
    _print_metrics(f"{data}", metrics)
    if out is not None:
        out.write_text(json.dumps(metrics, indent=2))
