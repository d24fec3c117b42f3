"""`POST /predict` without a task: which served tasks is this patient closest to?

FLAME needs the task at inference (the paper's stated limitation). Every task keeps the statistics
of its routers' pooled summaries on its training data (`flame_core.shift`), so one forward pass per
cursor model gives the sample's summaries, and each task's shift score says how far the sample is
from that task's training data: the answer lists the tasks nearest first. Nothing is predicted and
nothing is stored; a rare request, it runs in the thread pool beside the batcher.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from flame_core.collate import collate
from flame_core.shift import nearest_tasks
from flame_core.validation import validate_sample
from service.auth.models import ApiKey
from service.deps import HostDep, require_scope
from service.inference.host import LoadedVersion
from service.inference.schemas import EXAMPLE_SAMPLE, Sample
from service.limits import parse_json
from service.openapi import errors, request_body

router = APIRouter(tags=["inference"])


class NearTask(BaseModel):
    task: str
    score: float = Field(description="the task's shift score for this sample (lower: closer)")
    in_distribution: bool = Field(description="score <= the task's threshold")


class NearestTasks(BaseModel):
    model_version: str
    nearest_tasks: list[NearTask] = Field(
        description="tasks whose training data the sample is closest to, nearest first; tasks that read "
        "none of the sample's modalities (or have no statistics) are left out"
    )


def nearest(loaded: LoadedVersion, body: Any) -> dict[str, Any]:
    sample = validate_sample(body, loaded.specs, [])
    stats = {t: s for t, s in loaded.model.shift.items() if t in loaded.specs.tasks and s.get("modalities")}
    by_cursor: dict[int, list[str]] = {}
    for task in stats:
        by_cursor.setdefault(loaded.cursor_of(task), []).append(task)
    found: list[tuple[str, float]] = []
    for cursor, tasks in sorted(by_cursor.items()):
        batch = collate(
            [sample], loaded.specs, tasks=tasks, tokenizer=loaded.tokenizer, lengths=loaded.lengths
        )
        with torch.inference_mode():
            out = loaded.cursor_models[cursor](batch.to(loaded.device), tasks)
        summaries = {m: r.summary[0].tolist() for m, r in out.routing.items() if r.summary is not None}
        present = {m: bool(r.present[0]) for m, r in out.routing.items()}
        found += nearest_tasks({t: stats[t] for t in tasks}, summaries, present)
    found.sort(key=lambda ts: (ts[1], ts[0]))
    return {
        "model_version": loaded.id,
        "nearest_tasks": [
            {"task": t, "score": s, "in_distribution": s <= stats[t]["threshold"]} for t, s in found
        ],
    }


@router.post(
    "/predict",
    response_model=NearestTasks,
    responses=errors(415, 422, 503),
    openapi_extra=request_body(
        {"application/json": (Sample, {"sample": {"summary": "a sample, no task", "value": EXAMPLE_SAMPLE}})},
        description="One sample, without a task.",
    ),
)
async def nearest_route(
    request: Request,
    host: HostDep,
    _: Annotated[ApiKey | None, Depends(require_scope("predict"))],
) -> Any:
    """The served tasks whose training data this sample is closest to (by shift score)."""
    loaded = host.get()
    body = parse_json(await request.body())
    return await run_in_threadpool(nearest, loaded, body)
