"""The `flame` CLI end to end: export -> train on your own JSONL -> evaluate."""

import json

from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


def test_export_train_evaluate_round_trip(tmp_path):
    for split in ("train", "val", "test"):
        r = runner.invoke(
            app,
            [
                "data",
                "export",
                "--benchmark",
                "synthetic-icu",
                "--n",
                "300",
                "--split",
                split,
                "--out",
                str(tmp_path / f"{split}.jsonl"),
                "--spec-out",
                str(tmp_path / "spec.json"),
            ],
        )
        assert r.exit_code == 0, r.output
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert "mortality" in [t["name"] for t in spec["tasks"]]
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "train.jsonl"),
            "--val",
            str(tmp_path / "val.jsonl"),
            "--test",
            str(tmp_path / "test.jsonl"),
            "--task-spec",
            str(tmp_path / "spec.json"),
            "--tasks",
            "mortality,los",
            "--epochs",
            "2",
            "--d-model",
            "16",
            "--n-experts",
            "4",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "mortality" in r.output and "auroc" in r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mortality", "los"}
    assert 0.0 <= metrics["test"]["mortality"]["auroc"] <= 1.0
    r = runner.invoke(app, ["evaluate", str(out), "--data", str(tmp_path / "test.jsonl")])
    assert r.exit_code == 0, r.output
    assert f"{metrics['test']['mortality']['auroc']:.3f}" in r.output


def test_bad_user_data_names_line_and_field(tmp_path):
    spec = {
        "modalities": {"labs": {"kind": "tabular", "dim": 2}},
        "tasks": [{"name": "death", "modalities": ["labs"], "head": {"type": "binary"}}],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    good = {"modalities": {"labs": {"values": [1.0, 2.0]}}, "label": 1}
    bad = {"modalities": {"labs": {"values": [1.0, 2.0, 3.0]}}, "label": 0}
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "train.jsonl"),
            "--val",
            str(tmp_path / "train.jsonl"),
            "--task-spec",
            str(tmp_path / "spec.json"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 2
    assert "labs" in r.output and "values" in r.output
    assert "line 2" in r.output and "sample 1" not in r.output  # lines counted as the API counts them


def test_unknown_benchmark_is_rejected(tmp_path):
    r = runner.invoke(app, ["train", "--benchmark", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "nope" in r.output


def test_continual_command_writes_matrix_and_summary(tmp_path):
    out = tmp_path / "cl"
    r = runner.invoke(
        app,
        [
            "continual",
            "--benchmark",
            "synthetic-icu",
            "--n",
            "240",
            "--stream",
            "mortality;los",
            "--strategy",
            "flame",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    matrix = json.loads((out / "matrix.json").read_text())
    assert summary["forgetting"] == 0.0
    assert matrix["matrix"][1]["mortality"] == matrix["matrix"][0]["mortality"]
    assert (out / "model" / "config.json").is_file()
    ranges = json.loads((out / "model" / "config.json").read_text())["training_ranges"]
    assert (
        set(ranges) == {"mortality", "los"}
        and ranges["los"]["labs"]["values"][0][0] < 0 < ranges["los"]["labs"]["values"][0][1]
    )
    bad = runner.invoke(
        app, ["continual", "--benchmark", "synthetic-icu", "--stream", "mortality;;los", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "empty stage" in bad.output
