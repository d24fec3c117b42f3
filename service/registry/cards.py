"""Model cards: `GET /tasks/{name}/card` (JSON, or Markdown with `format=markdown`) and
`PATCH /tasks/{name}` (an admin writes the intended use and limitations).

The system fills the rest of a card when the task is introduced (`flame_core.card`: data, test
metrics, calibration and conformal coverage, subgroups by modality-missingness pattern; the stage job
adds the datasets' ids and digests); the version and cursor are those of the version asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from flame_core.card import card_markdown
from service.deps import SessionDep, require_caller
from service.errors import PayloadInvalid
from service.openapi import errors
from service.registry import service
from service.registry.records import NAME_PATTERN, NO_NUL, VERSION_PATTERN
from service.registry.schemas import TaskOut

router = APIRouter(tags=["models"])
ReaderCaller = Annotated[str, Depends(require_caller("predict"))]
AdminCaller = Annotated[str, Depends(require_caller("admin"))]
TaskName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["mortality"])]
VersionQuery = Annotated[
    str | None, Query(pattern=VERSION_PATTERN, description="a model version (default: the active one)")
]
Format = Annotated[Literal["json", "markdown"], Query(alias="format", description="`json` or `markdown`")]


class CardText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intended_use: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)
    limitations: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)


_EXAMPLES = {
    "mortality": {
        "summary": "what an admin writes on a task's card",
        "value": {
            "intended_use": "Adult ICU patients at 24 h after admission; decision support for rounds.",
            "limitations": "Not validated on paediatric or cardiac-surgery units.",
        },
    }
}


@router.get(
    "/tasks/{name}/card",
    responses={
        **errors(404, 422),
        200: {"content": {"text/markdown": {"schema": {"type": "string"}}}, "description": "the card"},
    },
    response_model=dict[str, Any],
)
def get_card(
    name: TaskName, session: SessionDep, _: ReaderCaller, version: VersionQuery = None, fmt: Format = "json"
) -> Any:
    """The task's model card as the version (default: active) serves it."""
    served_by = service.version_or_active(session=session, version=version)
    task = service.get_task(session=session, name=name, version=served_by)
    card = {
        **task.model_card,
        "task": task.name,
        "version": served_by,
        "cursor": task.cursor,
        "introduced_in": task.version_id,
    }
    if fmt == "markdown":
        return PlainTextResponse(card_markdown(card), media_type="text/markdown")
    return card


@router.patch("/tasks/{name}", response_model=TaskOut, responses=errors(404, 422))
def write_card(
    name: TaskName,
    session: SessionDep,
    _: AdminCaller,
    body: Annotated[CardText, Body(openapi_examples=_EXAMPLES)],
    version: VersionQuery = None,
) -> Any:
    """Write the intended use and limitations on the task's card (the rest the system fills)."""
    text = body.model_dump(exclude_none=True)
    if not text:
        raise PayloadInvalid("send `intended_use`, `limitations` or both", field="body")
    task = service.get_task(
        session=session, name=name, version=service.version_or_active(session=session, version=version)
    )
    service.update_model_card(
        session=session, name=name, version=task.version_id, card={**task.model_card, **text}
    )
    return service.task_out(task)
