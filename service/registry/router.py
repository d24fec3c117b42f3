"""Routes: `POST /models` registers a checkpoint someone trained themselves (bring your own model).

The other model routes (`GET /models`, `GET /models/{version}`, `POST /models/{version}/activate`)
are in `service.jobs.router`, which serves the same URL space.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.jobs.deps import SessionDep, SettingsDep, StoreDep, require_scope
from service.jobs.service import version_detail
from service.openapi import errors
from service.registry.checkpoints import register_upload
from service.registry.schemas import RegisteredVersion

router = APIRouter(tags=["models"])
AdminCaller = Annotated[str, Depends(require_scope("admin"))]
_UPLOAD_EXAMPLES = {
    "flame_train_run": {
        "summary": "the two files `flame train --out runs/b` wrote (curl -F config=@runs/b/config.json ...)",
        "value": {"config": "<contents of config.json>", "weights": "<contents of model.safetensors>"},
    },
    "register_only": {
        "summary": "register without moving `active`",
        "value": {"config": "<config.json>", "weights": "<model.safetensors>", "activate": False},
    },
}


@router.post(
    "/models",
    status_code=201,
    response_model=RegisteredVersion,
    responses=errors(422, notes={422: "The checkpoint is invalid; `field` names the file and field."}),
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"examples": _UPLOAD_EXAMPLES}}}},
)
def register_model(
    config: Annotated[UploadFile, File(description="config.json written by flame train / flame continual")],
    weights: Annotated[UploadFile, File(description="model.safetensors (safetensors only; never a pickle)")],
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    caller: AdminCaller,
    activate: Annotated[bool, Form(description="move `active` to the new version")] = True,
    note: Annotated[str, Form(max_length=1000)] = "",
) -> Any:
    """Verify an uploaded checkpoint (strict tensor names and shapes against its config, valid specs
    and training ranges) and register it as a root version; 422 naming the file and field if not."""
    registered = register_upload(
        session=session,
        store=store,
        config=config.file,
        weights=weights.file,
        moved_by=caller,
        activate=activate,
        note=note,
        rank_budget=settings.capacity_rank_budget,
    )
    out = version_detail(session=session, version=registered.version.id)
    session.commit()
    return {**out, "activated": registered.activated, "warnings": registered.warnings}
