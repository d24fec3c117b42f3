"""`flame analyze spectra|routing|affinity DIR --out PLOTS`: the paper's spectral and routing analyses
of a saved checkpoint, as PNGs plus a JSON of the numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Spectra, routing fingerprints and task affinity of a saved FLAME checkpoint.",
)

Checkpoint = Annotated[Path, typer.Argument(help="checkpoint directory (`flame train` or a continual run)")]
Out = Annotated[Path, typer.Option(help="directory for the PNGs and JSON")]
Benchmark = Annotated[str | None, typer.Option(help="use this benchmark's test split as data")]
Data = Annotated[Path | None, typer.Option(help="JSONL samples (labels say which tasks to analyse)")]
Limit = Annotated[int, typer.Option(help="use at most this many samples")]
Size = Annotated[int | None, typer.Option(help="patients to generate (with --benchmark synthetic-icu)")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _load_model(directory: Path) -> tuple[Any, Any]:
    """(module to run, its underlying `Flame`): a `ContinualFlame` for a continual checkpoint."""
    from flame_core.checkpoint import CONFIG, load_checkpoint, load_continual

    if not directory.is_dir():
        raise _fail(f"{directory}: checkpoint directory not found")
    try:
        meta = json.loads((directory / CONFIG).read_text())
        if isinstance(meta, dict) and meta.get("kind") == "continual":
            cl, _ = load_continual(directory)
            return cl, cl.model
        model, _, _ = load_checkpoint(directory)
        return model, model
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _fail(f"{directory}: not a loadable FLAME checkpoint: {e}") from None


def _load_samples(specs, benchmark: str | None, data: Path | None, limit: int, n: int | None) -> list[dict]:  # type: ignore[no-untyped-def]
    from flame_core.jsonl import read_jsonl
    from flame_core.validation import SampleInvalid, validate_dataset

    if (benchmark is None) == (data is None):
        raise _fail("give either --benchmark NAME or --data FILE.jsonl")
    if limit < 1:
        raise _fail(f"--limit must be >= 1, got {limit}")
    if benchmark is not None:
        from flame_core.benchmarks import load_benchmark

        try:
            samples = load_benchmark(benchmark, n=n).splits["test"]
        except ValueError as e:
            raise _fail(str(e)) from None
        return samples[:limit]
    assert data is not None
    if not data.is_file():
        raise _fail(f"--data {data}: file not found")
    try:
        samples = read_jsonl(data)[:limit]
        for s in samples:  # labels of tasks the model lacks are not an error here, just unused
            if isinstance(s, dict) and isinstance(s.get("labels"), dict):
                s["labels"] = {t: v for t, v in s["labels"].items() if t in specs.tasks}
        return validate_dataset(samples, specs, None, require_label=False)
    except (SampleInvalid, ValueError) as e:
        raise _fail(f"--data {data}: {e}") from None


def _prepare(directory: Path, benchmark: str | None, data: Path | None, limit: int, n: int | None):  # type: ignore[no-untyped-def]
    """Load the model and data, pick the labelled tasks the model has, and collate them once."""
    from flame_core.collate import collate
    from flame_core.training import labelled_tasks

    module, flame = _load_model(directory)
    specs = module.specs
    samples = _load_samples(specs, benchmark, data, limit, n)
    tasks = labelled_tasks(samples, specs)
    if not tasks:
        raise _fail(f"the data has no labels for any task of the model ({sorted(specs.tasks)})")
    try:
        batch = collate(samples, specs, tasks=tasks, tokenizer=module.config.tokenizer())
    except ValueError as e:
        raise _fail(f"cannot collate the data: {e}") from None
    return module, flame, batch, tasks


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    return path


@app.command("spectra")
def spectra_command(
    checkpoint: Checkpoint,
    out: Out,
    benchmark: Benchmark = None,
    data: Data = None,
    limit: Limit = 2000,
    n: Size = None,
) -> None:
    """Input, weight-only and data-aware spectra of every expert weight (paper App. D.4)."""
    from flame_core.analysis import TARGETS, expert_spectra
    from flame_core.plots import plot_spectra

    module, flame, batch, tasks = _prepare(checkpoint, benchmark, data, limit, n)
    results = expert_spectra(flame, module, batch, tasks)
    png = plot_spectra(results, out / "spectra.png", title=f"Expert spectra on {', '.join(tasks)}")
    doc = {"tasks": tasks, "samples": batch.size, "spectra": [r.to_dict() for r in results.values()]}
    js = _write_json(out / "spectra.json", doc)
    targets = "/".join(f"{t:g}" for t in TARGETS)
    for r in results.values():
        if r.routed:
            ranks = {lens: "/".join(str(v) for v in rs.values()) for lens, rs in r.ranks().items()}
            typer.echo(
                f"{r.name}: rank at {targets} energy: " + ", ".join(f"{k} {v}" for k, v in ranks.items())
            )
        else:
            typer.echo(f"{r.name}: never routed")
    typer.echo(f"wrote {png} and {js}")


@app.command("routing")
def routing_command(
    checkpoint: Checkpoint,
    out: Out,
    benchmark: Benchmark = None,
    data: Data = None,
    limit: Limit = 2000,
    n: Size = None,
) -> None:
    """Per task and modality: activation ratio and mean gate of every expert (paper App. D.5)."""
    from flame_core.analysis import routing_fingerprints
    from flame_core.plots import plot_routing

    module, _, batch, tasks = _prepare(checkpoint, benchmark, data, limit, n)
    fps = routing_fingerprints(module, batch, tasks)
    if not any(fps.values()):
        raise _fail("no sample presents any modality of the analysed tasks")
    png = plot_routing(fps, out / "routing.png")
    doc = {t: {m: fp.to_dict() for m, fp in by_mod.items()} for t, by_mod in fps.items()}
    js = _write_json(out / "routing.json", {"tasks": tasks, "fingerprints": doc})
    typer.echo(f"wrote {png} and {js}")


@app.command("affinity")
def affinity_command(
    checkpoint: Checkpoint,
    out: Out,
    benchmark: Benchmark = None,
    data: Data = None,
    limit: Limit = 2000,
    n: Size = None,
) -> None:
    """Task affinity from routing-fingerprint overlap, and the task pairs most worth training together."""
    from flame_core.analysis import routing_fingerprints, task_affinity
    from flame_core.plots import plot_affinity

    module, _, batch, tasks = _prepare(checkpoint, benchmark, data, limit, n)
    aff = task_affinity(routing_fingerprints(module, batch, tasks))
    if not aff.tasks:
        raise _fail("no sample presents any modality of the analysed tasks")
    png = plot_affinity(aff.tasks, aff.matrix, out / "affinity.png")
    pairs = [
        {"a": p.a, "b": p.b, "affinity": p.affinity, "shared_modalities": list(p.shared)} for p in aff.pairs
    ]
    js = _write_json(
        out / "affinity.json", {"tasks": aff.tasks, "matrix": aff.matrix.tolist(), "pairs": pairs}
    )
    if aff.pairs:
        typer.echo("task pairs by routing overlap (highest first: candidates to train together):")
        for p in aff.pairs:
            typer.echo(f"  {p.a} + {p.b}: {p.affinity:.3f}")
    typer.echo(f"wrote {png} and {js}")
