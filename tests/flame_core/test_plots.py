"""The analysis figures are real PNGs of a sensible size, and `flame analyze` writes them from a
checkpoint directory (plain and continual), with exit code 2 on bad input."""

import json
import struct

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from flame_core.analysis import Fingerprint, SpectrumResult
from flame_core.checkpoint import save_checkpoint, save_continual
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.plots import plot_affinity, plot_routing, plot_spectra, plot_trajectories
from flame_core.specs import SpecSet
from flame_core.stream import StreamResult
from service.cli import analyze

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    assert len(data) > 5000  # drawn content, not an empty canvas
    return struct.unpack(">II", data[16:24])


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spectrum(name: str, rows: int, seed: int) -> SpectrumResult:
    rng = np.random.default_rng(seed)
    energies = {"weight": np.sort(rng.random(8))[::-1]}
    if rows:
        energies = {
            "input": np.sort(rng.random(12) ** 4)[::-1],
            **energies,
            "data": np.sort(rng.random(8) ** 4)[::-1],
        }
    return SpectrumResult(name, (8, 12), rows, energies)


def test_plot_spectra_writes_a_png_with_a_panel_per_weight_including_unrouted(tmp_path):
    results = {
        n: spectrum(n, rows, i)
        for i, (n, rows) in enumerate(
            [
                ("blocks.0.moe.experts.0.conv.weight", 50),
                ("blocks.0.moe.experts.0.fc1.weight", 50),
                ("blocks.0.moe.experts.1.fc1.weight", 0),
            ]
        )
    }
    out = plot_spectra(results, tmp_path / "sub" / "spectra.png")
    assert out == tmp_path / "sub" / "spectra.png"
    w, h = png_size(out)
    assert 500 <= w <= 3000 and 200 <= h <= 2000 and w > h  # one row of three panels
    with pytest.raises(ValueError, match="no spectra"):
        plot_spectra({}, tmp_path / "empty.png")


