"""Never a wrong answer: bounded inputs, JSON limits, media types, training ranges, finite outputs.

Each case the fuzzing and hand-made bad inputs found (a 500, or a NaN shown as a negative prediction)
is a 4xx naming the field here, against the real app on a SQLite registry.
"""

import json
import math
import random

import pytest
import torch
from fastapi.testclient import TestClient

from flame_core.config import FlameConfig
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.cli.serve import build_demo_model, register_model
from service.db import load_models, make_engine, make_session_factory
from service.observability import NONFINITE_PREDICTIONS
from service.settings import Settings

TINY = FlameConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2)


def serve(root, cl):  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_root=root / "artifacts",
        auth_enabled=False,
        device="cpu",
        max_instances=8,
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    register_model(
        session_factory=make_session_factory(engine), store=LocalArtifactStore(settings.artifact_root), cl=cl
    )
    return create_app(settings, reload_interval_s=3600), engine


@pytest.fixture(scope="module")
def client(tmp_path_factory):  # type: ignore[no-untyped-def]
    cl, _ = build_demo_model(n=200, epochs=0, config=TINY)  # untrained: ranges are recorded all the same
    app, engine = serve(tmp_path_factory.mktemp("bad"), cl)
    with TestClient(app) as c:
        yield c
    engine.dispose()


def patient() -> dict:
    return {
        "modalities": {
            "labs": {"values": [0.4, -1.2, None, 0.8, 0.0, 1.5, -0.3, None, 0.9, 0.1, -0.7, 0.2]},
            "vitals": {"times": [0.5, 1.5, 4], "values": [[0.2, 1.1, None, 0.3, -0.5, 0.0]] * 3},
        }
    }


def post(client, body, task="mortality", **kw):  # type: ignore[no-untyped-def]
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    kw.setdefault("headers", {"Content-Type": "application/json"})
    return client.post(f"/predict/{task}", content=content, **kw)


