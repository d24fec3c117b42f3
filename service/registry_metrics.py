"""Metrics read from the registry at scrape time: jobs by state, job durations, promotions, the
`active` version (docs/design.md s7).

A job may run in any process (an API's in-process queue, a Celery worker's prefork child), and a
counter kept in that process is seen only where that process is scraped, starts at 1 when it first
appears (so `increase()` misses the first job) and dies with the process. The jobs table is the
truth instead: every API replica and every worker answers these from the same aggregate queries, so
all targets agree, a failed job is counted as failed exactly when its row says so, and every series
exists at 0 before the first job. Several targets report the same values: aggregate across them with
`max without (instance, job)`, never `sum`.

Finished jobs never change, so the finished counts and the duration histogram only grow (counter
semantics hold) as long as job rows are kept. If the database does not answer, `flame_registry_up`
is 0 and the registry's series are left out of that scrape (the process's own metrics still come).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import Float, and_, case, cast, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.jobs.models import FINISHED_JOB_STATES, Job
from service.registry.models import Alias

log = logging.getLogger("flame.metrics")

JOB_KINDS = ("stage", "scoring")  # service.jobs.service.STAGE_KIND, service.jobs.scoring.SCORING_KIND
UNFINISHED_JOB_STATES = ("queued", "running")
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
SAME_EVERYWHERE = " From the registry at scrape time, the same on every target: max without (instance, job)."


def _seconds(session: Session, start: Any, end: Any) -> Any:
    """`end - start` in seconds, in the database's own dialect."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return cast(func.extract("epoch", end - start), Float)


class RegistryCollector:
    """A prometheus-client collector over the registry; `collect()` runs four small aggregate queries."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def describe(self) -> list[Metric]:
        return []  # no describe-time queries: registering this collector must not touch the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("flame_registry_up", "1 if this scrape read the registry, 0 if it failed.")
        try:
            with session_scope(self.session_factory, write=False) as session:
                metrics = list(self._read(session))
        except Exception as e:  # noqa: BLE001 - a database outage must not cost the process's own metrics
            log.warning("registry metrics unavailable: %s", type(e).__name__)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from metrics

    def _read(self, session: Session) -> Iterator[Metric]:
        yield from self._job_counts(session)
        yield self._job_durations(session)
        yield self._promotions(session)
        yield self._active(session)

    def _job_counts(self, session: Session) -> Iterator[Metric]:
        rows = session.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state))
        counts = {(kind, state): n for kind, state, n in rows}
        kinds = sorted(set(JOB_KINDS) | {k for k, _ in counts})
        finished = CounterMetricFamily(
            "flame_jobs_finished",
            "Jobs that ended in each state (succeeded, failed, cancelled), by kind." + SAME_EVERYWHERE,
            labels=["kind", "state"],
        )
        unfinished = GaugeMetricFamily(
            "flame_jobs_unfinished",
            "Jobs queued or running now, by kind." + SAME_EVERYWHERE,
            labels=["kind", "state"],
        )
        for kind in kinds:
            for state in FINISHED_JOB_STATES:
                finished.add_metric([kind, state], counts.get((kind, state), 0))
            for state in UNFINISHED_JOB_STATES:
                unfinished.add_metric([kind, state], counts.get((kind, state), 0))
        yield finished
        yield unfinished

    def _job_durations(self, session: Session) -> Metric:
        seconds = _seconds(session, Job.started_at, Job.finished_at)
        columns = [func.count(), func.coalesce(func.sum(seconds), 0.0)]
        columns += [func.sum(case((seconds <= le, 1), else_=0)) for le in JOB_BUCKETS]
        query = (
            select(Job.kind, Job.state, *columns)
            .where(and_(Job.state.in_(FINISHED_JOB_STATES), Job.started_at.is_not(None)))
            .group_by(Job.kind, Job.state)
        )
        found = {(row[0], row[1]): row[2:] for row in session.execute(query)}
        family = HistogramMetricFamily(
            "flame_job_duration_seconds",
            "Wall time of finished jobs that ran, from their first start to their end (retries "
            "included), by kind and final state." + SAME_EVERYWHERE,
            labels=["kind", "state"],
        )
        kinds = sorted(set(JOB_KINDS) | {k for k, _ in found})
        for kind in kinds:
            for state in FINISHED_JOB_STATES:
                count, total, *per_bucket = found.get((kind, state), (0, 0.0, *([0] * len(JOB_BUCKETS))))
                buckets = [(repr(le), float(n or 0)) for le, n in zip(JOB_BUCKETS, per_bucket, strict=True)]
                family.add_metric([kind, state], [*buckets, ("+Inf", float(count))], float(total or 0.0))
        return family

    def _promotions(self, session: Session) -> Metric:
        """From succeeded stage jobs' gate reports (`metrics.promotion`, service/jobs/promotion.py):
        promoted (active moved) or rejected (kept as a candidate by the gate)."""
        promotion = Job.metrics["promotion"]
        promoted = promotion["promoted"].as_boolean()
        status = promotion["status"].as_string()
        query = select(
            func.sum(case((promoted.is_(True), 1), else_=0)),
            func.sum(case((status == "candidate", 1), else_=0)),
        ).where(and_(Job.kind == "stage", Job.state == "succeeded"))
        n_promoted, n_rejected = session.execute(query).one()
        family = CounterMetricFamily(
            "flame_model_promotions",
            "Stage versions through the promotion gate: promoted (active moved) or rejected (kept as a "
            "candidate)." + SAME_EVERYWHERE,
            labels=["outcome"],
        )
        family.add_metric(["promoted"], n_promoted or 0)
        family.add_metric(["rejected"], n_rejected or 0)
        return family

    def _active(self, session: Session) -> Metric:
        family = GaugeMetricFamily(
            "flame_registry_active_info",
            "The version the registry's `active` alias points at (1); compare with each replica's "
            "flame_model_info." + SAME_EVERYWHERE,
            labels=["version"],
        )
        row = session.get(Alias, "active")
        if row is not None:
            family.add_metric([row.version_id], 1.0)
        return family
