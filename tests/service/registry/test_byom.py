"""Bring your own model: a checkpoint written by `flame train` (or `flame continual`) is registered by
`flame models register` and by `POST /models`, and serves predictions, on SQLite and PostgreSQL; a
bad checkpoint is one clear error (CLI: one line, exit 2; HTTP: 422 naming the file) and stores
nothing: no version, no alias move, no blob."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load, save_file
from sqlalchemy import func, select
from typer.testing import CliRunner

from flame_core.benchmarks import load_benchmark
from flame_core.checkpoint import save_continual
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from service.app import create_app
from service.auth.service import create_api_key
from service.cli import app as cli
from service.cli.registry import run_migrations
from service.db import make_engine, make_session_factory, session_scope
from service.registry.models import Alias, Component, ModelVersion, Task
from service.settings import Settings, get_settings

runner = CliRunner()
TINY = FlameConfig(
    d_model=8, n_experts=2, top_k=1, expert_hidden=8, ts_ref_points=4, n_heads=2, text_buckets=64
)


@pytest.fixture(scope="module")
def icu():  # type: ignore[no-untyped-def]
    return load_benchmark("synthetic-icu", n=200, seed=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A migrated, empty registry; the CLI finds it through FLAME_* as every command does."""
    home = tmp_path / "home"
    url = (
        f"sqlite:///{home / 'registry.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_database")
    )
    run_migrations(url)
    for var, value in (("HOME", home), ("DATABASE_URL", url), ("ARTIFACT_ROOT", tmp_path / "blobs")):
        monkeypatch.setenv(f"FLAME_{var}", str(value))
    monkeypatch.setenv("FLAME_DEVICE", "cpu")
    get_settings.cache_clear()
    yield Settings(
        _env_file=None, home=home, database_url=url, artifact_root=tmp_path / "blobs", device="cpu"
    )
    get_settings.cache_clear()


def rows(settings, model):  # type: ignore[no-untyped-def]
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as s:
            return list(s.scalars(select(model)))
    finally:
        engine.dispose()


def patient(icu, labs0: float | None = None) -> dict:  # type: ignore[no-untyped-def]
    mods = json.loads(json.dumps(icu.splits["test"][0]["modalities"]))
    if labs0 is not None:
        mods["labs"]["values"][0] = labs0
    return {"modalities": mods}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_registered_model_serves_predictions(settings, trained_run, icu):
    r = runner.invoke(cli, ["models", "register", str(trained_run)])
    assert r.exit_code == 0, r.output
    assert "as v1" in r.output and "now active" in r.output and "warning" not in r.output
    (version,) = rows(settings, ModelVersion)
    assert version.parent_id is None and [a.version_id for a in rows(settings, Alias)] == ["v1"]
    files = {f["role"]: f for f in version.manifest}
    assert files["source-weights"]["sha256"] == sha256(trained_run / "model.safetensors")
    assert files["source-config"]["sha256"] == sha256(trained_run / "config.json")
    tasks = {t.name: t for t in rows(settings, Task)}
    test_metrics = json.loads((trained_run / "metrics.json").read_text())["test"]
    assert set(tasks) == set(test_metrics) and {t.cursor for t in tasks.values()} == {0}
    assert tasks["mortality"].metrics["auroc"] == pytest.approx(test_metrics["mortality"]["auroc"])

    serving = settings.model_copy(update={"auth_enabled": False})
    with TestClient(create_app(serving, reload_interval_s=3600)) as client:
        r = client.post("/predict/mortality", json=patient(icu))
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "v1" and r.json()["predictions"][0]["out_of_training_range"] == []
        far = client.post("/predict/mortality", json=patient(icu, labs0=500.0)).json()["predictions"][0]
        assert [o["field"] for o in far["out_of_training_range"]] == [
            "modalities.labs.values[0]"
        ]  # ranges kept


def wait_ready(client, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.1)


def upload(directory: Path, config="config.json", weights="model.safetensors") -> dict:  # type: ignore[no-untyped-def]
    files = {}
    if config:
        files["config"] = ("config.json", (directory / config).read_bytes(), "application/json")
    if weights:
        files["weights"] = (
            "model.safetensors",
            (directory / weights).read_bytes(),
            "application/octet-stream",
        )
    return files


