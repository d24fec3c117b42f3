"""`flame continual`: run a stream of stages with one strategy; write the score matrix and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from service.cli.train import _fail, _load_user_data


def continual_command(
    out: Annotated[Path, typer.Option(help="directory for matrix.json, summary.json (and the checkpoint)")],
    stream: Annotated[
        str,
        typer.Option(help="stages split by ';', tasks by ',', e.g. \"mortality;los,acuity;phenotype\""),
    ],
    strategy: Annotated[
        str, typer.Option(help="flame | finetune | ewc | lora | expand | pas | cram")
    ] = "flame",
    benchmark: Annotated[str | None, typer.Option(help="synthetic-icu | digits | support2 | pbc2")] = None,
    data: Annotated[
        Path | None, typer.Option(help="training JSONL with labels for the stream's tasks")
    ] = None,
    val: Annotated[Path | None, typer.Option(help="validation JSONL (with --data)")] = None,
    test: Annotated[Path | None, typer.Option(help="test JSONL (with --data): scores the matrix")] = None,
    task_spec: Annotated[
        Path | None, typer.Option(help="task-spec JSON for every task of the stream")
    ] = None,
    rank: Annotated[str, typer.Option(help="flame: an int or 'auto'; lora: the adapter rank")] = "auto",
    energy: Annotated[float, typer.Option(help="flame --rank auto: share of functional energy kept")] = 0.99,
    rank_budget: Annotated[int | None, typer.Option(help="flame: cumulative rank allowed per weight")] = None,
    refit_epochs: Annotated[
        int, typer.Option(help="flame: epochs refitting the truncated factors and heads (0: none)")
    ] = 3,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    patience: int = 4,
    seed: int = 0,
    device: str = "auto",
    n: Annotated[int | None, typer.Option(help="patients to generate (synthetic-icu)")] = None,
) -> None:
    """Stage 0 pretrains multitask FLAME on the first stage; each later stage is learned by STRATEGY.
    Prints the per-stage scores; writes DIR/matrix.json and DIR/summary.json."""
    from flame_core.benchmarks.base import BenchmarkData
    from flame_core.checkpoint import save_continual
    from flame_core.continual import ContinualFlame
    from flame_core.ranges import record_training_ranges
    from flame_core.report import text_table
    from flame_core.specs import SpecError, SpecSet
    from flame_core.strategies import build_strategy
    from flame_core.stream import parse_stream, run_stream
    from flame_core.task_stats import record_task_statistics
    from flame_core.training import TrainConfig
    from service.runtime import apply_training_threads

    apply_training_threads()
    try:
        stages = parse_stream(stream)
        options: dict = {}
        if strategy == "flame":
            options.update(
                rank=rank if rank == "auto" else int(rank),
                energy=energy,
                rank_budget=rank_budget,
                refit_epochs=refit_epochs,
            )
        if strategy == "lora":
            options["rank"] = 32 if rank == "auto" else int(rank)
        strat = build_strategy(strategy, **options)
        train_config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            patience=patience,
            seed=seed,
            device=device,
            progress=False,
        )
    except ValueError as e:
        raise _fail(str(e)) from None
    tasks = [t for s in stages for t in s]
    if (benchmark is None) == (data is None):
        raise _fail("give either --benchmark NAME or --data/--val/--test with --task-spec")
    if benchmark is not None:
        from flame_core.benchmarks import load_benchmark

        try:
            bench = load_benchmark(benchmark, seed=0, n=n)
        except ValueError as e:
            raise _fail(str(e)) from None
    else:
        if data is None or val is None or test is None or task_spec is None:
            raise _fail("--data needs --val, --test and --task-spec")
        try:
            specs = SpecSet.load(task_spec)
            specs.subset(tasks)
        except (SpecError, OSError) as e:
            raise _fail(f"--task-spec {task_spec}: {e}") from None
        splits = {
            k: _load_user_data(p, specs, None, f"--{k}")
            for k, p in (("train", data), ("val", val), ("test", test))
        }
        bench = BenchmarkData(name=str(data), specs=specs, splits=splits)
    try:
        result = run_stream(strat, bench, stages, train_config=train_config)
    except ValueError as e:
        raise _fail(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(result.to_dict(), indent=2))
    summary = {
        "strategy": strategy,
        "stream": stream,
        "benchmark": benchmark or str(data),
        **result.summary(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if isinstance(strat.module, ContinualFlame):
        cl = strat.module
        pretrained = [t for t in cl.cursor if t not in cl.training_ranges]  # later stages recorded theirs
        record_training_ranges(cl.training_ranges, bench.splits["train"], cl.specs, pretrained)
        record_task_statistics(cl, bench.splits["train"], bench.splits["val"], list(cl.cursor))
        save_continual(out / "model", cl, extra={"summary": summary})
    rows = [
        [f"after stage {i}"] + [m.get(t, float("nan")) for t in tasks] + [p]
        for i, (m, p) in enumerate(zip(result.matrix, result.stage_params, strict=True))
    ]
    typer.echo(text_table(["", *tasks, "params"], rows))
    typer.echo(json.dumps(result.summary(), indent=2))
    typer.echo(f"wrote matrix.json and summary.json to {out}")
