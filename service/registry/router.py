"""Routes of the model registry: the tasks and model versions it holds (`GET /tasks`,
`GET /tasks/{name}`, `GET /models`, `GET /models/{version}`), moving an alias
(`POST /models/{version}/activate`, a rollback or roll-forward), and `POST /models`, which registers
a checkpoint someone trained themselves (bring your own model).

The read and activate routes keep the `jobs` tag they were documented under.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, Path, Query, UploadFile

from service.deps import OptionalHostDep, SessionDep, SettingsDep, StoreDep, require_caller
from service.openapi import errors
from service.registry import service
from service.registry.checkpoints import register_upload
from service.registry.records import NAME_PATTERN, VERSION_PATTERN
from service.registry.schemas import (
    ACTIVATE_EXAMPLES,
    ActivateOut,
    ActivateRequest,
    RegisteredVersion,
    TaskOut,
    VersionDetail,
    VersionOut,
)

router = APIRouter(tags=["models"])
TrainCaller = Annotated[str, Depends(require_caller("train"))]
AdminCaller = Annotated[str, Depends(require_caller("admin"))]
VersionQuery = Annotated[
    str | None, Query(pattern=VERSION_PATTERN, description="a model version (default: the active one)")
]
VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN, examples=["v1"])]
TaskName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["mortality"])]
ActivateBody = Annotated[ActivateRequest | None, Body(openapi_examples=ACTIVATE_EXAMPLES)]
_NO_VERSION = (
    "No version is active yet, or `version` is unknown (codes `alias_not_found`, `version_not_found`)."
)
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


@router.get(
    "/tasks",
    tags=["jobs"],
    response_model=list[TaskOut],
    responses=errors(404, 422, notes={404: _NO_VERSION}),
)
def list_tasks(session: SessionDep, _: TrainCaller, version: VersionQuery = None) -> Any:
    """Tasks the version (default: active) serves, in the order they were introduced."""
    rows = service.list_tasks(
        session=session, version=service.version_or_active(session=session, version=version)
    )
    return [service.task_out(t) for t in rows]


@router.get("/tasks/{name}", tags=["jobs"], response_model=TaskOut, responses=errors(404, 422))
def get_task(name: TaskName, session: SessionDep, _: TrainCaller, version: VersionQuery = None) -> Any:
    return service.task_out(
        service.get_task(
            session=session, name=name, version=service.version_or_active(session=session, version=version)
        )
    )


@router.get("/models", tags=["jobs"], response_model=list[VersionOut])
def list_models(session: SessionDep, _: TrainCaller) -> Any:
    return service.list_versions_out(session=session)


@router.get("/models/{version}", tags=["jobs"], response_model=VersionDetail, responses=errors(404, 422))
def get_model(version: VersionPath, session: SessionDep, _: TrainCaller) -> Any:
    return service.version_detail(session=session, version=version)


@router.post(
    "/models/{version}/activate",
    tags=["jobs"],
    response_model=ActivateOut,
    responses=errors(
        404,
        409,
        422,
        notes={
            404: "The version, or an alias other than `active`, does not exist.",
            409: "The version is not `ready` (only ready versions can be aliased).",
        },
    ),
)
def activate_model(
    version: VersionPath,
    session: SessionDep,
    caller: AdminCaller,
    host: OptionalHostDep,
    body: ActivateBody = None,
) -> Any:
    """Move `active` (or `body.alias`) to `version`: rollback or roll-forward, recorded in its history.
    The replica that answers serves the alias's version before it answers; the others hear of the
    move at once (PostgreSQL NOTIFY) or at their next poll."""
    body = body or ActivateRequest()
    out = service.activate(
        session=session, version=version, alias=body.alias, moved_by=caller, reason=body.reason or "activate"
    )
    session.commit()
    if host is not None:
        if body.alias == host.alias:
            host.reload_if_changed()
        out["serving"] = host.current.id if host.current is not None else None
    return out


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
    out = service.version_detail(session=session, version=registered.version.id)
    session.commit()
    return {**out, "activated": registered.activated, "warnings": registered.warnings}
