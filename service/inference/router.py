"""`POST /predict/{task}`: thin route over `service.inference.service.predict`, plus the audit row."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from service.auth.models import ApiKey
from service.deps import HostDep, SettingsDep, require_scope
from service.errors import PayloadInvalid
from service.inference import service
from service.inference.schemas import PREDICT_EXAMPLES, PredictBatch, PredictResponse, Sample
from service.limits import parse_json
from service.openapi import errors, request_body
from service.registry.audit import PredictionRecord
from service.registry.records import NAME_PATTERN

router = APIRouter(tags=["inference"])

TaskPath = Annotated[str, Path(pattern=NAME_PATTERN, examples=["mortality"], description="a served task")]
_BODY_DOC = request_body(
    {"application/json": (Sample | PredictBatch, PREDICT_EXAMPLES)},
    description='One sample, or `{"instances": [...]}`. JSON only; values are checked against the '
    "modality specs and global bounds.",
)
_ERRORS = errors(
    404,
    415,
    422,
    429,
    503,
    notes={
        404: "The active model version does not serve this task (code `task_not_found`).",
        422: "A sample or the body is invalid; `field` names it, e.g. "
        "`instances[2].modalities.labs.values[3]` (codes `sample_invalid`; `payload_invalid`, also for "
        "JSON nested too deep, an integer literal too long or an unknown query parameter; "
        "`prediction_not_finite` if the model's output for the sample is not a finite number).",
        503: "No model version is loaded yet (code `model_not_ready`).",
    },
)


@router.post(
    "/predict/{task}",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_BODY_DOC,
)
async def predict_route(
    task: TaskPath,
    request: Request,
    host: HostDep,
    settings: SettingsDep,
    key: ApiKey | None = Depends(require_scope("predict")),
) -> dict[str, Any]:
    """Predict `task` for one sample or `{"instances": [...]}`; outputs, version, cursor, modality
    use and routing per instance. One audit row per request (never the payload)."""
    start = time.perf_counter()
    if request.query_params:
        name = next(iter(request.query_params.keys()))[:64]
        raise PayloadInvalid(
            f"unknown query parameter {name!r}: the sample goes in the JSON body", field=name
        )
    loaded = host.get()  # held for the whole request: a concurrent swap does not affect it
    raw = await request.body()
    body = parse_json(raw)
    log = request.state.log = {"task": task, "version": loaded.id}
    if task not in loaded.specs.tasks:
        log.pop("task")  # unbounded user input stays out of logs and labels
    result = await run_in_threadpool(
        service.predict, loaded=loaded, task=task, body=body, max_instances=settings.max_instances
    )
    latency_ms = (time.perf_counter() - start) * 1000
    request_id = request.state.request_id
    log.update(
        instances=len(result.predictions),
        modalities_present=result.present,
        modalities_missing=result.missing,
        caller=key.prefix if key is not None else None,
    )
    # Off the event loop and through database outages: the writer inserts (or spools) it.
    request.app.state.audit_writer.submit(
        PredictionRecord(
            request_id=request_id,
            task=task,
            version=loaded.id,
            modalities_present=tuple(result.present),
            latency_ms=latency_ms if math.isfinite(latency_ms) else 0.0,
            status_code=200,
            caller_key_id=key.id if key is not None else None,
        )
    )
    return {
        "request_id": request_id,
        "task": result.task,
        "model_version": result.version,
        "cursor": result.cursor,
        "predictions": result.predictions,
    }
