"""The app a fuzz run talks to, and the prediction inputs a JSON-schema generator would not make.

`build_env` trains a tiny FLAME on synthetic-icu (plus a regression task), registers it on a SQLite
registry, stores a dataset and a job, and makes one API key per scope. `prediction_bodies` builds
bodies from real samples with perturbed values, on real task names, so the fuzz reaches the model
and not only the 404s; `HOSTILE` are raw requests no JSON serializer sends.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from sqlalchemy import Engine

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.specs import SpecSet
from flame_core.training import TrainConfig, fit
from service.app import create_app
from service.artifacts import LocalArtifactStore
from service.auth.service import create_api_key
from service.cli.serve import register_model
from service.datasets.service import upload_dataset
from service.db import load_models, make_engine, make_session_factory, session_scope
from service.jobs.schemas import STAGE_EXAMPLES, StageRequest
from service.registry import service as registry
from service.settings import Settings

SCOPES = ("predict", "train", "admin")
TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
IDEMPOTENCY_KEY = "fuzz-replay"
STAGE_REPLAY = STAGE_EXAMPLES["new_task"]["value"]
REGRESSION = {"name": "los_hours", "modalities": ["vitals", "labs"], "head": {"type": "regression"}}


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> dict[str, Any]:
    return {"data": value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")}


@dataclass
class FuzzEnv:
    app: FastAPI
    schema: Any  # schemathesis.openapi schema of the app's /openapi.json
    tokens: dict[str, str]  # caller -> bearer token
    tasks: list[str]
    samples: list[dict[str, Any]]
    known: dict[str, list[str]]  # path parameter -> ids that exist
    engine: Engine


def _with_regression_labels(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in samples:
        hours = s["modalities"].get("vitals", {}).get("times", [0.0])[-1]
        out.append({**s, "labels": {**s["labels"], "los_hours": float(hours)}})
    return out


def build_env(root: Path, *, n: int = 200, epochs: int = 1) -> FuzzEnv:
    """A served, trained tiny model on a SQLite registry under `root`, with keys, a dataset and a job."""
    settings = Settings(
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_root=root / "artifacts",
        device="cpu",
        max_instances=8,
        max_body_bytes=256 * 1024,
        log_level="CRITICAL",
    )
    engine = make_engine(settings.database_url)
    load_models().create_all(engine)
    factory = make_session_factory(engine)
    store = LocalArtifactStore(settings.artifact_root)
    data = load_benchmark("synthetic-icu", n=n)
    d = data.specs.to_dict()
    d["tasks"] = [t for t in d["tasks"] if t["name"] != "readmission"] + [REGRESSION]
    specs = SpecSet.from_dict(d)
    train, val = (_with_regression_labels(data.splits[k]) for k in ("train", "val"))
    model, _ = fit(
        specs,
        train,
        val,
        model_config=TINY,
        train_config=TrainConfig(epochs=epochs, device="cpu", progress=False, seed=0),
        tasks=list(specs.tasks),
    )
    version = register_model(session_factory=factory, store=store, cl=ContinualFlame(model.cpu().eval())).id
    with session_scope(factory) as session:
        tokens = {s: create_api_key(session=session, name=s, scopes=[s])[1] for s in SCOPES}
        # Keys the fuzzer may revoke (DELETE /keys/{key_id}), never the ones it calls with.
        spare = [
            create_api_key(session=session, name=f"spare-{i}", scopes=["predict"])[0].id for i in range(8)
        ]
        plain = [{"id": s["id"], "modalities": s["modalities"]} for s in data.splits["test"][:5]]
        jsonl = "\n".join(json.dumps(s) for s in plain).encode()
        dataset = upload_dataset(session=session, store=store, name="fuzz", data=jsonl, created_by="fuzz")
        # A queued job behind an Idempotency-Key: replaying its request answers 202 without training.
        job = registry.create_job(
            session=session,
            kind="stage",
            request=StageRequest.model_validate(STAGE_REPLAY).model_dump(mode="json"),
            idempotency_key=IDEMPOTENCY_KEY,
            created_by="fuzz",
        )
        known = {
            "dataset_id": [dataset.id],
            "job_id": [job.id],
            "version": [version],
            "name": list(specs.tasks),
            "task": list(specs.tasks),
            "key_id": spare,
        }
    app = create_app(settings, reload_interval_s=3600)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    samples = [{"id": s["id"], "modalities": s["modalities"]} for s in data.splits["test"][:20]]
    return FuzzEnv(app, schema, tokens, list(specs.tasks), samples, known, engine)


def close_env(env: FuzzEnv) -> None:
    """Stop the app's lifespan (schemathesis' in-process transport started it) and the engine."""
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()
    env.engine.dispose()


NASTY = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([1e38, -1e38, 3.4e38, 1e300, -1e300, 1.7e308, -0.0, 5e-324, None, True, "7", [], {}]),
)


def _numeric_slots(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every number inside a payload, so one can be replaced."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    out = []
    for key, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((node, key))
        else:
            out.extend(_numeric_slots(value))
    return out


def prediction_bodies(env: FuzzEnv) -> st.SearchStrategy[tuple[str, Any]]:
    """(task, body): real samples with modalities dropped, values replaced by extreme or wrong ones,
    a vitals row nulled, as one sample or `instances`, on a served task."""

    @st.composite
    def sample(draw: Any) -> dict[str, Any]:
        s = copy.deepcopy(draw(st.sampled_from(env.samples)))
        for name in draw(st.sets(st.sampled_from(sorted(s["modalities"])))):
            del s["modalities"][name]
        slots = _numeric_slots(s["modalities"])
        for _ in range(draw(st.integers(0, 3)) if slots else 0):
            container, key = slots[draw(st.integers(0, len(slots) - 1))]
            container[key] = draw(NASTY)
        vitals = s["modalities"].get("vitals")
        if vitals and draw(st.booleans()):
            row = draw(st.integers(0, len(vitals["values"]) - 1))
            vitals["values"][row] = [None] * len(vitals["values"][row])
        s["id"] = draw(st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 10**6)))
        return s

    @st.composite
    def build(draw: Any) -> tuple[str, Any]:
        task = draw(st.sampled_from(env.tasks))
        if draw(st.booleans()):
            return task, {"instances": draw(st.lists(sample(), min_size=1, max_size=3))}
        return task, draw(sample())

    return build()


# Hand-written hostile prediction requests: what a JSON generator cannot send.
_SAMPLE = (
    b'{"modalities": {"labs": {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]}}}'
)
HOSTILE: list[tuple[str, bytes, str | None, dict[str, str]]] = [
    ("JSON nested 2000 deep", b'{"modalities": ' + b"[" * 2000 + b"]" * 2000 + b"}", "application/json", {}),
    ("5000-digit integer", _SAMPLE.replace(b"0.1", b"1" * 5000), "application/json", {}),
    ("1e400 literal", _SAMPLE.replace(b"0.1", b"1e400"), "application/json", {}),
    ("NaN token", _SAMPLE.replace(b"0.1", b"NaN"), "application/json", {}),
    ("truncated JSON", _SAMPLE[:-3], "application/json", {}),
    ("invalid UTF-8", b'{"modalities": "\xff\xfe"}', "application/json", {}),
    ("empty body", b"", "application/json", {}),
    ("text/plain body", _SAMPLE, "text/plain", {}),
    ("form body", b"modalities=1", "application/x-www-form-urlencoded", {}),
    ("no content type", _SAMPLE, None, {}),
    ("unknown query parameter", _SAMPLE, "application/json", {"debug": "1"}),
]
