"""POST /jobs/{id}/cancel on the in-process queue, on both databases: a queued job is cancelled at
once and never runs; a running one stops at its next epoch and registers nothing."""

from __future__ import annotations

from service.registry import service as registry

from .conftest import drain, job_row, stage_job, wait_for


def test_cancel_a_queued_job_at_once(client, session_factory, store, icu, v1):  # type: ignore[no-untyped-def]
    job_id = stage_job(session_factory, store, icu)  # created, not yet taken by a worker
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled" and "anonymous" in r.json()["error"]
    client.app.state.job_queue.put(job_id)  # a late delivery does not run it
    drain(client)
    job = job_row(session_factory, job_id)
    assert (job.state, job.attempts, job.result_version) == ("cancelled", 0, None)
    assert client.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelled"  # idempotent
    assert client.post("/jobs/nope/cancel").status_code == 404


def test_cancel_a_running_job_stops_it_at_the_next_epoch(client, session_factory, store, icu, v1):  # type: ignore[no-untyped-def]
    job_id = stage_job(session_factory, store, icu, epochs=60, patience=100, refit_epochs=0)
    client.app.state.job_queue.put(job_id)
    wait_for(lambda: job_row(session_factory, job_id).progress.get("epoch"), 120, "the first epoch")
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "running" and r.json()["cancel_requested"] is True
    drain(client)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and job["result_version"] is None, job
    assert "while running" in job["error"] and job["progress"]["epoch"] < 60
    assert [m["version"] for m in client.get("/models").json()] == [v1]
    assert client.get(f"/models/{v1}").json()["aliases"] == ["active"]
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


def test_a_finished_job_cannot_be_cancelled(client, session_factory, store, icu, v1):  # type: ignore[no-untyped-def]
    job_id = stage_job(session_factory, store, icu)
    with session_factory.begin() as s:
        registry.mark_failed(session=s, job_id=job_id, error="boom")
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "already failed" in r.json()["error"]["message"]
    assert job_row(session_factory, job_id).state == "failed"
