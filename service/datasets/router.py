"""Routes: `POST /datasets` (JSONL as the raw body or a multipart `file`), `GET /datasets/{id}`.

Specs to validate against come as the `specs` query parameter or multipart field (a task-spec JSON
object); they are merged with the active model's specs. Bad lines answer 422 naming line and field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.datasets import service
from service.datasets.models import Dataset
from service.datasets.schemas import (
    EXAMPLE_SPECS,
    NAME_MAX,
    UPLOAD_EXAMPLES,
    DatasetOut,
    DatasetUpload,
)
from service.deps import SessionDep, StoreDep, require_caller
from service.errors import BodyTooLarge
from service.openapi import errors, request_body
from service.registry import service as registry
from service.registry.records import ID_PATTERN

router = APIRouter(tags=["datasets"])
TrainCaller = Annotated[str, Depends(require_caller("train"))]
MAX_DATASET_BYTES = 512 * 1024 * 1024
_UPLOAD_DOC = request_body(
    {
        "application/x-ndjson": (str, UPLOAD_EXAMPLES["application/x-ndjson"]),
        "multipart/form-data": (DatasetUpload, UPLOAD_EXAMPLES["multipart/form-data"]),
    },
    description="A JSON Lines file of samples (docs/design.md s2): the raw body, or a form's `file` part.",
)
_UPLOAD_ERRORS = errors(
    422,
    notes={
        422: "A line, the specs or the name is invalid; `line` and `field` name it (code `dataset_invalid`)."
    },
)


def dataset_out(row: Dataset) -> dict[str, Any]:
    return {
        "dataset_id": row.id,
        "name": row.name,
        "digest": row.digest,
        "n_samples": row.n_samples,
        "size": row.size,
        "summary": row.summary,
        "created_by": row.created_by,
        "created_at": row.created_at,
    }


async def _read_upload(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The JSONL bytes and the form fields (multipart), or the raw body and no fields."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form()
        except StarletteHTTPException as e:  # a malformed form: the client's data, so a 422 like a bad line
            raise service.DatasetInvalid(f"not a valid multipart form: {e.detail}", field="file") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise service.DatasetInvalid("multipart upload needs a 'file' part with the JSONL", field="file")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        fields.setdefault("name", upload.filename or "")
        return await upload.read(), fields
    return await request.body(), {}


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetOut,
    responses=_UPLOAD_ERRORS,
    openapi_extra=_UPLOAD_DOC,
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    caller: TrainCaller,
    name: Annotated[str | None, Query(max_length=NAME_MAX)] = None,
    specs: Annotated[
        str | None, Query(description="task-spec JSON to validate labels against", examples=[EXAMPLE_SPECS])
    ] = None,
) -> Any:
    """Validate every line, summarise, store by digest (the same bytes answer the stored dataset)."""
    length = int(request.headers.get("content-length") or 0)
    if length > MAX_DATASET_BYTES:
        raise BodyTooLarge(f"datasets are limited to {MAX_DATASET_BYTES} bytes", field="body")
    data, fields = await _read_upload(request)
    raw_specs = fields.get("specs") or specs
    try:
        inline = json.loads(raw_specs) if raw_specs else None
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        raise service.DatasetInvalid(f"specs is not valid JSON: {e}", field="specs") from None
    if inline is not None and not isinstance(inline, dict):
        raise service.DatasetInvalid("specs must be a task-spec JSON object", field="specs")
    row = await run_in_threadpool(
        service.upload_dataset,
        session=session,
        store=store,
        name=name or fields.get("name") or "dataset",
        data=data,
        inline_specs=inline,
        created_by=caller,
    )
    await run_in_threadpool(session.commit)
    return dataset_out(row)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, responses=errors(404, 422))
def get_dataset(
    dataset_id: Annotated[str, Path(pattern=ID_PATTERN)], session: SessionDep, _: TrainCaller
) -> Any:
    return dataset_out(registry.get_dataset(session=session, dataset_id=dataset_id))
