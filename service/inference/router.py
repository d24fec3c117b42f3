"""`POST /predict/{task}`: validate and collate the request, queue it for the micro-batcher, answer.

The route stays thin: `service.prepare` (validation, collation), `Batcher.submit` (the batched
forward pass, on the inference thread) and `service.finish` (outputs, explanations) do the work;
a request of at most `INLINE_INSTANCES` instances is prepared and finished on the event loop (it
takes well under a millisecond; a thread hop would cost more), a larger one in the thread pool.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.auth.models import ApiKey
from service.auth.service import has_scope
from service.deps import HostDep, SettingsDep, require_scope
from service.errors import DeadlineExceeded, PayloadInvalid
from service.inference import service
from service.inference.batcher import ROUTINE, STAT, Batcher, Job
from service.inference.schemas import PREDICT_EXAMPLES, PredictBatch, PredictResponse, Sample
from service.limits import parse_json
from service.openapi import errors, request_body
from service.registry.audit import PredictionRecord
from service.registry.errors import PermissionDenied
from service.registry.records import NAME_PATTERN
from service.settings import Settings

router = APIRouter(tags=["inference"])
INLINE_INSTANCES = 4

TaskPath = Annotated[str, Path(pattern=NAME_PATTERN, examples=["mortality"], description="a served task")]
PriorityHeader = Annotated[
    str | None,
    Header(
        alias="X-Flame-Priority",
        description="`stat` (served before routine requests of the task; needs a key with the `stat` "
        "scope) or `routine` (the default).",
    ),
]
DeadlineHeader = Annotated[
    str | None,
    Header(
        alias="X-Flame-Deadline-Ms",
        description="Milliseconds this request may take before it is answered 504 and its work dropped; "
        "at most the server's `FLAME_PREDICT_DEADLINE_MS` (the default).",
    ),
]
_BODY_DOC = request_body(
    {"application/json": (Sample | PredictBatch, PREDICT_EXAMPLES)},
    description='One sample, or `{"instances": [...]}`. JSON only; values are checked against the '
    "modality specs and global bounds.",
)
_ERRORS = errors(
    403,
    404,
    415,
    422,
    429,
    503,
    504,
    notes={
        403: "`X-Flame-Priority: stat` with a key that lacks the `stat` scope (code `forbidden`).",
        404: "The active model version does not serve this task (code `task_not_found`).",
        422: "A sample, the body or a header is invalid; `field` names it, e.g. "
        "`instances[2].modalities.labs.values[3]` (codes `sample_invalid`; `payload_invalid`, also for "
        "JSON nested too deep, an integer literal too long, an unknown query parameter or a bad "
        "`X-Flame-Priority`/`X-Flame-Deadline-Ms`; `prediction_not_finite` if the model's output for "
        "the sample is not a finite number).",
        429: "The task's prediction queue is full (code `overloaded`); retry after `Retry-After` seconds.",
        503: "No model version is loaded yet (code `model_not_ready`), or the server is shutting down.",
        504: "The request's deadline passed before its forward pass began (code `deadline_exceeded`); "
        "nothing was computed.",
    },
)


def priority_of(value: str | None, key: ApiKey | None) -> int:
    if value is None or value.strip().lower() == "routine":
        return ROUTINE
    if value.strip().lower() != "stat":
        raise PayloadInvalid(
            f"X-Flame-Priority must be 'stat' or 'routine', got {value[:32]!r}", field="x-flame-priority"
        )
    if key is not None and not has_scope(key, "stat"):
        raise PermissionDenied(f"API key {key.prefix!r} lacks the 'stat' scope", field="x-flame-priority")
    return STAT


def deadline_of(value: str | None, settings: Settings, start: float) -> float:
    """The monotonic time by which the forward pass must start."""
    budget = settings.predict_deadline_ms
    if value is not None:
        try:
            asked = float(value)
        except ValueError:
            asked = math.nan
        if not math.isfinite(asked) or asked <= 0:
            raise PayloadInvalid(
                f"X-Flame-Deadline-Ms must be a positive number of milliseconds, got {value[:32]!r}",
                field="x-flame-deadline-ms",
            )
        budget = min(budget, asked)
    return start + budget / 1000.0


def _expired() -> DeadlineExceeded:
    return DeadlineExceeded(
        "the request's deadline passed before its prediction was ready; it was dropped",
        field="x-flame-deadline-ms",
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
    priority_header: PriorityHeader = None,
    deadline_header: DeadlineHeader = None,
    key: ApiKey | None = Depends(require_scope("predict")),
) -> Any:
    """Predict `task` for one sample or `{"instances": [...]}`; outputs, version, cursor, modality
    use and routing per instance. One audit row per answered prediction (never the payload)."""
    start = time.perf_counter()
    now = time.monotonic()
    if request.query_params:
        name = next(iter(request.query_params.keys()))[:64]
        raise PayloadInvalid(
            f"unknown query parameter {name!r}: the sample goes in the JSON body", field=name
        )
    priority = priority_of(priority_header, key)
    deadline = deadline_of(deadline_header, settings, now)
    batcher: Batcher = request.app.state.batcher
    loaded = host.get()  # held for the whole request: a concurrent swap does not affect it
    log = request.state.log = {"task": task, "version": loaded.id}
    if task not in loaded.specs.tasks:
        log.pop("task")  # unbounded user input stays out of logs and labels
    else:
        batcher.check_capacity(task)  # shed load before spending work on the request
    body = parse_json(await request.body())
    args = {"loaded": loaded, "task": task, "body": body, "max_instances": settings.max_instances}
    with batcher.incoming():
        items = body.get("instances") if isinstance(body, dict) else None
        inline = not isinstance(items, list) or len(items) <= INLINE_INSTANCES
        prepared = service.prepare(**args) if inline else await run_in_threadpool(service.prepare, **args)
        if time.monotonic() > deadline:
            raise _expired()
        future = batcher.submit(Job(loaded, task, prepared.batch, prepared.batch.size, priority, deadline))
    try:
        rows = await asyncio.wait_for(asyncio.wrap_future(future), timeout=deadline - time.monotonic())
    except TimeoutError:
        raise _expired() from None
    if len(prepared.samples) <= INLINE_INSTANCES:
        result = service.finish(prepared, rows)
    else:
        result = await run_in_threadpool(service.finish, prepared, rows)
    latency_ms = (time.perf_counter() - start) * 1000
    request_id = request.state.request_id
    log.update(
        instances=len(result.predictions),
        modalities_present=result.present,
        modalities_missing=result.missing,
        batch=rows.batch_size,
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
    return JSONResponse(
        {
            "request_id": request_id,
            "task": result.task,
            "model_version": result.version,
            "cursor": result.cursor,
            "predictions": result.predictions,
        }
    )
