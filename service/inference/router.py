"""`POST /predict/{task}`: thin route over `service.inference.service.predict`, plus the audit row."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from service.auth.models import ApiKey
from service.deps import HostDep, SettingsDep, require_scope
from service.errors import PayloadInvalid
from service.inference import service
from service.inference.schemas import PredictBatch, PredictResponse, Sample
from service.limits import parse_json
from service.registry.audit import PredictionRecord

router = APIRouter(tags=["inference"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        Sample.model_json_schema(ref_template="#/components/schemas/{model}"),
                        PredictBatch.model_json_schema(ref_template="#/components/schemas/{model}"),
                    ]
                }
            }
        },
    }
}


@router.post(
    "/predict/{task}",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=_BODY_DOC,
)
async def predict_route(
    task: str,
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
