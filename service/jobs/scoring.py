"""Batch scoring: a job that scores a stored dataset with one task of one model version.

`POST /predictions/batch` queues it on the same queue as stages (Celery or the in-process one; the
job's `kind` is `scoring`, and `run_stage` hands such jobs here); it needs no stage lock. The job
reads the dataset, scores it in chunks with the serving path's own functions (validation, fixed-length
collation, `forward_rows`, `service.finish`: the same bytes a request would get, with calibrated
outputs, sets, abstention and shift flags), writes one JSON line per sample to the artifact store
(a sample the task cannot read gets `{"line", "error"}` instead) and one audit row per scored sample,
never the payload. Progress and heartbeats go through the job's lease; `GET /predictions/batch/{id}`
downloads the file once the job succeeded.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from flame_core.validation import SampleInvalid, validate_sample
from service.artifacts import ArtifactStore
from service.datasets.service import read_dataset
from service.db import session_scope
from service.errors import PredictionNotFinite
from service.inference import service as predict
from service.inference.batcher import Rows, forward_rows
from service.inference.host import load_loaded_version
from service.jobs.lease import Lease
from service.jobs.models import Job
from service.jobs.runner import run_claimed
from service.registry import service as registry
from service.registry.audit import PredictionRecord, record_predictions
from service.registry.records import ID_PATTERN, NAME_PATTERN, VERSION_PATTERN
from service.settings import Settings

SCORING_KIND = "scoring"
CHUNK = 256


class ScoringRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(pattern=ID_PATTERN, description="a dataset uploaded with POST /datasets")
    task: str = Field(pattern=NAME_PATTERN, examples=["mortality"])
    version: str | None = Field(
        default=None, pattern=VERSION_PATTERN, description="the model version (default: the active one)"
    )


def submit_scoring(*, session: Session, request: ScoringRequest, created_by: str | None) -> Job:
    """A queued scoring job; the version (default: active) is fixed now. 404 for an unknown version,
    task or dataset."""
    version = request.version or registry.resolve_alias(session=session, alias="active").id
    registry.get_task(session=session, name=request.task, version=version)
    registry.get_dataset(session=session, dataset_id=request.dataset_id)
    body = {**request.model_dump(mode="json"), "version": version}
    return registry.create_job(session=session, kind=SCORING_KIND, request=body, created_by=created_by)


def _one(loaded: Any, task: str, item: Any, sample: dict, batch: Any, rows: Rows, i: int) -> dict[str, Any]:
    """Sample `i` of a chunk answered alone: its prediction, or its `prediction_not_finite` error."""
    part = rows.part(i, i + 1)
    try:
        return predict.finish(
            predict.Prepared(loaded, task, [item], [sample], False, batch), part
        ).predictions[0]
    except PredictionNotFinite as e:
        return {"error": {"code": e.code, "message": e.message, "field": e.field}}


def _score_chunk(
    loaded: Any, task: str, job_id: str, chunk: list[tuple[int, Any]]
) -> tuple[list[dict], list]:
    """(one output line per sample, audit records of the scored ones) for one chunk of lines."""
    valid: list[dict[str, Any]] = []
    where: list[int] = []
    lines: list[dict[str, Any]] = []
    for lineno, obj in chunk:
        try:
            valid.append(validate_sample(obj, loaded.specs, [task], index=lineno))
            where.append(lineno)
        except SampleInvalid as e:
            lines.append(
                {"line": lineno, "error": {"code": "sample_invalid", "message": e.message, "field": e.field}}
            )
    if not valid:
        return lines, []
    t0 = time.perf_counter()
    batch = loaded.prepare(valid, task)
    rows = forward_rows(loaded, task, batch, [len(valid)])[0]
    kept = set(where)
    items = [obj for lineno, obj in chunk if lineno in kept]
    try:
        done = predict.finish(predict.Prepared(loaded, task, items, valid, True, batch), rows).predictions
    except PredictionNotFinite:  # rare: answer the finite ones, name the others
        done = [_one(loaded, task, items[i], valid[i], batch, rows, i) for i in range(len(valid))]
    ms = (time.perf_counter() - t0) * 1000 / len(valid)
    audits = []
    for lineno, prediction in zip(where, done, strict=True):
        lines.append({"line": lineno, **prediction})
        if "error" not in prediction:
            present = tuple(prediction["modalities"]["used"])
            audits.append(PredictionRecord(f"{job_id[:36]}-{lineno}", task, loaded.id, present, ms, 200))
    lines.sort(key=lambda x: x["line"])
    return lines, audits


def run_scoring(
    job_id: str,
    *,
    session_factory: sessionmaker[Session],
    store: ArtifactStore,
    settings: Settings,
    stop: threading.Event | None = None,
) -> None:
    """Claim and run the scoring job; its row records how it ended (the file's digest in `metrics`)."""

    def work(lease: Lease, raw_request: dict[str, Any], attempt: int) -> None:
        request = ScoringRequest.model_validate(raw_request)
        with session_scope(session_factory, write=False) as session:
            version = registry.get_version(session=session, version=request.version or "")
            dataset = registry.get_dataset(session=session, dataset_id=request.dataset_id)
            session.expunge_all()
        loaded = load_loaded_version(store, version, torch.device("cpu"))
        lines = read_dataset(store, dataset)
        out: list[str] = []
        scored = 0
        for start in range(0, len(lines), CHUNK):
            chunk_lines, audits = _score_chunk(loaded, request.task, job_id, lines[start : start + CHUNK])
            out += [json.dumps(x, separators=(",", ":")) + "\n" for x in chunk_lines]
            scored += len(audits)
            with session_scope(session_factory) as session:
                record_predictions(session=session, records=audits)
            lease.report(phase="scoring", done=min(start + CHUNK, len(lines)), total=len(lines))
        metrics = {
            "artifact_sha256": store.put_bytes("".join(out).encode()),
            "samples": len(lines),
            "scored": scored,
            "errors": len(lines) - scored,
            "task": request.task,
            "version": version.id,
        }
        with session_scope(session_factory) as session:
            registry.hold_lease(session=session, job_id=job_id, attempt=attempt)
            registry.mark_succeeded(session=session, job_id=job_id, metrics=metrics)

    run_claimed(job_id, work, session_factory=session_factory, settings=settings, stop=stop)
