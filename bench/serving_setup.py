"""The serving benchmark's fixtures: a scratch registry with the demo model (v1, one stage) and the
same model with 19 more continual stages stacked on it (not active), API keys, request bodies, and
the in-process ceiling (raw forward, and validation + collation + forward).

Used by `bench/serving.py`; nothing here starts a server.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flame_core.collate import collate
from flame_core.continual import ContinualFlame
from flame_core.heads import predict_outputs
from flame_core.invariance import fixed_lengths, make_batch_invariant, pad_rows
from flame_core.validation import validate_sample

TASK = "mortality"


@dataclass
class Registry:
    home: Path
    v1: str  # the demo model, one stage, active
    v20: str  # v1 plus 19 continual stages (mortality still at cursor 0), not active
    predict_token: str  # a key with the `predict` scope (what the load sends)
    admin_token: str  # the bootstrap admin key (to move `active`)
    model: ContinualFlame  # v1, in this process (the ceiling and the naive anchor load v1 too)
    samples: list[dict]  # demo validation samples without labels: {"id", "modalities"}
    stage_s: float  # seconds the 19 extra stages took to train


def unlabelled(samples: list[dict]) -> list[dict]:
    return [{"id": s.get("id", str(i)), "modalities": s["modalities"]} for i, s in enumerate(samples)]


def _stack_stages(cl: ContinualFlame, train: list[dict], val: list[dict], n_stages: int) -> None:
    """`n_stages` more stages on `cl`, each one new binary task on vitals + labs trained for one
    epoch on a few samples (cheap: the point is how many stages are stacked, not their quality)."""
    from flame_core.stage_fit import fit_stage
    from flame_core.strategies.flame import FlameStrategy
    from flame_core.training import TrainConfig
    from service.jobs.specs import stage_specs

    def labelled(samples: list[dict], task: str) -> list[dict]:
        rows = [s for s in samples if s["labels"].get("los") is not None]
        rows = [s for s in rows if {"vitals", "labs"} & set(s["modalities"])]
        return [{"modalities": s["modalities"], "labels": {task: s["labels"]["los"]}} for s in rows]

    for i in range(1, n_stages + 1):
        task = f"bench_t{i:02d}"
        spec = {"tasks": [{"name": task, "modalities": ["vitals", "labs"], "head": {"type": "binary"}}]}
        new = stage_specs(cl.specs, spec)
        strategy = FlameStrategy.resume(cl, rank=1, refit_epochs=0)
        config = TrainConfig(epochs=1, batch_size=64, seed=i, device="cpu", progress=False)
        fit_stage(strategy, new, labelled(train, task), labelled(val, task), config)
    cl.eval()


def build_registry(home: Path, *, epochs: int, stages: int = 19) -> Registry:
    """Migrate a SQLite registry under `home`, register the demo model (trained `epochs`) as the
    active v1 and the same model plus `stages` stages as a second root, then mint the keys with the
    project's own functions (`flame bootstrap` mints the admin key; a predict key beside it)."""
    from flame_core.benchmarks import load_benchmark
    from service.artifacts import LocalArtifactStore
    from service.auth.service import create_api_key
    from service.cli.bootstrap import bootstrap
    from service.cli.registry import run_migrations
    from service.cli.serve import DEMO_N, build_demo_model, demo_validation, register_model
    from service.db import make_engine, make_session_factory, session_scope
    from service.registry.versions import register_version
    from service.settings import Settings
    from service.versioning import root_records, version_files

    settings = Settings(home=home)
    run_migrations(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    store = LocalArtifactStore(settings.artifact_root)
    cl, metrics = build_demo_model(epochs=epochs)
    v1 = register_model(session_factory=factory, store=store, cl=cl, metrics=metrics, note="bench v1").id
    _, admin = bootstrap(settings)  # a model is active: it only mints the first admin key
    if admin is None:
        raise RuntimeError("bootstrap minted no admin key (is FLAME_AUTH_ENABLED false?)")

    # The 20-stage model: a copy of v1 (through the service's file format), stages stacked on it.
    stacked = _reload(cl)
    data = load_benchmark("synthetic-icu", n=DEMO_N, seed=0)
    t0 = time.perf_counter()
    _stack_stages(stacked, list(data.splits["train"])[:128], list(data.splits["val"])[:64], stages)
    stage_s = time.perf_counter() - t0
    components, tasks, modalities = root_records(stacked)
    with session_scope(factory) as session:
        v20 = register_version(
            session=session,
            store=store,
            parent=None,
            files=version_files(stacked),
            moved_by="bench",
            components=components,
            tasks=tasks,
            modalities=modalities,
            move_alias=None,
            reason="register",
            note=f"bench: v1 plus {stages} stages",
        ).id
        _, predict = create_api_key(session=session, name="bench-predict", scopes=["predict"])
    engine.dispose()
    return Registry(home, v1, v20, predict, admin, cl, unlabelled(demo_validation()), stage_s)


def _reload(cl: ContinualFlame) -> ContinualFlame:
    """An independent copy of `cl` through the service's own file format."""
    from safetensors.torch import load as load_safetensors

    from flame_core.checkpoint import build_continual
    from service.versioning import MANIFEST, WEIGHTS, version_files

    files = version_files(cl)
    return build_continual(json.loads(files[MANIFEST]), load_safetensors(files[WEIGHTS])).eval()


def bodies(samples: list[dict], n: int) -> tuple[bytes, bytes]:
    """(one sample, `{"instances": [n samples]}`) as JSON bytes."""
    return json.dumps(samples[0]).encode(), json.dumps({"instances": samples[:n]}).encode()


def _timed(fn, seconds: float, min_reps: int = 5) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_reps or time.perf_counter() < deadline:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def ceiling(
    cl: ContinualFlame, samples: list[dict], batch: int, seconds: float, device: str
) -> dict[str, Any]:
    """Raw forward of the task's cursor model on a pre-collated batch, and the same with
    validation + collation + output shaping (what the service does per request), both as served
    (batch-invariant: fixed lengths, whole row tiles) and, for the invariance cost, with natural
    padding (each batch padded to its longest sample)."""
    dev = torch.device(device)
    specs, tokenizer = cl.specs, cl.config.tokenizer()
    spec = specs.tasks[TASK]
    rows = (samples * (batch // len(samples) + 1))[:batch]
    out: dict[str, Any] = {"batch": batch}
    for invariant in (False, True):  # natural first: make_batch_invariant changes shared modules
        model = cl.cursor_model(cl.cursor[TASK]).eval().to(dev)
        lengths = fixed_lengths(specs, cl.config) if invariant else None
        if invariant:
            make_batch_invariant(model)

        def prepare(valid: list[dict], lengths: dict[str, int] | None = lengths, invariant: bool = invariant):  # type: ignore[no-untyped-def]
            b = collate(valid, specs, tasks=[TASK], tokenizer=tokenizer, lengths=lengths)
            return pad_rows(b) if invariant else b

        pre = prepare([validate_sample(s, specs, [TASK]) for s in rows]).to(dev)

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def raw(model=model, pre=pre) -> None:  # type: ignore[no-untyped-def]
            with torch.inference_mode():
                model(pre, [TASK])
            sync()

        def full(model=model, prepare=prepare) -> None:  # type: ignore[no-untyped-def]
            b = prepare([validate_sample(s, specs, [TASK], index=i) for i, s in enumerate(rows)])
            with torch.inference_mode():
                res = model(b.to(dev), [TASK])
                predict_outputs(spec.head, res.outputs[TASK]).cpu()
            sync()

        for name, fn in (("raw", raw), ("full", full)):
            times = _timed(fn, seconds)
            med = statistics.median(times)
            key = name if invariant else f"{name}_natural"
            out[key] = {"median_ms": med * 1000, "samples_s": batch / med, "reps": len(times)}
    return out
