"""`run_stage(job_id)`: one continual stage, from a queued job to a registered model version.

The plain, idempotent function behind the Celery task and the in-process queue. Stages are
serialised by `stage_lock` (held in the database for the whole stage): a job waits, still `queued`,
then runs only if it claims the job (`registry.claim_job`: a queued one, or a running one whose
heartbeat went stale because its worker died); a finished job, or one another worker holds with a
fresh heartbeat, is left alone. It resolves its parent, `active`, when it starts, so concurrent
submissions stack one on another. While it trains, a `Lease` heartbeats and checks at every epoch
for a cancel request, a lost lease or a shutdown. The new version passes the promotion gate
(`service.jobs.promotion`) and commits with the job's success in ONE transaction that first checks
the attempt still holds the job (one job makes at most one version), `active` moving by
compare-and-swap from the parent; any failure marks the job failed with its message and changes
nothing else (blobs written before it are unreferenced).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from flame_core.card import task_card
from flame_core.continual import ContinualFlame
from flame_core.stage_fit import fit_stage
from flame_core.strategies.flame import FlameStrategy
from flame_core.training import TrainConfig, evaluate
from service.artifacts import ArtifactStore
from service.datasets.service import DatasetInvalid, read_dataset, validate_lines
from service.db import session_scope
from service.jobs.lease import Lease, plain
from service.jobs.promotion import register_stage_version
from service.jobs.runner import run_claimed
from service.jobs.schemas import StageRequest
from service.jobs.scoring import SCORING_KIND, run_scoring
from service.jobs.specs import stage_specs
from service.jobs.stage_lock import engine_of, stage_lock
from service.registry import service as registry
from service.registry.errors import AliasNotFound
from service.settings import Settings
from service.versioning import load_version

log = logging.getLogger(__name__)


def _load_split(session_factory, store, dataset_id, specs, tasks, split):  # type: ignore[no-untyped-def]
    with session_scope(session_factory) as session:
        row = registry.get_dataset(session=session, dataset_id=dataset_id)
    try:
        return validate_lines(read_dataset(store, row), specs, tasks)
    except DatasetInvalid as e:
        raise ValueError(f"{split} dataset {dataset_id}: {e.message}") from None


def _train_stage(
    lease: Lease, request: StageRequest, parent_id: str, *, session_factory, store, settings
) -> tuple[ContinualFlame, int, dict[str, Any], list[dict], dict[str, dict]]:  # type: ignore[no-untyped-def]
    """Train the stage on the parent; the model, its stage index, the job's metrics, the
    validation samples (the new tasks' canaries are drawn from them) and the new tasks' cards."""
    with session_scope(session_factory) as session:
        parent = registry.get_version(session=session, version=parent_id)
    cl = load_version(store, parent)
    cl.rank_budget = settings.capacity_rank_budget
    new = stage_specs(cl.specs, request.spec_dict())
    full = cl.specs.merge(new)
    tasks = list(new.tasks)
    ds = request.datasets
    train_s = _load_split(session_factory, store, ds.train, full, tasks, "train")
    val_s = _load_split(session_factory, store, ds.validation, full, tasks, "validation")
    test_s = _load_split(session_factory, store, ds.test, full, tasks, "test") if ds.test else val_s
    for split, samples in (("train", train_s), ("validation", val_s)):
        unlabelled = [t for t in tasks if not any(t in s["labels"] for s in samples)]
        if unlabelled:
            raise ValueError(f"{split} dataset has no labels for the new tasks {unlabelled}")

    opts = request.options
    config = TrainConfig(
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        patience=opts.patience,
        seed=opts.seed,
        device=settings.device,
        progress=False,
    )

    def on_epoch(record: dict[str, Any]) -> None:  # each epoch boundary: heartbeat, cancel, shutdown
        lease.report(
            phase="training",
            epoch=record["epoch"],
            epochs=opts.epochs,
            loss=record["loss"],
            val_score=record["val_score"],
        )

    strategy = FlameStrategy.resume(cl, rank=opts.rank, energy=opts.energy, refit_epochs=opts.refit_epochs)
    fit = fit_stage(
        strategy,
        new,
        train_s,
        val_s,
        config,
        on_epoch=on_epoch,
        on_phase=lambda phase: lease.report(phase=phase),
        coverage=opts.coverage,
    )
    result, stage = fit.trained, cl.stages[-1]
    cl.to("cpu").eval()
    # Reported numbers are after truncation, one task per pass (as the service predicts).
    with torch.no_grad():
        metrics = {t: evaluate(cl, cl.specs, test_s, [t])[t] for t in tasks}
    cards = _cards(cl, tasks, train_s, test_s, ds, "test" if ds.test else "validation", session_factory)
    ranks = stage.ranks
    summary = {
        "tasks": metrics,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "ranks": {"mean": sum(ranks.values()) / max(len(ranks), 1), "max": max(ranks.values(), default=0)},
        "stage_params": stage.stored_numel(),
        "evaluated_on": "test" if ds.test else "validation",
    }
    return cl, len(cl.stages) - 1, plain(summary), val_s, cards


def _cards(cl, tasks, train_s, test_s, ds, evaluated_on, session_factory) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """Each new task's system-filled model card, with the datasets it came from (ids and digests)."""
    sources = {}
    with session_scope(session_factory, write=False) as session:
        for split, dataset_id in (("train", ds.train), ("validation", ds.validation), ("test", ds.test)):
            if dataset_id:
                row = registry.get_dataset(session=session, dataset_id=dataset_id)
                sources[split] = {"dataset_id": row.id, "digest": row.digest, "n_samples": row.n_samples}
    return {
        t: plain(
            {**task_card(cl, t, train=train_s, test=test_s), "evaluated_on": evaluated_on, "sources": sources}
        )
        for t in tasks
    }


def run_stage(
    job_id: str,
    *,
    session_factory: sessionmaker[Session],
    store: ArtifactStore,
    settings: Settings,
    stop: threading.Event | None = None,
) -> str | None:
    """Run the job's stage; return the new version id (None if the job failed, was cancelled, was
    handed back because `stop` was set, or is not this call's to run).

    Stages run one at a time (`stage_lock`): a job waits, still `queued`, until the stage before it
    has registered its version, then takes `active` AS IT IS NOW as its parent."""
    with session_scope(session_factory, write=False) as session:
        job = registry.get_job(session=session, job_id=job_id)
        if job.state in ("succeeded", "failed", "cancelled"):
            return job.result_version if job.state == "succeeded" else None
        kind = job.kind
    if kind == SCORING_KIND:  # batch scoring shares the queue, not the stage lock
        run_scoring(job_id, session_factory=session_factory, store=store, settings=settings, stop=stop)
        return None
    with stage_lock(engine_of(session_factory)):
        return _run_locked(job_id, session_factory=session_factory, store=store, settings=settings, stop=stop)


def _run_locked(
    job_id: str,
    *,
    session_factory: sessionmaker[Session],
    store: ArtifactStore,
    settings: Settings,
    stop: threading.Event | None,
) -> str | None:
    def work(lease: Lease, raw_request: dict[str, Any], attempt: int) -> str | None:
        request = StageRequest.model_validate(raw_request)
        with session_scope(session_factory) as session:
            try:
                parent_id = registry.resolve_alias(session=session, alias="active").id
            except AliasNotFound:
                msg = "no model version is active; a stage continues an existing model"
                raise ValueError(msg) from None
            registry.set_parent(session=session, job_id=job_id, version=parent_id)
        cl, index, summary, validation, cards = _train_stage(
            lease, request, parent_id, session_factory=session_factory, store=store, settings=settings
        )
        lease.report(phase="registering")
        version_id = register_stage_version(
            job_id=job_id,
            attempt=attempt,
            cl=cl,
            index=index,
            summary=summary,
            parent=parent_id,
            validation=validation,
            cards=cards,
            options=request.options,
            session_factory=session_factory,
            store=store,
            settings=settings,
        )
        return version_id

    return run_claimed(job_id, work, session_factory=session_factory, settings=settings, stop=stop)
