"""`POST /predict/{task}`: thin route over `service.inference.service.predict`, plus the audit row."""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from service.auth.models import ApiKey
from service.db import session_scope
from service.deps import HostDep, SettingsDep, require_scope
from service.errors import PayloadInvalid
from service.inference import service
from service.inference.schemas import PREDICT_EXAMPLES, PredictBatch, PredictResponse, Sample
from service.openapi import errors, request_body
from service.registry.audit import record_prediction
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
        "JSON nested too deep or an integer literal too long; `request_invalid`, also for an unknown "
        "query parameter).",
        503: "No model version is loaded yet (code `model_not_ready`).",
    },
)


def _parse_json(raw: bytes) -> Any:
    # NaN/Infinity tokens parse to floats on purpose: the validator then names the exact field.
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadInvalid(f"request body is not valid JSON: {e}", field="body") from None


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
    loaded = host.get()  # held for the whole request: a concurrent swap does not affect it
    raw = await request.body()
    body = _parse_json(raw)
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
    with session_scope(request.app.state.session_factory) as session:
        record_prediction(
            session=session,
            request_id=request_id,
            task=task,
            version=loaded.id,
            modalities_present=result.present,
            latency_ms=latency_ms if math.isfinite(latency_ms) else 0.0,
            status_code=200,
            caller_key_id=key.id if key is not None else None,
        )
    return {
        "request_id": request_id,
        "task": result.task,
        "model_version": result.version,
        "cursor": result.cursor,
        "predictions": result.predictions,
    }
