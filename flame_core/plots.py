"""PNG figures for the analyses (`flame_core.analysis`) and continual streams (`flame_core.stream`).

matplotlib is imported inside each function with the non-interactive Agg backend, so importing
flame_core never pulls in a GUI toolkit and plots render on headless servers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flame_core.analysis import LENSES, Fingerprint, SpectrumResult
from flame_core.naming import short_name

LENS_STYLE = {
    "input": (r"input spectrum (eigenvalues of $C$)", "tab:green"),
    "weight": (r"weight-only ($\sigma_i^2$ of $W$)", "tab:blue"),
    "data": (r"data-aware ($W C W^T$, Eq. 2)", "tab:orange"),
}


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: str | Path) -> Path:  # type: ignore[no-untyped-def]
    plt = _pyplot()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_spectra(results: Mapping[str, SpectrumResult], out_png: str | Path, title: str = "") -> Path:
    """One small panel per expert weight: cumulative energy against rank under the three lenses, with
    the 0.9 and 0.99 thresholds dashed (the paper's App. D.4 figures)."""
    if not results:
        raise ValueError("plot_spectra: no spectra to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    items = list(results.values())
    ncols = min(len(items), 6)
    nrows = math.ceil(len(items) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.4 * nrows), squeeze=False)
    for ax in axes.flat[len(items) :]:
        ax.axis("off")
    for ax, res in zip(axes.flat, items, strict=False):
        for lens in LENSES:
            if lens not in res.energies:
                continue
            label, color = LENS_STYLE[lens]
            cum = res.cumulative(lens)
            ax.plot(np.arange(1, len(cum) + 1), cum, color=color, lw=1.6, label=label)
        for level in (0.9, 0.99):
            ax.axhline(level, color="tab:red", ls="--", lw=0.8)
        routed = f"{res.rows} rows" if res.routed else "never routed"
        ax.set_title(f"{short_name(res.name)} ({routed})", fontsize=9)
        ax.set_ylim(0.0, 1.03)
        ax.set_yticks([0.0, 0.5, 1.0])
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("rank", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("cumulative energy", fontsize=8)
    handles = [
        plt.Line2D([], [], color=c, lw=1.6, label=lab) for lab, c in (LENS_STYLE[x] for x in LENSES)
    ] + [plt.Line2D([], [], color="tab:red", ls="--", lw=0.8, label="0.9 / 0.99")]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=9, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "Expert spectra: cumulative energy by rank", y=1.04, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, out_png)


def _annotate(ax, values: np.ndarray, fmt: str = "{:.2f}", size: float = 7) -> None:  # type: ignore[no-untyped-def]
    rows, cols = values.shape
    if rows * cols > 400:
        return
    for i in range(rows):
        for j in range(cols):
            v = values[i, j]
            if np.isfinite(v):
                color = "white" if v < 0.6 else "black"  # readable on the dark end of the colormaps
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=size, color=color)


def plot_routing(fingerprints: Mapping[str, Mapping[str, Fingerprint]], out_png: str | Path) -> Path:
    """One heatmap per modality: rows are tasks, columns experts, cells the activation ratio (share of
    the task's samples with the expert among their top-k); blank where a task does not use the
    modality. Overlapping rows are tasks that share experts (the paper's App. D.5 panels)."""
    tasks = [t for t, fps in fingerprints.items() if fps]
    mods = list(dict.fromkeys(m for t in tasks for m in fingerprints[t]))
    if not mods:
        raise ValueError("plot_routing: no fingerprints to plot")
    plt = _pyplot()
    n_exp = len(next(iter(fingerprints[tasks[0]].values())).activation)
    fig, axes = plt.subplots(
        1, len(mods), figsize=(1.5 + 0.6 * n_exp * len(mods), 1.6 + 0.45 * len(tasks)), squeeze=False
    )
    image = None
    for ax, m in zip(axes[0], mods, strict=True):
        grid = np.full((len(tasks), n_exp), np.nan)
        for i, t in enumerate(tasks):
            if m in fingerprints[t]:
                grid[i] = fingerprints[t][m].activation
        ax.set_facecolor("0.85")  # grey: the task does not use this modality
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        _annotate(ax, grid)
        ax.set_title(m, fontsize=10)
        ax.set_xticks(range(n_exp), [str(e) for e in range(n_exp)], fontsize=8)
        ax.set_yticks(range(len(tasks)), tasks if ax is axes[0, 0] else [""] * len(tasks), fontsize=9)
        ax.set_xlabel("expert", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), label="activation ratio", shrink=0.9)
    fig.suptitle("Routing fingerprints: activation ratio per expert (grey: modality unused)", y=1.08)
    return _save(fig, out_png)


