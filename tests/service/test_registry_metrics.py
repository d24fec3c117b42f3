"""Metrics read from the registry at scrape time (SQLite and PostgreSQL): every series exists at 0
before the first job, finished jobs are counted by their row's state, durations land in the right
buckets, promotions come from the gate's reports, and the `active` version is exported."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from service.db import make_engine, make_session_factory
from service.jobs.models import Job
from service.orm import utcnow
from service.registry import service as registry
from service.registry_metrics import RegistryCollector

from .jobs.conftest import icu, pretrained, v1  # noqa: F401 - fixtures: v1 registered and active


def scrape(session_factory: sessionmaker) -> CollectorRegistry:
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(RegistryCollector(session_factory))
    return metrics


def finished_job(
    session_factory, *, kind: str, state: str, seconds: float, promotion: dict | None = None
) -> str:  # type: ignore[no-untyped-def]
    with session_factory.begin() as s:
        job = registry.create_job(session=s, kind=kind, request={})
        registry.mark_running(session=s, job_id=job.id)
        if state == "succeeded":
            registry.mark_succeeded(
                session=s, job_id=job.id, metrics={"promotion": promotion} if promotion else {}
            )
        else:
            registry.mark_failed(session=s, job_id=job.id, error="boom")
        end = utcnow()
        s.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(started_at=end - timedelta(seconds=seconds), finished_at=end)
        )
        return job.id


def test_every_series_exists_at_zero_before_the_first_job(session_factory):  # type: ignore[no-untyped-def]
    m = scrape(session_factory)
    assert m.get_sample_value("flame_registry_up") == 1.0
    for kind in ("stage", "scoring"):
        for state in ("succeeded", "failed", "cancelled"):
            labels = {"kind": kind, "state": state}
            assert m.get_sample_value("flame_jobs_finished_total", labels) == 0.0
            assert m.get_sample_value("flame_job_duration_seconds_count", labels) == 0.0
            assert m.get_sample_value("flame_job_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 0.0
        for state in ("queued", "running"):
            assert m.get_sample_value("flame_jobs_unfinished", {"kind": kind, "state": state}) == 0.0
    for outcome in ("promoted", "rejected"):
        assert m.get_sample_value("flame_model_promotions_total", {"outcome": outcome}) == 0.0


@pytest.mark.usefixtures("v1")
def test_jobs_durations_promotions_and_active_come_from_the_rows(session_factory):  # type: ignore[no-untyped-def]
    promoted = {"promoted": True, "status": "ready"}
    held = {"promoted": False, "status": "candidate"}
    not_asked = {"promoted": False, "status": "ready"}  # options.activate false: neither outcome
    finished_job(session_factory, kind="stage", state="succeeded", seconds=3.0, promotion=promoted)
    finished_job(session_factory, kind="stage", state="succeeded", seconds=40.0, promotion=held)
    finished_job(session_factory, kind="stage", state="succeeded", seconds=2.0, promotion=not_asked)
    finished_job(session_factory, kind="stage", state="failed", seconds=0.5)
    finished_job(session_factory, kind="scoring", state="succeeded", seconds=10.0)
    with session_factory.begin() as s:
        registry.create_job(session=s, kind="scoring", request={})  # queued
    m = scrape(session_factory)

    def value(name: str, **labels: str) -> float | None:
        return m.get_sample_value(name, labels)

    assert value("flame_jobs_finished_total", kind="stage", state="succeeded") == 3.0
    assert value("flame_jobs_finished_total", kind="stage", state="failed") == 1.0
    assert value("flame_jobs_finished_total", kind="scoring", state="succeeded") == 1.0
    assert value("flame_jobs_unfinished", kind="scoring", state="queued") == 1.0
    assert value("flame_jobs_unfinished", kind="stage", state="running") == 0.0
    stage_ok = {"kind": "stage", "state": "succeeded"}
    assert value("flame_job_duration_seconds_count", **stage_ok) == 3.0
    assert abs(value("flame_job_duration_seconds_sum", **stage_ok) - 45.0) < 0.01  # type: ignore[operator]
    assert value("flame_job_duration_seconds_bucket", **stage_ok, le="1.0") == 0.0
    assert value("flame_job_duration_seconds_bucket", **stage_ok, le="5.0") == 2.0
    assert value("flame_job_duration_seconds_bucket", **stage_ok, le="30.0") == 2.0
    assert value("flame_job_duration_seconds_bucket", **stage_ok, le="60.0") == 3.0
    assert value("flame_job_duration_seconds_bucket", kind="stage", state="failed", le="1.0") == 1.0
    assert value("flame_model_promotions_total", outcome="promoted") == 1.0
    assert value("flame_model_promotions_total", outcome="rejected") == 1.0
    assert value("flame_registry_active_info", version="v1") == 1.0


def test_an_unreachable_registry_costs_only_its_own_series(tmp_path):  # type: ignore[no-untyped-def]
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    m = scrape(make_session_factory(engine))
    assert m.get_sample_value("flame_registry_up") == 0.0
    assert m.get_sample_value("flame_jobs_finished_total", {"kind": "stage", "state": "failed"}) is None
    engine.dispose()