def assert_4xx(r, status: int, field: str, code: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    if code is not None:
        assert err["code"] == code


@pytest.mark.parametrize("value", [1e20, 1e38, 1e300, -1e300])
def test_huge_lab_values_are_422_not_nan(client, value):  # type: ignore[no-untyped-def]
    s = patient()
    s["modalities"]["labs"]["values"][0] = value
    assert_4xx(post(client, s), 422, "modalities.labs.values[0]", "sample_invalid")


def test_huge_vitals_times_and_embeddings_are_422(client):  # type: ignore[no-untyped-def]
    s = patient()
    s["modalities"]["vitals"]["times"] = [0, 1, 1e300]
    assert_4xx(post(client, s), 422, "modalities.vitals.times[2]")
    s = patient()
    s["modalities"]["vitals"]["values"] = [[1e20, 0, 0, 0, 0, 0]]
    s["modalities"]["vitals"]["times"] = [0]
    assert_4xx(post(client, s), 422, "modalities.vitals.values[0][0]")
    s = patient()
    s["modalities"]["cxr"] = {"embedding": [1e38] + [0.0] * 31}
    assert_4xx(post(client, s, task="phenotype"), 422, "modalities.cxr.embedding[0]")


def test_all_null_vitals_row_is_422(client):  # type: ignore[no-untyped-def]
    s = {"modalities": {"vitals": {"times": [0.0], "values": [[None] * 6]}}}
    assert_4xx(post(client, s), 422, "modalities.vitals.values")


def test_json_limits_are_422_naming_the_body(client):  # type: ignore[no-untyped-def]
    digits = "9" * 5000
    raw = json.dumps(patient()).replace("0.4", digits, 1)
    assert_4xx(post(client, raw), 422, "body", "payload_invalid")
    deep = "[" * 2000 + "]" * 2000
    assert_4xx(post(client, '{"modalities": {"labs": {"values": ' + deep + "}}}"), 422, "body")
    assert_4xx(post(client, deep), 422, "body")


def test_non_json_bodies_are_415_and_unknown_query_parameters_422(client):  # type: ignore[no-untyped-def]
    body = json.dumps(patient())
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = post(client, body, headers={"Content-Type": media})
        assert_4xx(r, 415, "content-type", "unsupported_media_type")
    assert post(client, body, headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    assert post(client, body, headers={}).status_code == 200  # no Content-Type: read as JSON
    r = post(client, patient(), params={"mrn": "12345"})
    assert_4xx(r, 422, "mrn")
    r = client.post("/models/v1/activate", content="alias=active", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_values_outside_the_training_range_are_predicted_and_named(client):  # type: ignore[no-untyped-def]
    r = post(client, patient())
    assert r.status_code == 200 and r.json()["predictions"][0]["out_of_training_range"] == []
    s = patient()
    s["modalities"]["labs"]["values"][3] = 900.0  # inside the 1e6 bound, far past synthetic-icu's labs
    s["modalities"]["vitals"]["times"] = [0.5, 1.5, 5000.0]  # training times end at 48 h
    r = post(client, s)
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    outside = {o["field"]: o for o in pred["out_of_training_range"]}
    assert set(outside) == {"modalities.labs.values[3]", "modalities.vitals.times[2]"}
    lab = outside["modalities.labs.values[3]"]
    assert lab["low"] < lab["high"] < 900.0
    assert outside["modalities.vitals.times[2]"]["high"] <= 48.0
    assert math.isfinite(pred["output"]["probability"])


def test_every_output_is_finite_at_the_edges_of_the_bound(client):  # type: ignore[no-untyped-def]
    rng = random.Random(0)
    for task in ("mortality", "los", "phenotype", "acuity"):
        instances = []
        for _ in range(8):
            edge = [rng.choice([-1e6, 1e6, 0.0, None, 1e-30]) for _ in range(12)]
            edge[0] = 1e6  # at least one observed value
            steps = rng.randint(1, 5)
            times = sorted(rng.choice([-1e6, 0.0, 1e6]) for _ in range(steps))
            vitals = {
                "times": times,
                "values": [[rng.choice([-1e6, 1e6, None]) for _ in range(5)] + [1e6]] * steps,
            }
            cxr = {"embedding": [rng.choice([-1e6, 1e6]) for _ in range(32)]}
            notes = {"text": "fever " * rng.randint(1, 300)}
            instances.append(
                {"modalities": {"labs": {"values": edge}, "vitals": vitals, "cxr": cxr, "notes": notes}}
            )
        r = post(client, {"instances": instances}, task=task)
        assert r.status_code == 200, r.text
        for pred in r.json()["predictions"]:
            numbers = [v for v in _numbers(pred["output"])]
            assert numbers and all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers)
            for route in pred["routing"].values():
                assert all(math.isfinite(w) for w in route["weights"])


def _numbers(output: dict) -> list:
    out = []
    for k in ("probability", "value", "label"):
        if k in output:
            out.append(output[k])
    probs = output.get("probabilities")
    out += list(probs.values()) if isinstance(probs, dict) else list(probs or [])
    return out


def test_a_non_finite_output_is_never_a_number(tmp_path):  # type: ignore[no-untyped-def]
    """A model that yields NaN (here: a corrupted head) answers 422 with a clear code, counted."""
    cl, _ = build_demo_model(n=200, epochs=0, config=TINY)
    with torch.no_grad():
        for p in cl.model.heads["mortality"].parameters():
            p.fill_(float("nan"))
    app, engine = serve(tmp_path, cl)
    before = NONFINITE_PREDICTIONS.labels(task="mortality")._value.get()
    with TestClient(app) as c:
        assert_4xx(post(c, patient()), 422, "modalities", "prediction_not_finite")
        r = post(c, {"instances": [patient(), patient()]})
        assert_4xx(r, 422, "instances[0]", "prediction_not_finite")
        assert post(c, patient(), task="los").status_code == 200  # other heads are intact
    engine.dispose()
    assert NONFINITE_PREDICTIONS.labels(task="mortality")._value.get() == before + 3
