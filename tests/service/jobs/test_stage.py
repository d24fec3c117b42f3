"""`run_stage`: a queued job becomes a child version; failures leave the registry untouched."""

from __future__ import annotations

import json

import pytest
import torch

from flame_core.collate import collate
from flame_core.validation import validate_dataset
from service.jobs.specs import stage_specs
from service.jobs.stage import run_stage
from service.registry import service as registry
from service.versioning import load_version

from .conftest import LOS, only_labels


def _dataset(session_factory, store, samples, name):  # type: ignore[no-untyped-def]
    data = "\n".join(json.dumps(s) for s in samples).encode()
    with session_factory.begin() as s:
        return registry.create_dataset(
            session=s, store=store, name=name, content=data, n_samples=len(samples)
        ).id


def _job(session_factory, store, icu, parent, tasks, modalities=None, options=None, cxr2=False):  # type: ignore[no-untyped-def]
    def export(split):  # type: ignore[no-untyped-def]
        out = only_labels(icu.splits[split], ["los"])
        if cxr2:
            out = [
                {
                    **s,
                    "modalities": {
                        **s["modalities"],
                        **({"cxr2": s["modalities"]["cxr"]} if "cxr" in s["modalities"] else {}),
                    },
                }
                for s in out
            ]
        return out

    ids = {k: _dataset(session_factory, store, export(k), k) for k in ("train", "val", "test")}
    request = {
        "modalities": modalities or {},
        "tasks": tasks,
        "datasets": {"train": ids["train"], "validation": ids["val"], "test": ids["test"]},
        "options": {
            "epochs": 2,
            "rank": "auto",
            "energy": 0.9,
            "seed": 0,
            "activate": True,
            **(options or {}),
        },
    }
    with session_factory.begin() as s:
        return registry.create_job(session=s, kind="stage", request=request, parent_version=parent).id


def _mortality(store, session_factory, version, batch):  # type: ignore[no-untyped-def]
    with session_factory() as s:
        row = registry.get_version(session=s, version=version)
    cl = load_version(store, row)
    with torch.no_grad():
        return cl(batch, ["mortality"]).outputs["mortality"]


def test_stage_with_new_modality_keeps_old_task_bit_exact(
    session_factory, store, settings, icu, v1, pretrained
):  # type: ignore[no-untyped-def]
    task = {**LOS, "modalities": ["vitals", "labs", "cxr2"]}
    job_id = _job(
        session_factory, store, icu, v1, [task], {"cxr2": {"kind": "embedding", "dim": 32}}, cxr2=True
    )
    version = run_stage(job_id, session_factory=session_factory, store=store, settings=settings)
    assert version == "v2"
    with session_factory() as s:
        job = registry.get_job(session=s, job_id=job_id)
        assert job.state == "succeeded" and job.result_version == "v2" and job.error is None
        assert job.progress["phase"] == "registering" and job.progress["epochs"] == 2
        assert 0.0 <= job.metrics["tasks"]["los"]["auroc"] <= 1.0
        assert registry.resolve_alias(session=s).id == "v2"
        los = registry.get_task(session=s, name="los", version="v2")
        assert los.cursor == 1 and los.metrics == job.metrics["tasks"]["los"]
        assert [m.name for m in registry.list_modalities(session=s, version="v2")][-1] == "cxr2"
        assert registry.reserved_rank(session=s, version="v2")  # stage 1 reserved some rank
    specs = icu.specs.subset(["mortality"])
    fixed = validate_dataset(only_labels(icu.splits["test"][:16], ["mortality"]), specs, ["mortality"])
    batch = collate(fixed, specs, tasks=["mortality"], tokenizer=pretrained["cl"].config.tokenizer())
    before = _mortality(store, session_factory, "v1", batch)
    after = _mortality(store, session_factory, "v2", batch)
    assert torch.equal(before, after)
    with session_factory() as s:  # the new task's input ranges are stored with the version
        ranges = load_version(store, registry.get_version(session=s, version="v2")).training_ranges
    assert set(ranges["los"]) == {"vitals", "labs", "cxr2"} and len(ranges["los"]["cxr2"]["values"]) == 32
    # Idempotent: a redelivered finished job returns its version and registers nothing new.
    assert run_stage(job_id, session_factory=session_factory, store=store, settings=settings) == "v2"
    with session_factory() as s:
        assert [v.id for v in registry.list_versions(session=s)] == ["v1", "v2"]