def test_plot_routing_and_affinity_write_pngs(tmp_path):
    act = np.array([1.0, 0.5, 0.5, 0.0])
    fps = {
        "a": {
            "vitals": Fingerprint(10, act, act / 2),
            "labs": Fingerprint(10, act[::-1].copy(), act[::-1] / 2),
        },
        "b": {"labs": Fingerprint(5, act, act / 2)},
    }
    w, h = png_size(plot_routing(fps, tmp_path / "routing.png"))
    assert 300 <= w <= 3000 and 150 <= h <= 2000
    matrix = np.array([[1.0, 0.3, 0.1], [0.3, 1.0, 0.7], [0.1, 0.7, 1.0]])
    w, h = png_size(plot_affinity(["a", "b", "c"], matrix, tmp_path / "affinity.png"))
    assert 200 <= w <= 2000 and 200 <= h <= 2000
    with pytest.raises(ValueError, match="does not match"):
        plot_affinity(["a", "b"], matrix, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no fingerprints"):
        plot_routing({"a": {}}, tmp_path / "none.png")


def test_plot_trajectories_takes_stream_results_and_their_dicts(tmp_path):
    stages = [["a"], ["b"]]
    flame = StreamResult(
        "flame",
        stages,
        {"a": "auroc", "b": "auroc"},
        [{"a": 0.8}, {"a": 0.8, "b": 0.7}],
        [{}, {}],
        [100, 10],
        [100, 110],
        [1.0, 1.0],
    )
    finetune = {**flame.to_dict(), "strategy": "finetune", "matrix": [{"a": 0.8}, {"a": 0.6, "b": 0.72}]}
    out = plot_trajectories([flame, finetune], tmp_path / "traj.png")
    w, h = png_size(out)
    assert 600 <= w <= 3000 and 200 <= h <= 2000
    with pytest.raises(ValueError, match="lacks"):
        plot_trajectories([{"strategy": "x"}], tmp_path / "bad.png")


# ---- the CLI ---------------------------------------------------------------------------------------
CFG = FlameConfig(
    d_model=8, n_heads=2, n_experts=2, top_k=1, expert_hidden=8, ts_ref_points=2, text_buckets=16
)
MODS = {"vitals": {"kind": "timeseries", "dim": 2}, "labs": {"kind": "tabular", "dim": 3}}
TASKS = [
    {"name": "a", "modalities": ["vitals", "labs"], "head": {"type": "binary"}},
    {"name": "b", "modalities": ["labs"], "head": {"type": "binary"}},
]


def write_data(path, n: int = 12) -> None:
    rows = []
    for i in range(n):
        r = float(np.sin(i))
        rows.append(
            {
                "modalities": {
                    "vitals": {"times": [0.0, 1.0 + i], "values": [[r, None], [r * 2, 1.0]]},
                    "labs": {"values": [r, None, 1.0 - r]},
                },
                "labels": {"a": int(r > 0), "b": int(i % 2), "other_model_task": 1},
            }
        )
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    torch.manual_seed(0)
    model = build_flame(CFG, SpecSet.from_dict({"modalities": MODS, "tasks": TASKS}))
    plain = save_checkpoint(root / "plain", model, model.specs)
    cl = ContinualFlame(build_flame(CFG, SpecSet.from_dict({"modalities": MODS, "tasks": TASKS[:1]})))
    cl.begin_stage(SpecSet.from_dict({"modalities": {"labs": MODS["labs"]}, "tasks": TASKS[1:]}))
    cl.end_stage(rank=1)
    continual = save_continual(root / "continual", cl)
    write_data(root / "data.jsonl")
    return plain, continual, root / "data.jsonl"


runner = CliRunner()


def test_cli_spectra_on_a_plain_checkpoint_writes_png_and_json(checkpoints, tmp_path):
    plain, _, data = checkpoints
    r = runner.invoke(
        analyze.app, ["spectra", str(plain), "--out", str(tmp_path / "plots"), "--data", str(data)]
    )
    assert r.exit_code == 0, r.output
    assert "spectra.png" in r.output
    png_size(tmp_path / "plots" / "spectra.png")
    doc = json.loads((tmp_path / "plots" / "spectra.json").read_text())
    assert doc["tasks"] == ["a", "b"] and doc["samples"] == 12
    assert len(doc["spectra"]) == CFG.n_experts * 3
    routed = [s for s in doc["spectra"] if s["routed"]]
    assert routed and all(s["cumulative"]["data"][-1] == 1.0 for s in routed)


def test_cli_affinity_and_routing_on_a_continual_checkpoint(checkpoints, tmp_path):
    _, continual, data = checkpoints
    app = typer.Typer()  # mounted as the lead does in service/cli/__init__.py
    app.add_typer(analyze.app, name="analyze")
    r = runner.invoke(
        app, ["analyze", "affinity", str(continual), "--out", str(tmp_path), "--data", str(data)]
    )
    assert r.exit_code == 0, r.output
    assert "a + b" in r.output
    doc = json.loads((tmp_path / "affinity.json").read_text())
    assert doc["tasks"] == ["a", "b"] and doc["matrix"][0][0] == 1.0
    assert doc["pairs"][0]["shared_modalities"] == ["labs"]
    png_size(tmp_path / "affinity.png")
    r = runner.invoke(
        app, ["analyze", "routing", str(continual), "--out", str(tmp_path), "--data", str(data)]
    )
    assert r.exit_code == 0, r.output
    fps = json.loads((tmp_path / "routing.json").read_text())["fingerprints"]
    assert sum(fps["a"]["vitals"]["activation"]) == pytest.approx(CFG.top_k)
    png_size(tmp_path / "routing.png")


def test_cli_routing_on_a_benchmark_test_split(tmp_path):
    from flame_core.benchmarks import load_benchmark

    torch.manual_seed(0)
    model = build_flame(CFG, load_benchmark("synthetic-icu", n=60).specs.subset(["mortality", "los"]))
    save_checkpoint(tmp_path / "ck", model, model.specs)
    args = [
        "routing",
        str(tmp_path / "ck"),
        "--out",
        str(tmp_path),
        "--benchmark",
        "synthetic-icu",
        "--n",
        "60",
    ]
    r = runner.invoke(analyze.app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "routing.json").read_text())
    assert doc["tasks"] == ["mortality", "los"]
    assert all(sum(fp["mean_gate"]) == pytest.approx(1.0) for fp in doc["fingerprints"]["los"].values())
    r = runner.invoke(
        analyze.app, ["routing", str(tmp_path / "ck"), "--out", str(tmp_path), "--benchmark", "nope"]
    )
    assert r.exit_code == 2 and "unknown benchmark" in r.output


def test_cli_errors_exit_2_with_a_message(checkpoints, tmp_path):
    plain, _, data = checkpoints
    r = runner.invoke(
        analyze.app, ["spectra", str(tmp_path / "nope"), "--out", str(tmp_path), "--data", str(data)]
    )
    assert r.exit_code == 2 and "not found" in r.output
    r = runner.invoke(analyze.app, ["routing", str(plain), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--benchmark" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"modalities": {"labs": {"values": [1.0]}}, "labels": {"a": 1}}) + "\n")
    r = runner.invoke(analyze.app, ["spectra", str(plain), "--out", str(tmp_path), "--data", str(bad)])
    assert r.exit_code == 2 and "labs" in r.output
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text(json.dumps({"modalities": {"labs": {"values": [1.0, 2.0, 3.0]}}}) + "\n")
    r = runner.invoke(analyze.app, ["spectra", str(plain), "--out", str(tmp_path), "--data", str(unlabelled)])
    assert r.exit_code == 2 and "no labels" in r.output
    assert not (tmp_path / "spectra.png").exists()
