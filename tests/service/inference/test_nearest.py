"""POST /predict without a task: the served tasks nearest to a sample by shift score."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli.serve import build_demo_model, demo_validation

from ..conftest import serving_registry


@pytest.fixture(scope="module")
def env(tmp_path_factory):  # type: ignore[no-untyped-def]
    cl, _ = build_demo_model(n=300, epochs=1)
    settings, engine, _ = serving_registry(tmp_path_factory.mktemp("nearest"), cl, auth_enabled=False)
    samples = [{"modalities": s["modalities"]} for s in demo_validation(n=300)]
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        yield client, cl, samples
    engine.dispose()


def test_tasks_are_listed_nearest_first(env) -> None:  # type: ignore[no-untyped-def]
    client, cl, samples = env
    full = next(s for s in samples if set(s["modalities"]) == {"vitals", "labs", "notes", "cxr"})
    r = client.post("/predict", json=full)
    assert r.status_code == 200, r.text
    near = r.json()["nearest_tasks"]
    assert {n["task"] for n in near} == set(cl.shift) and r.json()["model_version"] == "v1"
    assert [n["score"] for n in near] == sorted(n["score"] for n in near)
    for n in near:
        assert n["in_distribution"] == (n["score"] <= cl.shift[n["task"]]["threshold"])


def test_only_tasks_reading_the_sample_are_listed_and_a_far_sample_is_flagged(env) -> None:  # type: ignore[no-untyped-def]
    client, cl, samples = env
    labs = next(s for s in samples if "labs" in s["modalities"])
    only = {"modalities": {"labs": labs["modalities"]["labs"]}}
    near = client.post("/predict", json=only).json()["nearest_tasks"]
    readers = {t for t in cl.shift if "labs" in cl.specs.tasks[t].modalities}
    assert {n["task"] for n in near} == readers and "acuity" not in readers
    far = copy.deepcopy(only)
    far["modalities"]["labs"]["values"] = [
        None if v is None else v + 50 for v in far["modalities"]["labs"]["values"]
    ]
    assert not any(n["in_distribution"] for n in client.post("/predict", json=far).json()["nearest_tasks"])


def test_a_bad_sample_is_422_naming_the_field(env) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = env
    r = client.post("/predict", json={"modalities": {"labs": {"values": ["x"]}}})
    assert r.status_code == 422 and r.json()["error"]["field"].startswith("modalities.labs"), r.text
    assert client.post("/predict", json=[1]).status_code == 422
