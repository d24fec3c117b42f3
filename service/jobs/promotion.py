"""The promotion gate: a finished stage becomes `active` only if every earlier task still answers
byte for byte as it did when it was introduced, and the new tasks reach the stage's `min_metric`.

`register_stage_version` stores the new version's files, loads them back as the serving host would
(`canaries.load_as_host`), records the new tasks' canaries on that load, replays every earlier
task's canaries on it and checks `min_metric`; then, in ONE transaction, it registers the version
(`ready`, or `candidate` when the gate refuses it), moves `active` by compare-and-swap from the
parent the stage stacked on, and marks the job succeeded with the gate's report under
`metrics.promotion`. A candidate is never aliased; the job still succeeds (it made a version) and
says `promoted: false` and why. Earlier tasks registered without canaries cannot be replayed: the
report lists them as `unchecked` and the gate passes on what it could check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from flame_core.continual import ContinualFlame
from flame_core.metrics import higher_is_better
from flame_core.validation import SampleInvalid
from service.artifacts import ArtifactStore
from service.db import session_scope
from service.inference.host import LoadedVersion
from service.jobs import canaries
from service.jobs.schemas import MetricName, StageOptions
from service.registry import service as registry
from service.registry.errors import DomainError
from service.registry.models import Task
from service.settings import Settings
from service.versioning import stage_records, version_files


@dataclass
class Verdict:
    """What the gate found: `passed` only when `reasons` is empty."""

    checked: dict[str, str] = field(default_factory=dict)  # earlier task -> "identical" | "changed"
    unchecked: list[str] = field(default_factory=list)  # earlier tasks stored without canaries
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons


def replay_earlier(
    loaded: LoadedVersion, store: ArtifactStore, earlier: list[Task], verdict: Verdict
) -> None:
    for task in earlier:
        canary = task.canary
        if canary is None:
            verdict.unchecked.append(task.name)
            continue
        expected = canary["outputs_sha256"]
        try:
            got = canaries.replay(loaded, store, task.name, canary)
        except (DomainError, SampleInvalid, KeyError) as e:  # missing blob, specs that moved, ...
            verdict.checked[task.name] = "changed"
            verdict.reasons.append(f"task {task.name!r}: its canaries could not be replayed ({e})")
            continue
        verdict.checked[task.name] = "identical" if got == expected else "changed"
        if got != expected:
            verdict.reasons.append(
                f"task {task.name!r}: outputs on its {canary['n']} canaries changed "
                f"(sha256 {got[:12]}..., was {expected[:12]}...)"
            )


def check_metrics(
    metrics: dict[str, Any], bounds: Mapping[MetricName, float] | None, verdict: Verdict
) -> None:
    """Every new task must reach each bound (a minimum; for `mse`, which falls as it improves, a maximum)."""
    for task, values in metrics.items():
        for metric, bound in (bounds or {}).items():
            value = values.get(metric)
            if value is None:
                verdict.reasons.append(f"task {task!r}: {metric} was not measured (min_metric {bound})")
            elif (value < bound) if higher_is_better(metric) else (value > bound):
                word = "below" if higher_is_better(metric) else "above"
                verdict.reasons.append(f"task {task!r}: {metric} {value:.4f} is {word} min_metric {bound}")


def report(verdict: Verdict, *, promoted: bool, status: str, activate: bool) -> dict[str, Any]:
    reason = "; ".join(verdict.reasons) or (None if promoted else "options.activate is false")
    return {
        "promoted": promoted,
        "status": status,
        "reason": reason,
        "checked": verdict.checked,
        "unchecked": verdict.unchecked,
        "note": f"no canaries stored for {verdict.unchecked}: not replayed" if verdict.unchecked else None,
        "activate_requested": activate,
    }


def register_stage_version(
    *,
    job_id: str,
    attempt: int | None = None,
    cl: ContinualFlame,
    index: int,
    summary: dict[str, Any],
    parent: str,
    validation: list[dict],
    cards: dict[str, dict] | None = None,
    options: StageOptions,
    session_factory: sessionmaker[Session],
    store: ArtifactStore,
    settings: Settings,
) -> str:
    """Gate, register and (if it passes and `activate`) promote the stage's version; its id. With
    `attempt`, the registering transaction first checks that attempt still holds the job."""
    components, tasks, modalities = stage_records(cl, index, summary["tasks"], cards)
    files = version_files(cl)
    loaded = canaries.load_as_host(store, files)
    tasks = canaries.with_canaries(loaded, store, tasks, validation)
    with session_scope(session_factory, write=False) as session:
        earlier = registry.list_tasks(session=session, version=parent)
    verdict = Verdict()
    replay_earlier(loaded, store, earlier, verdict)
    check_metrics(summary["tasks"], options.min_metric, verdict)
    status = "ready" if verdict.passed else "candidate"
    promote = verdict.passed and options.activate
    names = ", ".join(t.name for t in tasks)
    with session_scope(session_factory) as session:
        if attempt is not None:  # one job, one version: this attempt must still hold the job
            registry.hold_lease(session=session, job_id=job_id, attempt=attempt)
        version = registry.register_version(
            session=session,
            store=store,
            parent=parent,
            files=files,
            moved_by=f"job:{job_id}",
            components=components,
            tasks=tasks,
            modalities=modalities,
            move_alias=None,
            rank_budget=settings.capacity_rank_budget,
            status=status,
            note="" if verdict.passed else f"held by the promotion gate: {'; '.join(verdict.reasons)}"[:2000],
        )
        if promote:  # from the parent this stage stacked on, or not at all (AliasMoved: nothing moves)
            registry.swap_alias(
                session=session,
                alias="active",
                expected=parent,
                version=version.id,
                moved_by=f"job:{job_id}",
                reason=f"stage {index}: {names}",
            )
        promotion = report(verdict, promoted=promote, status=status, activate=options.activate)
        registry.mark_succeeded(
            session=session,
            job_id=job_id,
            result_version=version.id,
            metrics={**summary, "stage": index, "promotion": promotion},
        )
    return version.id
