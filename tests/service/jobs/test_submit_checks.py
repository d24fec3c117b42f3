"""POST /tasks refuses before 202 what would only fail (or silently lose a task) inside the job:
a task already served or already being added (409), datasets without labels for a new task or
with samples that carry none of its modalities (422 naming the dataset field), a `min_metric` the
task's head never reports (422). No job row exists after a refusal."""

from __future__ import annotations

from service.registry import service as registry

from .conftest import LOS, only_labels, stage_request, upload


def _jobs(session_factory) -> list:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return registry.list_jobs(session=s)


def test_task_served_by_active_is_409_naming_the_field(client, icu, v1, session_factory):  # type: ignore[no-untyped-def]
    body = stage_request(client, icu, LOS)
    body["tasks"] = [LOS, {**LOS, "name": "mortality"}]
    r = client.post("/tasks", json=body)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "task_exists" and error["field"] == "tasks[1].name"
    assert "'mortality'" in error["message"] and "v1" in error["message"]
    assert _jobs(session_factory) == []


def test_task_added_by_a_queued_job_is_409(client, icu, v1, session_factory):  # type: ignore[no-untyped-def]
    body = stage_request(client, icu, LOS)
    with session_factory.begin() as s:  # queued and never enqueued: it stays queued for this test
        pending = registry.create_job(session=s, kind="stage", request=body).id
    r = client.post("/tasks", json=body, headers={"Idempotency-Key": "another-client"})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "task_exists" and error["field"] == "tasks[0].name"
    assert pending in error["message"] and "queued" in error["message"]
    assert [j.id for j in _jobs(session_factory)] == [pending]
    with session_factory.begin() as s:  # once that job has failed, the name is free again
        registry.mark_running(session=s, job_id=pending)
        registry.mark_failed(session=s, job_id=pending, error="test")
    r = client.post("/tasks", json={**body, "options": {"epochs": 1, "refit_epochs": 0}})
    assert r.status_code == 202, r.text


def test_validation_without_labels_for_the_new_task_is_422(client, icu, v1, session_factory):  # type: ignore[no-untyped-def]
    body = stage_request(client, icu, LOS)
    body["datasets"]["validation"] = upload(client, only_labels(icu.splits["val"], ["mortality"]), name="val")
    r = client.post("/tasks", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "dataset_unsuitable" and error["field"] == "datasets.validation"
    assert "no labels for the new task 'los'" in error["message"]
    assert body["datasets"]["validation"] in error["message"]
    assert _jobs(session_factory) == []


def test_samples_without_any_of_the_tasks_modalities_are_422(client, icu, v1, session_factory):  # type: ignore[no-untyped-def]
    body = stage_request(client, icu, LOS)  # uploaded for los on vitals, labs and notes
    body["tasks"] = [{**LOS, "modalities": ["cxr"]}]  # the same data, but los now reads cxr only
    lacking = sum("cxr" not in s["modalities"] for s in only_labels(icu.splits["train"], ["los"]))
    assert lacking > 0
    r = client.post("/tasks", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "dataset_unsuitable" and error["field"] == "datasets.train"
    assert f"{lacking} of " in error["message"] and "'los'" in error["message"] and "cxr" in error["message"]
    with session_factory() as s:  # the summary that told it so
        summary = registry.get_dataset(session=s, dataset_id=body["datasets"]["train"]).summary
    assert sum(summary["modality_sets"].values()) == summary["n_samples"]
    assert _jobs(session_factory) == []


def test_old_summary_without_modality_sets_is_checked_on_what_it_has(client, icu, v1, session_factory):  # type: ignore[no-untyped-def]
    body = stage_request(client, icu, LOS)
    body["tasks"] = [{**LOS, "modalities": ["cxr"]}]
    with session_factory.begin() as s:  # as stored before modality_sets existed, with no cxr at all
        row = registry.get_dataset(session=s, dataset_id=body["datasets"]["train"])
        row.summary = {k: v for k, v in row.summary.items() if k != "modality_sets"} | {
            "modalities": {"vitals": 1, "labs": 1}
        }
    r = client.post("/tasks", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == "datasets.train", r.text


def test_min_metric_the_head_does_not_report_is_422(client, icu, v1, session_factory):  # type: ignore[no-untyped-def]
    body = stage_request(client, icu, LOS, min_metric={"mse": 0.1})
    r = client.post("/tasks", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "options.min_metric.mse" and "binary" in r.json()["error"]["message"]
    r = client.post("/tasks", json={**body, "options": {"min_metric": {"kappa": 0.1}}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "options.min_metric.kappa.[key]", r.text
    assert _jobs(session_factory) == []
