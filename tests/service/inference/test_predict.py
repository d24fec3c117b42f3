"""POST /predict/{task} against a real app: a tiny registered model on a temp SQLite DB and store."""

import copy
import json
import math

import pytest
from fastapi.testclient import TestClient

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.specs import SpecSet
from flame_core.training import seed_everything
from service.app import create_app
from service.cli.serve import register_model
from service.db import load_models, make_engine, make_session_factory
from service.registry.audit import list_predictions
from service.settings import Settings

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)


def tiny_model(specs: SpecSet, seed: int) -> ContinualFlame:
    seed_everything(seed)
    return ContinualFlame(build_flame(TINY, specs).eval())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_root=root / "artifacts",
        auth_enabled=False,
        device="cpu",
        max_instances=4,
        max_body_bytes=64_000,
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    data = load_benchmark("synthetic-icu", n=200)
    d = data.specs.to_dict()  # synthetic-icu has no regression task: add one
    d["tasks"].append({"name": "los_hours", "modalities": ["vitals", "labs"], "head": {"type": "regression"}})
    specs = SpecSet.from_dict(d)
    from service.artifacts import LocalArtifactStore

    store = LocalArtifactStore(settings.artifact_root)
    register_model(session_factory=factory, store=store, cl=tiny_model(specs, 0))
    app = create_app(settings, reload_interval_s=3600)
    with TestClient(app) as client:
        yield {
            "client": client,
            "app": app,
            "factory": factory,
            "store": store,
            "specs": specs,
            "samples": data.splits["test"][:6],
        }
    engine.dispose()


def sample(env, i=0, drop=()):
    s = copy.deepcopy(env["samples"][i])
    mods = {k: v for k, v in s["modalities"].items() if k not in drop}
    return {"id": f"p{i}", "modalities": mods}


def post(env, task, body, **kw):
    return env["client"].post(f"/predict/{task}", content=json.dumps(body), **kw)


def test_binary_output_modalities_and_routing(env):
    r = post(env, "mortality", sample(env, 0, drop=("cxr",)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "v1" and body["cursor"] == 0 and body["task"] == "mortality"
    (pred,) = body["predictions"]
    out = pred["output"]
    assert out["type"] == "binary" and 0.0 < out["probability"] < 1.0
    assert out["label"] == int(out["probability"] >= 0.5)
    assert "cxr" in pred["modalities"]["missing"] and "cxr" not in pred["modalities"]["used"]
    assert set(pred["routing"]) == set(pred["modalities"]["used"]) and pred["routing"]
    for route in pred["routing"].values():
        assert len(route["experts"]) == TINY.top_k and all(0 <= e < TINY.n_experts for e in route["experts"])
        assert math.isclose(sum(route["weights"]), 1.0, abs_tol=1e-4)


def test_multiclass_multilabel_regression_outputs(env):
    acuity = post(env, "acuity", sample(env, 1)).json()["predictions"][0]["output"]
    assert acuity["type"] == "multiclass" and len(acuity["probabilities"]) == 4
    assert math.isclose(sum(acuity["probabilities"]), 1.0, abs_tol=1e-5)
    best = max(range(4), key=acuity["probabilities"].__getitem__)
    assert acuity["label"] == best and acuity["class_name"] == ("low", "moderate", "high", "critical")[best]

    pheno = post(env, "phenotype", sample(env, 1)).json()["predictions"][0]["output"]
    names = env["specs"].tasks["phenotype"].head.labels
    assert pheno["type"] == "multilabel" and list(pheno["probabilities"]) == list(names)
    assert pheno["labels"] == [n for n, p in pheno["probabilities"].items() if p >= 0.5]

    reg = post(env, "los_hours", sample(env, 1)).json()["predictions"][0]["output"]
    assert reg["type"] == "regression" and math.isfinite(reg["value"]) and "probability" not in reg


def test_instances_match_single_predictions(env):
    batch = [sample(env, i) for i in range(3)]
    r = post(env, "mortality", {"instances": batch})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["id"] for p in preds] == ["p0", "p1", "p2"]
    for i, p in enumerate(preds):
        single = post(env, "mortality", batch[i]).json()["predictions"][0]["output"]["probability"]
        assert math.isclose(p["output"]["probability"], single, abs_tol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda s: s["modalities"]["labs"]["values"].__setitem__(0, float("nan")),
            "modalities.labs.values[0]",
        ),
        (lambda s: s["modalities"]["labs"]["values"].pop(), "modalities.labs.values"),
        (lambda s: s["modalities"]["vitals"]["times"].__setitem__(1, -5.0), "modalities.vitals.times[1]"),
        (lambda s: s["modalities"].__setitem__("ecg", {"values": [1.0]}), "modalities.ecg"),
        (lambda s: s["modalities"].clear(), "modalities"),
        (
            lambda s: s["modalities"].__setitem__(
                "vitals", {"times": [float(t) for t in range(65)], "values": [[0.0] * 6] * 65}
            ),
            "modalities.vitals.values",
        ),
        (lambda s: s["modalities"].__setitem__("notes", {"text": "fever " * 400}), "modalities.notes.text"),
    ],
    ids=[
        "nan",
        "wrong-dim",
        "decreasing-times",
        "unknown-modality",
        "empty-modalities",
        "long-sequence",
        "long-text",
    ],
)
def test_invalid_payloads_name_the_field(env, mutate, field):
    s = sample(env, 0)
    mutate(s)
    r = post(env, "mortality", s)  # json.dumps writes NaN as the bare token, as a careless client would
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "sample_invalid" and err["field"] == field
    r = post(env, "mortality", {"instances": [sample(env, 1), s]})
    assert r.status_code == 422 and r.json()["error"]["field"] == f"instances[1].{field}"
    assert r.json()["error"]["instance"] == 1


