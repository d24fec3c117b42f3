"""Task specs as the registry knows them, and the specs a new stage declares.

A stage request is a task-spec file (docs/design.md s2): its tasks may use modalities the model already has
(named only) or new ones declared inline. `stage_specs` resolves both against the parent's specs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from flame_core.specs import ModalitySpec, SpecError, SpecSet, TaskSpec
from service.registry import service as registry


def version_specs(*, session: Session, version: str) -> SpecSet:
    """The specs `version` serves, rebuilt from registry rows (no weights are loaded)."""
    rows = registry.list_modalities(session=session, version=version)
    mods = {m.name: ModalitySpec.from_dict(m.name, m.spec) for m in rows}
    served = registry.list_tasks(session=session, version=version)
    tasks = {t.name: TaskSpec.from_dict(t.spec) for t in served}
    return SpecSet(modalities=mods, tasks=tasks)


def stage_specs(base: SpecSet, raw: dict[str, Any]) -> SpecSet:
    """The new tasks of `raw` with every modality they use: declared inline or taken from `base`.

    Raises SpecError naming the field for malformed specs, unknown modalities, re-declared modalities
    that differ from the model's, or task names the model already has.
    """
    if not isinstance(raw, dict):
        raise SpecError("a task-spec must be a JSON object", "$")
    declared = raw.get("modalities") or {}
    if not isinstance(declared, dict):
        raise SpecError("must be an object of name -> spec", "modalities")
    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise SpecError("must be a non-empty list of task specs", "tasks")
    parsed = SpecSet.from_dict({"modalities": declared, "tasks": []})
    tasks = [TaskSpec.from_dict(t) for t in tasks_raw]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate task names in {names}", "tasks")
    clash = sorted(set(names) & set(base.tasks))
    if clash:
        raise SpecError(f"tasks {clash} already exist in the model; a stage needs new task names", "tasks")
    modalities: dict[str, ModalitySpec] = {}
    for t in tasks:
        for m in t.modalities:
            spec = parsed.modalities.get(m) or base.modalities.get(m)
            if spec is None:
                raise SpecError(
                    f"task {t.name!r} uses modality {m!r}, which neither the model "
                    f"({sorted(base.modalities)}) nor the request declares",
                    f"tasks.{t.name}.modalities",
                )
            modalities[m] = spec
    result = SpecSet(modalities=modalities, tasks={t.name: t for t in tasks})
    base.merge(result)  # refuses a modality re-declared differently, naming it
    return result