def test_http_registered_model_serves_predictions(settings, trained_run, icu):
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as s:
        admin = create_api_key(session=s, name="admin", scopes=["admin"])[1]
        predict = create_api_key(session=s, name="ehr", scopes=["predict"])[1]
    engine.dispose()
    bearer = {
        "admin": {"Authorization": f"Bearer {admin}"},
        "predict": {"Authorization": f"Bearer {predict}"},
    }
    with TestClient(create_app(settings, reload_interval_s=0.2)) as client:
        assert client.get("/readyz").status_code == 503  # nothing registered yet
        assert client.post("/models", files=upload(trained_run), headers=bearer["predict"]).status_code == 403
        r = client.post("/models", files=upload(trained_run), headers=bearer["admin"])
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["version"], body["parent"], body["aliases"], body["activated"]) == (
            "v1",
            None,
            ["active"],
            True,
        )
        assert {f["role"]: f["sha256"] for f in body["files"]}["source-weights"] == sha256(
            trained_run / "model.safetensors"
        )
        assert set(body["tasks"]) == {"mortality", "los", "phenotype", "acuity", "readmission"}
        wait_ready(client)
        r = client.post("/predict/mortality", json=patient(icu), headers=bearer["predict"])
        assert r.status_code == 200 and r.json()["model_version"] == "v1", r.text

        r = client.post(
            "/models", files=upload(trained_run), data={"activate": "false"}, headers=bearer["admin"]
        )
        assert r.status_code == 201 and (r.json()["version"], r.json()["aliases"]) == ("v2", [])
        assert r.json()["activated"] is False
        assert client.get("/models/v2", headers=bearer["admin"]).json()["digest"] == r.json()["digest"]
    assert [a.version_id for a in rows(settings, Alias)] == ["v1"]


def read_tensors(path: Path) -> dict:
    """Copies, not a mapping of the file: rewriting a mapped file in place would crash (SIGBUS)."""
    return load(path.read_bytes())


def pickle_weights(d: Path) -> None:
    torch.save(read_tensors(d / "model.safetensors"), d / "model.pt")
    (d / "model.safetensors").unlink()


def pickle_named_safetensors(d: Path) -> None:
    torch.save(read_tensors(d / "model.safetensors"), d / "model.safetensors")


def wrong_shape(d: Path) -> None:
    tensors = read_tensors(d / "model.safetensors")
    tensors["heads.mortality.out.weight"] = torch.zeros(2, 16)
    save_file(tensors, d / "model.safetensors")


def invalid_specs(d: Path) -> None:
    meta = json.loads((d / "config.json").read_text())
    meta["specs"]["modalities"]["labs"]["dim"] = -3
    (d / "config.json").write_text(json.dumps(meta))


BAD = {  # how it breaks -> (what the one CLI line says, the HTTP field, the file to upload as weights)
    "pickle": (pickle_weights, "found model.pt: pickled checkpoints are never loaded", "weights", "model.pt"),
    "pickle as safetensors": (pickle_named_safetensors, "it looks like a torch.save pickle", "weights", None),
    "wrong shape": (wrong_shape, "'heads.mortality.out.weight' is F32 [2, 16]", "weights", None),
    "invalid specs": (invalid_specs, "modalities.labs.dim", "config.specs.modalities.labs.dim", None),
    "missing config": (lambda d: (d / "config.json").unlink(), "config.json: missing", "config", None),
}


def test_bad_checkpoints_are_one_clear_error_and_store_nothing(settings, trained_run, tmp_path):
    blobs = settings.artifact_root
    with TestClient(
        create_app(settings.model_copy(update={"auth_enabled": False}), reload_interval_s=3600)
    ) as c:
        for case, (breaks, words, field, weights) in BAD.items():
            directory = Path(shutil.copytree(trained_run, tmp_path / case.replace(" ", "-")))
            breaks(directory)
            r = runner.invoke(cli, ["models", "register", str(directory)])
            lines = r.output.strip().splitlines()
            assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, r.output)
            assert words in lines[0], (case, lines[0])

            config = "config.json" if (directory / "config.json").exists() else None
            r = c.post(
                "/models", files=upload(directory, config=config, weights=weights or "model.safetensors")
            )
            assert r.status_code == 422, (case, r.text)
            assert r.json()["error"]["field"] == field, (case, r.json())
        assert rows(settings, ModelVersion) == [] and rows(settings, Alias) == []
        assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]  # not even a blob
        assert c.get("/readyz").status_code == 503


def test_a_continual_checkpoint_registers_every_stage_at_its_cursor(settings, icu, tmp_path):
    torch.manual_seed(0)
    cl = ContinualFlame(build_flame(TINY, icu.specs.subset(["mortality"])).eval())
    cl.begin_stage(icu.specs.subset(["los"]))
    with torch.no_grad():
        for p in cl.stage_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cl.end_stage(rank=2)
    save_continual(tmp_path / "cl" / "model", cl, extra={"metrics": {"los": {"auroc": 0.61}}})

    r = runner.invoke(cli, ["models", "register", str(tmp_path / "cl")])  # DIR: its model/ is found
    assert r.exit_code == 0, r.output
    assert "no training ranges for ['mortality', 'los']" in r.output  # said, not fatal
    tasks = {t.name: (t.cursor, t.metrics) for t in rows(settings, Task)}
    assert tasks == {"mortality": (0, {}), "los": (1, {"auroc": 0.61})}
    ranks = {c.rank for c in rows(settings, Component) if c.stage == 1}
    assert None in ranks and max(r for r in ranks if r) == 2  # rank-2 factors (or less), full vectors
    with TestClient(
        create_app(settings.model_copy(update={"auth_enabled": False}), reload_interval_s=3600)
    ) as c:
        r = c.post("/predict/los", json=patient(icu))
        assert r.status_code == 200 and r.json()["cursor"] == 1, r.text
    count = select(func.count()).select_from(ModelVersion)
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.scalar(count) == 1
    engine.dispose()