def plot_affinity(tasks: Sequence[str], matrix: np.ndarray, out_png: str | Path) -> Path:
    """Annotated task x task heatmap of routing-fingerprint affinity (the paper's Fig. 6 analogue)."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(tasks), len(tasks)) or not tasks:
        raise ValueError(f"plot_affinity: matrix shape {matrix.shape} does not match {len(tasks)} tasks")
    plt = _pyplot()
    size = 2.5 + 0.6 * len(tasks)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma")
    _annotate(ax, matrix, size=9 if len(tasks) <= 8 else 7)
    ax.set_xticks(range(len(tasks)), list(tasks), rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(len(tasks)), list(tasks), fontsize=9)
    fig.colorbar(image, ax=ax, label="routing overlap (1 = identical)", shrink=0.85)
    ax.set_title("Task affinity from routing fingerprints", fontsize=11)
    return _save(fig, out_png)


def plot_trajectories(stream_results: Sequence[Any], out_png: str | Path) -> Path:
    """Per task, each strategy's score after every stage from the task's introduction on; last panel,
    each strategy's cumulative stored parameters (solid) and serving parameters (dotted) by stage.
    Takes `StreamResult`s or their `to_dict()` form (strategy, stages, matrix, stage_params, ...)."""
    runs = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in stream_results]
    if not runs:
        raise ValueError("plot_trajectories: no stream results")
    for r in runs:
        missing = [k for k in ("strategy", "stages", "matrix", "stage_params") if k not in r]
        if missing:
            raise ValueError(f"plot_trajectories: a result lacks {missing}")
    tasks = list(dict.fromkeys(t for r in runs for row in r["matrix"] for t in row))
    plt = _pyplot()
    n_panels = len(tasks) + 1
    ncols = min(n_panels, 4)
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def style(k: int) -> dict[str, Any]:  # distinct markers keep overlapping strategies visible
        return {
            "color": colors[k % len(colors)],
            "marker": "osD^vP*X"[k % 8],
            "ms": 7 - min(k, 3),
            "alpha": 0.9,
        }

    n_stages = max(len(r["matrix"]) for r in runs)
    for i, task in enumerate(tasks):
        ax = axes.flat[i]
        for k, r in enumerate(runs):
            pts = [(s, row[task]) for s, row in enumerate(r["matrix"]) if task in row]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, **style(k), label=r["strategy"])
        metric = next((r["metric"][task] for r in runs if task in r.get("metric", {})), "score")
        ax.set_title(task, fontsize=10)
        ax.set_ylabel(metric, fontsize=9)
    pax = axes.flat[len(tasks)]
    for k, r in enumerate(runs):
        color = colors[k % len(colors)]
        stages = range(len(r["stage_params"]))
        pax.plot(stages, np.cumsum(r["stage_params"]), **style(k), label=r["strategy"])
        if r.get("serving_params"):
            pax.plot(range(len(r["serving_params"])), r["serving_params"], ls=":", color=color)
    pax.set_title("parameters (solid: cumulative stored, dotted: serving)", fontsize=9)
    pax.set_ylabel("parameters", fontsize=9)
    for ax in axes.flat[:n_panels]:
        ax.set_xlabel("stage", fontsize=9)
        ax.set_xticks(range(n_stages))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    pax.legend(fontsize=8)
    stages_txt = " | ".join(",".join(s) for s in runs[0]["stages"])
    fig.suptitle(f"Continual stream: {stages_txt}", fontsize=11)
    fig.tight_layout()
    return _save(fig, out_png)
