"""`flame data ...`: export benchmark splits as JSONL in the wire format, with their task-spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Export benchmark data as JSONL samples and task-specs.")


@app.command("export")
def export(
    benchmark: Annotated[str, typer.Option(help="synthetic-icu | digits | support2 | pbc2")],
    out: Annotated[Path, typer.Option(help="JSONL file to write")],
    split: Annotated[str, typer.Option(help="train | val | test")] = "train",
    spec_out: Annotated[Path | None, typer.Option(help="also write the task-spec JSON here")] = None,
    seed: Annotated[int, typer.Option(help="generator/split seed")] = 0,
    n: Annotated[
        int | None,
        typer.Option(help="patients in the whole benchmark (synthetic-icu), before the train/val/test split"),
    ] = None,
) -> None:
    """Write one split of a benchmark as JSON Lines (one sample per line, labels per task)."""
    from flame_core.benchmarks import load_benchmark
    from flame_core.jsonl import write_jsonl

    try:
        data = load_benchmark(benchmark, seed=seed, n=n)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--benchmark") from None
    if split not in data.splits:
        raise typer.BadParameter(
            f"unknown split {split!r}; choose from {sorted(data.splits)}", param_hint="--split"
        )
    write_jsonl(out, data.splits[split])
    total = sum(len(v) for v in data.splits.values())
    shares = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    typer.echo(
        f"wrote {len(data.splits[split])} samples of {benchmark}/{split} to {out} "
        f"(the {split} split of {total} patients: {shares})"
    )
    if spec_out is not None:
        spec_out.write_text(json.dumps(data.specs.to_dict(), indent=2))
        typer.echo(f"wrote task-spec ({', '.join(data.specs.tasks)}) to {spec_out}")
