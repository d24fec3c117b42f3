"""Run a continual stream with one strategy and score it: a[t][i], final average, BWT, forgetting."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from flame_core.benchmarks.base import BenchmarkData
from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.model import Flame, build_flame
from flame_core.stage_fit import fit_stage
from flame_core.strategies.base import Strategy
from flame_core.training import TrainConfig, evaluate, seed_everything, train


def parse_stream(text: str) -> list[list[str]]:
    """`"pheno;los,ihm;mor"` -> [["pheno"], ["los", "ihm"], ["mor"]] (`;` stages, `,` tasks)."""
    stages = [[t.strip() for t in part.split(",") if t.strip()] for part in text.split(";")]
    if not stages or any(not s for s in stages):
        raise ValueError(f"stream {text!r} has an empty stage; use ';' between stages and ',' within")
    flat = [t for s in stages for t in s]
    if len(set(flat)) != len(flat):
        raise ValueError(f"stream {text!r} names a task twice")
    return stages


@dataclass
class StreamResult:
    strategy: str
    stages: list[list[str]]
    metric: dict[str, str]
    matrix: list[dict[str, float]]  # after stage t: {task: score} for every task seen so far
    before_end: list[dict[str, float]]  # the stage's new tasks scored before end_stage (truncation)
    stage_params: list[int]
    serving_params: list[int]
    seconds: list[float]
    info: list[dict[str, Any]] = field(default_factory=list)
    at_truncation: list[dict[str, float]] = field(default_factory=list)  # after compress, before refit

    def summary(self) -> dict[str, float]:
        """Final average over all tasks; BWT and max-based forgetting over tasks before the last stage."""
        final = self.matrix[-1]
        intro = {t: i for i, stage in enumerate(self.stages) for t in stage}
        old = [t for t in final if intro[t] < len(self.stages) - 1]
        bwt = [final[t] - self.matrix[intro[t]][t] for t in old]
        forget = [
            max(self.matrix[s][t] for s in range(intro[t], len(self.stages) - 1)) - final[t] for t in old
        ]
        return {
            "final_average": float(np.mean(list(final.values()))),
            "bwt": float(np.mean(bwt)) if bwt else 0.0,
            "forgetting": float(np.mean(forget)) if forget else 0.0,
            "max_forgetting": float(max(forget)) if forget else 0.0,
            "stage_params_mean": float(np.mean(self.stage_params[1:])) if len(self.stage_params) > 1 else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def score_tasks(module, specs, samples, tasks, metric) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """One task per forward pass (as the service predicts), so scores are exactly reproducible."""
    out = {}
    for t in tasks:
        m = evaluate(module, specs, samples, [t])[t]
        out[t] = float(m.get(metric[t], math.nan))
    return out


def _score_now(module, samples, metric, tasks) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """`score_tasks` on the module's specs as they are at the call (a stage grows them)."""
    return score_tasks(module, module.specs, samples, tasks, metric)


def run_stream(
    strategy: Strategy,
    data: BenchmarkData,
    stages: Sequence[Sequence[str]],
    *,
    model_config: FlameConfig | None = None,
    train_config: TrainConfig | None = None,
    pretrained: Flame | None = None,
) -> StreamResult:
    """Stage 0: multitask FLAME on the first stage's tasks (or a copy of `pretrained`, so several
    strategies can share one stage 0). Later stages: the strategy's hooks."""
    stage_lists: list[list[str]] = [list(s) for s in stages]
    stages = stage_lists
    unknown = [t for s in stages for t in s if t not in data.specs.tasks]
    if unknown:
        raise ValueError(f"stream names unknown tasks {unknown}; {data.name} has {sorted(data.specs.tasks)}")
    train_config = train_config or TrainConfig(progress=False)
    model_config = model_config or FlameConfig()
    metric = {t: data.primary_metric.get(t, "auroc") for s in stages for t in s}
    train_s, val_s, test_s = data.splits["train"], data.splits["val"], data.splits["test"]
    result = StreamResult(strategy.name, stage_lists, metric, [], [], [], [], [])
    seen: list[str] = []
    for t, tasks in enumerate(stages):
        start = time.perf_counter()
        seed_everything(train_config.seed + t)
        specs = data.specs.subset(list(tasks))
        if t == 0:
            if pretrained is not None:
                model = copy.deepcopy(pretrained)
                model_config = model.config
            else:
                model = build_flame(model_config, specs)
                train(model, specs, train_s, val_s, train_config, tasks=tasks)
            module = strategy.wrap(model)
            # e.g. EWC's Fisher on the pretraining tasks (a no-op for most strategies)
            strategy.after_pretraining(
                collate(train_s, specs, tasks=tasks, tokenizer=model_config.tokenizer()), tasks
            )
            info: dict[str, Any] = {}
            result.before_end.append({})
            result.at_truncation.append({})
            stage_params = serving = sum(p.numel() for p in model.parameters())
        else:
            fit = fit_stage(
                strategy,
                specs,
                train_s,
                val_s,
                replace(train_config, seed=train_config.seed + t),
                score=partial(_score_now, module, test_s, metric),
            )
            result.before_end.append(fit.before_end)
            result.at_truncation.append(fit.at_truncation)
            info = fit.info
            stage_params, serving = strategy.stage_parameters(), strategy.serving_parameters()
        seen += tasks
        module.eval()
        result.matrix.append(score_tasks(module, module.specs, test_s, seen, metric))  # type: ignore[union-attr]
        result.stage_params.append(stage_params)
        result.serving_params.append(serving)
        result.seconds.append(time.perf_counter() - start)
        result.info.append(info)
    return result
