"""GET /jobs on both databases: newest first, filtered by state, kind and creator, paged."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

from service.jobs.models import JOB_STATES
from service.jobs.router import JobState
from service.orm import utcnow
from service.registry import service as registry

# (kind, created_by, end state) in creation order
JOBS = [
    ("stage", "key:a", "queued"),
    ("stage", "key:b", "failed"),
    ("export", "key:b", "queued"),
    ("stage", "key:a", "cancelled"),
    ("export", "key:a", "failed"),
]


def _make_jobs(session_factory) -> list[str]:  # type: ignore[no-untyped-def]
    start = utcnow() - timedelta(hours=1)
    ids = []
    with session_factory.begin() as s:
        for i, (kind, by, state) in enumerate(JOBS):
            job = registry.create_job(session=s, kind=kind, request={"n": i}, created_by=by)
            job.created_at = start + timedelta(seconds=i)
            if state == "failed":
                registry.mark_failed(session=s, job_id=job.id, error="boom")
            elif state == "cancelled":
                registry.request_cancel(session=s, job_id=job.id, by=by)
            ids.append(job.id)
    return ids


def _ids(client, **params):  # type: ignore[no-untyped-def]
    r = client.get("/jobs", params=params)
    assert r.status_code == 200, r.text
    return [j["job_id"] for j in r.json()["jobs"]], r.json()["next_offset"]


def test_list_jobs_filters_and_pages_newest_first(client, session_factory):  # type: ignore[no-untyped-def]
    ids = _make_jobs(session_factory)
    newest_first = ids[::-1]
    assert _ids(client) == (newest_first, None)
    assert _ids(client, state="failed") == ([ids[4], ids[1]], None)
    assert _ids(client, state="queued", kind="stage") == ([ids[0]], None)
    assert _ids(client, created_by="key:b") == ([ids[2], ids[1]], None)
    assert _ids(client, kind="export", created_by="key:a") == ([ids[4]], None)
    assert _ids(client, state="running") == ([], None)

    assert _ids(client, limit=2) == (newest_first[:2], 2)
    assert _ids(client, limit=2, offset=2) == (newest_first[2:4], 4)
    assert _ids(client, limit=2, offset=4) == (newest_first[4:], None)
    assert _ids(client, state="failed", limit=1) == ([ids[4]], 1)

    job = client.get("/jobs", params={"state": "cancelled"}).json()["jobs"][0]
    assert job["state"] == "cancelled" and job["kind"] == "stage" and job["created_by"] == "key:a"
    for bad in ({"state": "paused"}, {"limit": 0}, {"limit": 201}, {"offset": -1}, {"offset": 3 * 10**21}):
        r = client.get("/jobs", params=bad)
        assert r.status_code == 422 and r.json()["error"]["field"] == f"query.{next(iter(bad))}", r.text


def test_the_route_offers_every_job_state():
    assert get_args(JobState) == JOB_STATES