def test_limits_and_unknown_task(env):
    r = post(env, "no_such_task", sample(env, 0))
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "task_not_found" and "mortality" in err["message"] and err["field"] == "task"
    r = post(env, "mortality", {"instances": [sample(env, 0)] * 5})
    assert r.status_code == 422 and r.json()["error"]["field"] == "instances"
    big = sample(env, 0)
    big["modalities"]["notes"] = {"text": "word " * 20_000}
    r = post(env, "mortality", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = env["client"].post("/predict/mortality", content=b"{not json")
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"


def test_audit_row_without_payload(env):
    s = sample(env, 2, drop=("cxr",))
    r = post(env, "mortality", s, headers={"X-Request-ID": "audit-test-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "audit-test-1"
    env["app"].state.audit_writer.flush()  # the row is written off the event loop
    with env["factory"]() as session:
        rows = [row for row in list_predictions(session=session) if row.request_id == "audit-test-1"]
    assert len(rows) == 1
    row = rows[0]
    assert (row.task, row.version, row.status_code) == ("mortality", "v1", 200)
    assert row.modalities_present == sorted(r.json()["predictions"][0]["modalities"]["used"])
    stored = json.dumps({c.name: str(getattr(row, c.name)) for c in row.__table__.columns})
    assert s["modalities"]["notes"]["text"][:30] not in stored and "values" not in stored


def test_reload_serves_new_version_and_old_requests_keep_theirs(env):
    host = env["app"].state.host
    assert host.reload_if_changed() is False  # nothing moved
    held = host.get()
    before = post(env, "mortality", sample(env, 3)).json()["predictions"][0]["output"]["probability"]
    register_model(session_factory=env["factory"], store=env["store"], cl=tiny_model(env["specs"], 1))
    assert host.reload_if_changed() is True
    r = post(env, "mortality", sample(env, 3)).json()
    assert r["model_version"] == "v2"
    assert r["predictions"][0]["output"]["probability"] != pytest.approx(before, abs=1e-6)
    assert held.id == "v1" and host.get().id == "v2"  # a request holding v1 still has it
