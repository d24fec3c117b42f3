"""Model cards over HTTP: the system-filled card of the demo model's tasks as JSON and Markdown, an
admin writes intended use and limitations, and nobody else can."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import build_demo_model, demo_cards, register_model
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.settings import Settings


@pytest.fixture(scope="module")
def env(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("cards")
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}", artifact_root=root / "a", device="cpu"
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    cl, metrics = build_demo_model(n=300, epochs=1)
    store = LocalArtifactStore(settings.artifact_root)
    register_model(session_factory=factory, store=store, cl=cl, metrics=metrics, cards=demo_cards(cl, n=300))
    keys = {}
    with session_scope(factory) as s:
        for scope in ("predict", "train", "admin"):
            keys[scope] = {
                "Authorization": f"Bearer {create_api_key(session=s, name=scope, scopes=[scope])[1]}"
            }
    with TestClient(create_app(settings, reload_interval_s=3600)) as client:
        yield client, keys
    engine.dispose()


def test_the_card_is_filled_by_the_system(env) -> None:  # type: ignore[no-untyped-def]
    client, keys = env
    r = client.get("/tasks/mortality/card", headers=keys["predict"])
    assert r.status_code == 200, r.text
    card = r.json()
    assert card["task"] == "mortality" and card["version"] == "v1" and card["cursor"] == 0
    assert card["data"]["train"]["n"] > 0 and set(card["data"]["train"]["modality_presence"]) == set(
        card["modalities"]
    )
    assert sum(card["data"]["test"]["label_counts"].values()) == card["data"]["test"]["n"]
    assert 0 <= card["metrics"]["auroc"] <= 1
    calib = card["calibration"]
    assert calib["target_coverage"] == 0.9 and 0 <= calib["test_coverage"] <= 1
    assert 0 <= calib["ece_before"] <= 1 and 0 <= calib["ece_after"] <= 1
    assert sum(g["n"] for g in card["subgroups"].values()) == card["data"]["test"]["n"]
    assert "synthetic_icu" in card["sources"]["generator"]


def test_the_card_as_markdown(env) -> None:  # type: ignore[no-untyped-def]
    client, keys = env
    r = client.get("/tasks/acuity/card", params={"format": "markdown"}, headers=keys["predict"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert (
        r.text.startswith("# Model card: acuity")
        and "## Calibration" in r.text
        and "| present modalities |" in r.text
    )
    assert (
        client.get("/tasks/acuity/card", params={"format": "pdf"}, headers=keys["predict"]).status_code == 422
    )


def test_an_admin_writes_intended_use_and_limitations(env) -> None:  # type: ignore[no-untyped-def]
    client, keys = env
    text = {"intended_use": "Adult ICU, 24 h after admission.", "limitations": "Not for paediatrics."}
    assert client.patch("/tasks/los", json=text, headers=keys["train"]).status_code == 403
    assert client.patch("/tasks/los", json=text).status_code == 401
    r = client.patch("/tasks/los", json=text, headers=keys["admin"])
    assert r.status_code == 200, r.text
    card = client.get("/tasks/los/card", headers=keys["predict"]).json()
    assert card["intended_use"] == text["intended_use"] and card["limitations"] == text["limitations"]
    assert 0 <= card["metrics"]["auroc"] <= 1  # the system's part is kept
    md = client.get("/tasks/los/card", params={"format": "markdown"}, headers=keys["predict"]).text
    assert "Not for paediatrics." in md


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"intended_use": "x" * 4001}, "intended_use"),
        ({"owner": "me"}, "owner"),
        ({"limitations": "a\x00b"}, "limitations"),
    ],
)
def test_a_bad_card_text_is_422_naming_the_field(env, body, field) -> None:  # type: ignore[no-untyped-def]
    client, keys = env
    r = client.patch("/tasks/los", json=body, headers=keys["admin"])
    assert r.status_code == 422, r.text
    assert field in (r.json()["error"]["field"] or ""), r.json()


def test_unknown_task_is_404(env) -> None:  # type: ignore[no-untyped-def]
    client, keys = env
    assert client.get("/tasks/nope/card", headers=keys["predict"]).status_code == 404
    assert client.patch("/tasks/nope", json={"limitations": "x"}, headers=keys["admin"]).status_code == 404