def test_capacity_exceeded_fails_job_and_changes_nothing(session_factory, store, settings, icu, v1):  # type: ignore[no-untyped-def]
    tight = settings.model_copy(update={"capacity_rank_budget": 1})
    job_id = _job(session_factory, store, icu, v1, [LOS], options={"rank": 2, "epochs": 1})
    assert run_stage(job_id, session_factory=session_factory, store=store, settings=tight) is None
    with session_factory() as s:
        job = registry.get_job(session=s, job_id=job_id)
        assert job.state == "failed" and "CapacityExceeded" in job.error and "budget 1" in job.error
        assert [v.id for v in registry.list_versions(session=s)] == ["v1"]
        assert registry.list_aliases(session=s) == {"active": "v1"}
        assert len(registry.alias_history(session=s, alias="active")) == 1


def test_invalid_dataset_fails_job_with_field(session_factory, store, settings, icu, v1):  # type: ignore[no-untyped-def]
    job_id = _job(session_factory, store, icu, v1, [{**LOS, "head": {"type": "multiclass", "classes": 3}}])
    bad = _dataset(
        session_factory, store, [{"modalities": {"labs": {"values": [1.0]}}, "labels": {"los": 1}}], "bad"
    )
    with session_factory.begin() as s:
        job = registry.get_job(session=s, job_id=job_id)
        job.request = {**job.request, "datasets": {**job.request["datasets"], "train": bad}}
    assert run_stage(job_id, session_factory=session_factory, store=store, settings=settings) is None
    with session_factory() as s:
        job = registry.get_job(session=s, job_id=job_id)
        assert job.state == "failed" and "train dataset" in job.error and "modalities.labs" in job.error
        assert registry.list_aliases(session=s) == {"active": "v1"}


def test_stage_specs_resolve_known_and_inline_modalities(icu):  # type: ignore[no-untyped-def]
    base = icu.specs.subset(["mortality"])
    new = stage_specs(
        base,
        {
            "modalities": {"ecg": {"kind": "timeseries", "dim": 2}},
            "tasks": [{"name": "arrhythmia", "modalities": ["ecg", "vitals"], "head": {"type": "binary"}}],
        },
    )
    assert set(new.modalities) == {"ecg", "vitals"} and new.modalities["vitals"] == base.modalities["vitals"]
    with pytest.raises(ValueError, match="already exist"):
        stage_specs(
            base, {"tasks": [{"name": "mortality", "modalities": ["labs"], "head": {"type": "binary"}}]}
        )
    with pytest.raises(ValueError, match="neither the model"):
        stage_specs(base, {"tasks": [{"name": "x", "modalities": ["ghost"], "head": {"type": "binary"}}]})
    with pytest.raises(ValueError, match="already declared"):
        stage_specs(
            base,
            {
                "modalities": {"labs": {"kind": "tabular", "dim": 3}},
                "tasks": [{"name": "x", "modalities": ["labs"], "head": {"type": "binary"}}],
            },
        )


def test_service_job_and_stream_runner_fit_the_same_stage(
    session_factory, store, settings, icu, v1, pretrained
):  # type: ignore[no-untyped-def]
    """One stage procedure (`flame_core.stage_fit.fit_stage`): the benchmark runner and the service's
    job, from the same parent, data and seed, produce the same stage bit for bit."""
    from flame_core.benchmarks.base import BenchmarkData
    from flame_core.checkpoint import continual_tensors
    from flame_core.strategies import build_strategy
    from flame_core.stream import run_stream
    from flame_core.training import TrainConfig

    options = {"epochs": 2, "rank": "auto", "energy": 0.9, "refit_epochs": 1, "seed": 1}
    job_id = _job(session_factory, store, icu, v1, [LOS], options=options)
    assert run_stage(job_id, session_factory=session_factory, store=store, settings=settings) == "v2"
    with session_factory() as s:
        served = load_version(store, registry.get_version(session=s, version="v2"))

    splits = {k: only_labels(icu.splits[k], ["los"]) for k in ("train", "val", "test")}
    data = BenchmarkData(name="icu", specs=icu.specs.subset(["mortality", "los"]), splits=splits)
    strategy = build_strategy("flame", rank="auto", energy=0.9, refit_epochs=1)
    config = TrainConfig(epochs=2, batch_size=64, lr=2e-3, patience=5, seed=0, device="cpu", progress=False)
    run_stream(
        strategy, data, [["mortality"], ["los"]], train_config=config, pretrained=pretrained["cl"].model
    )
    benchmarked = strategy.module  # stage 1 ran with seed 0 + 1, as the job's seed 1

    a, b = continual_tensors(served), continual_tensors(benchmarked)
    assert a.keys() == b.keys() and any(k.startswith("stage1.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
