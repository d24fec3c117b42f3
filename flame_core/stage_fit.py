"""One continual stage, the only place its steps are spelled: begin, train, compress, refit, end.

The benchmark runner (`flame_core.stream.run_stream`) and the service's job (`service.jobs.stage`)
both call `fit_stage`, so what the benchmarks measure is what the service runs. Callers add only
their I/O: the runner scores the test split at the points it reports, the job records progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flame_core.collate import collate
from flame_core.continual import ContinualFlame
from flame_core.ranges import record_training_ranges
from flame_core.specs import SpecSet
from flame_core.strategies.base import Strategy
from flame_core.task_stats import COVERAGE, record_task_statistics
from flame_core.training import TrainConfig, TrainResult, seed_everything, train

Scores = dict[str, float]


@dataclass
class StageFit:
    """What a stage left behind besides the model: training record, the strategy's report, and the
    new tasks' scores before `compress` and right after it (empty when no `score` was given)."""

    trained: TrainResult
    info: dict[str, Any]
    before_end: Scores = field(default_factory=dict)
    at_truncation: Scores = field(default_factory=dict)


def fit_stage(
    strategy: Strategy,
    specs: SpecSet,
    train_samples: Sequence[dict],
    val_samples: Sequence[dict],
    config: TrainConfig,
    *,
    score: Callable[[Sequence[str]], Scores] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    coverage: float = COVERAGE,
) -> StageFit:
    """Learn the tasks of `specs` (the stage's tasks and any new modalities) on `strategy.module`.

    Seeds everything with `config.seed` first, so the same parent, data and seed give the same
    stage bit for bit whoever calls. `on_phase` hears "training", "truncating", "refitting" (only
    when there is something to refit) and "ending"; `score(tasks)` is called after training and,
    if `compress` changed the model, after it. `coverage`: the new tasks' conformal sets' target.
    """
    module = strategy.module
    if module is None:
        raise ValueError("the strategy has no module: wrap a pretrained model first")
    tasks = list(specs.tasks)
    phase = on_phase or (lambda _: None)
    seed_everything(config.seed)
    phase("training")
    params = strategy.begin_stage(specs)
    all_specs: SpecSet = module.specs  # type: ignore[assignment]
    trained = train(
        module,
        all_specs,
        train_samples,
        val_samples,
        config,
        tasks=tasks,
        parameters=params,
        penalty=strategy.penalty,
        on_epoch=on_epoch,
    )
    before = score(tasks) if score else {}
    phase("truncating")
    batch = collate(train_samples, all_specs, tasks=tasks, tokenizer=module.config.tokenizer())  # type: ignore[operator,union-attr]
    refit = strategy.compress(batch, tasks)
    at_truncation = dict(before) if refit is None or not score else score(tasks)
    if refit and strategy.refit_epochs > 0:
        phase("refitting")
        epochs = replace(config, epochs=strategy.refit_epochs)
        train(
            module,
            all_specs,
            train_samples,
            val_samples,
            epochs,
            tasks=tasks,
            parameters=refit,
            keep_initial=True,
        )
    phase("ending")
    info = strategy.end_stage(batch, tasks)
    if isinstance(module, ContinualFlame):  # its tasks' statistics are fixed with their weights
        record_training_ranges(module.training_ranges, train_samples, all_specs, tasks)
        record_task_statistics(module, train_samples, val_samples, tasks, coverage=coverage)
    return StageFit(trained, info, before, at_truncation)
