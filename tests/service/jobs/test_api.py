"""The jobs API end to end on the in-process queue: upload, POST /tasks, job, versions, rollback."""

from __future__ import annotations

import json

from .conftest import LOS, drain, only_labels


def _upload(client, samples, **params):  # type: ignore[no-untyped-def]
    body = "\n".join(json.dumps(s) for s in samples)
    r = client.post(
        "/datasets", content=body, params=params, headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 201, r.text
    return r.json()["dataset_id"]


def _stage_body(client, icu, **options):  # type: ignore[no-untyped-def]
    ids = {
        k: _upload(client, only_labels(icu.splits[k], ["los"]), specs=json.dumps({"tasks": [LOS]}))
        for k in ("train", "val")
    }
    return {
        "tasks": [LOS],
        "datasets": {"train": ids["train"], "validation": ids["val"]},
        "options": {"epochs": 1, **options},
    }


def test_post_task_runs_stage_and_rollback_moves_active_back(client, icu, v1):  # type: ignore[no-untyped-def]
    body = _stage_body(client, icu)
    r = client.post("/tasks", json=body, headers={"Idempotency-Key": "stage-los-1"})
    assert r.status_code == 202 and r.json()["state"] == "queued"
    job_id = r.json()["job_id"]
    again = client.post("/tasks", json=body, headers={"Idempotency-Key": "stage-los-1"})
    assert again.status_code == 202 and again.json()["job_id"] == job_id
    drain(client)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["result_version"] == "v2" and job["parent_version"] == "v1"
    assert job["progress"]["epoch"] == 1 and job["metrics"]["evaluated_on"] == "validation"
    assert [t["name"] for t in client.get("/tasks").json()] == ["mortality", "los"]
    los = client.get("/tasks/los").json()
    assert (
        los["cursor"] == 1
        and los["introduced_in"] == "v2"
        and los["metrics"] == job["metrics"]["tasks"]["los"]
    )
    models = {m["version"]: m for m in client.get("/models").json()}
    assert models["v2"]["aliases"] == ["active"] and models["v2"]["parent"] == "v1"
    assert models["v2"]["tasks_introduced"] == ["los"]
    detail = client.get("/models/v2").json()
    assert detail["lineage"] == ["v1", "v2"] and detail["reserved_rank_max"] >= 1

    r = client.post("/models/v1/activate", json={"reason": "rollback"})
    assert r.status_code == 200 and r.json()["previous"] == "v2" and r.json()["version"] == "v1"
    moves = [(h["from_version"], h["to_version"]) for h in r.json()["history"]]
    assert moves == [("v2", "v1"), ("v1", "v2"), (None, "v1")]
    assert r.json()["history"][0]["reason"] == "rollback"
    assert [t["name"] for t in client.get("/tasks").json()] == ["mortality"]  # rolled back tasks too
    assert client.get("/tasks/los").status_code == 404
    # The duplicate key still answers the first job, even though `active` moved since.
    assert (
        client.post("/tasks", json=body, headers={"Idempotency-Key": "stage-los-1"}).json()["job_id"]
        == job_id
    )


def test_same_key_different_request_conflicts_and_bad_specs_422(client, icu, v1):  # type: ignore[no-untyped-def]
    body = _stage_body(client, icu)
    assert client.post("/tasks", json=body, headers={"Idempotency-Key": "k"}).status_code == 202
    other = {**body, "options": {"epochs": 2}}
    r = client.post("/tasks", json=other, headers={"Idempotency-Key": "k"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "idempotency_key"
    served = {**body, "tasks": [{**LOS, "name": "mortality"}]}
    r = client.post("/tasks", json=served)
    assert r.status_code == 409 and r.json()["error"]["code"] == "task_exists"
    assert r.json()["error"]["field"] == "tasks[0].name" and "served" in r.json()["error"]["message"]
    ghost = {**body, "tasks": [{**LOS, "name": "los2", "modalities": ["ghost"]}]}
    r = client.post("/tasks", json=ghost)
    assert r.status_code == 422 and r.json()["error"]["code"] == "spec_invalid"
    missing = {
        **body,
        "tasks": [{**LOS, "name": "los2"}],
        "datasets": {"train": "nope", "validation": "nope"},
    }
    assert client.post("/tasks", json=missing).status_code == 404
    negative = {**body, "options": {"refit_epochs": -1}}
    r = client.post("/tasks", json=negative)
    assert r.status_code == 422 and r.json()["error"]["field"] == "options.refit_epochs", r.text
    drain(client)


def test_failed_job_keeps_error_and_versions(client, icu, v1, settings):  # type: ignore[no-untyped-def]
    settings.capacity_rank_budget = 1
    r = client.post("/tasks", json=_stage_body(client, icu, rank=3))
    drain(client)
    job = client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["state"] == "failed" and "budget" in job["error"] and job["result_version"] is None
    assert [m["version"] for m in client.get("/models").json()] == ["v1"]
    assert client.get("/models/v1").json()["aliases"] == ["active"]
    assert client.get("/jobs/does-not-exist").status_code == 404
