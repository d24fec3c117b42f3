"""Verify a checkpoint someone brings before a model is built from it.

A checkpoint is `config.json` + `model.safetensors`, as `checkpoint.save_checkpoint` (a plain `Flame`,
`flame train`) or `checkpoint.save_continual` (`flame continual`) write them. Tensors are only ever
read with safetensors (never a pickle). Before any weight is loaded, the model the config describes
is built on the `meta` device (no memory) and every tensor's name, shape and dtype in the file's
header is compared with it, strictly: a missing, unexpected or misshapen tensor is refused. Then the
values are read, must be finite, and the model is built for real. Every refusal is a
`CheckpointInvalid` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

from flame_core.checkpoint import FORMAT_VERSION, build_continual
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import Flame, build_flame
from flame_core.naming import kind_of, parse_stage_tensor_key, stage_tensor_key
from flame_core.ranges import check_training_ranges
from flame_core.specs import SpecError, SpecSet
from flame_core.task_stats import check_task_statistics

CONFIG, WEIGHTS = "config.json", "model.safetensors"
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16"}
_DTYPES.update({torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL", torch.uint8: "U8"})
_LISTED = 5  # names quoted per message
MAX_CONFIG_BYTES = 64 * 1024 * 1024  # specs, config and training ranges: kilobytes in practice


class CheckpointInvalid(ValueError):
    """A checkpoint that cannot be served as it is; `file` and `field` say where."""

    def __init__(self, message: str, *, file: str, field: str | None = None) -> None:
        super().__init__(f"{file}: {message}")
        self.message, self.file, self.field = message, file, field


def _names(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def parse_config(raw: bytes) -> dict[str, Any]:
    """`config.json` as a dict of a supported format; CheckpointInvalid otherwise."""
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointInvalid(f"not valid JSON ({e})", file=CONFIG) from None
    if not isinstance(meta, dict):
        raise CheckpointInvalid("must be a JSON object", file=CONFIG)
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointInvalid(
            f"unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT_VERSION})",
            file=CONFIG,
            field="format",
        )
    if meta.get("kind", "flame") not in ("flame", "continual"):
        raise CheckpointInvalid(f"unknown kind {meta.get('kind')!r}", file=CONFIG, field="kind")
    return meta


def _config(meta: dict[str, Any]) -> FlameConfig:
    raw = meta.get("model")
    if not isinstance(raw, dict):
        raise CheckpointInvalid("model must be an object of FlameConfig fields", file=CONFIG, field="model")
    try:
        return FlameConfig(**raw)
    except TypeError as e:
        raise CheckpointInvalid(f"model: {e}", file=CONFIG, field="model") from None
    except ValueError as e:
        raise CheckpointInvalid(str(e), file=CONFIG, field="model") from None


def _specs(raw: Any, where: str) -> SpecSet:
    try:
        return SpecSet.from_dict(raw)
    except SpecError as e:
        raise CheckpointInvalid(f"{where}: {e}", file=CONFIG, field=f"{where}.{e.field}") from None


def _header(path: Path) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, dtype) from the safetensors header alone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for any bad file
        head = path.read_bytes()[:4] if path.is_file() else b""
        hint = ""
        if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head == b"PK\x03\x04":
            hint = " (it looks like a torch.save pickle; pickles are never loaded: save with safetensors)"
        raise CheckpointInvalid(
            f"not a safetensors file{hint}: {type(e).__name__}", file=WEIGHTS, field="weights"
        ) from None


def _skeleton(config: FlameConfig, specs: list[SpecSet]) -> Flame:
    """The model the config builds (stage by stage for a continual checkpoint), on `meta`: no memory."""
    try:
        with torch.device("meta"):
            model = build_flame(config, specs[0])
            for s in specs[1:]:
                model.extend(s)
    except (ValueError, SpecError) as e:
        raise CheckpointInvalid(
            f"the config does not build a model: {e}", file=CONFIG, field="model"
        ) from None
    return model


def _compare(expected: dict[str, tuple[list[int], str]], found: dict[str, tuple[list[int], str]]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise CheckpointInvalid(
            f"{len(missing)} tensor(s) the config's model needs are missing: {_names(missing)}", file=WEIGHTS
        )
    if unexpected:
        raise CheckpointInvalid(
            f"{len(unexpected)} tensor(s) the config's model has no place for: {_names(unexpected)}",
            file=WEIGHTS,
        )
    for name, (shape, dtype) in expected.items():
        if found[name] != (shape, dtype):
            raise CheckpointInvalid(
                f"tensor {name!r} is {found[name][1]} {found[name][0]}; the config's model needs "
                f"{dtype} {shape}",
                file=WEIGHTS,
            )


def _state_shapes(model: Flame, prefix: str = "") -> dict[str, tuple[list[int], str]]:
    return {
        f"{prefix}{k}": (list(v.shape), _DTYPES.get(v.dtype, str(v.dtype)))
        for k, v in model.state_dict().items()
    }


def _stage_shapes(
    meta: dict[str, Any], model: Flame, found: dict[str, tuple[list[int], str]]
) -> dict[str, tuple[list[int], str]]:
    """What each stage tensor in the file must look like, from the manifest's ranks and the model."""
    params = _state_shapes(model)
    out: dict[str, tuple[list[int], str]] = {}
    for i, stage in enumerate(meta["stages"]):
        ranks, shapes = stage.get("ranks") or {}, stage.get("shapes") or {}
        if not isinstance(ranks, dict) or not isinstance(shapes, dict):
            raise CheckpointInvalid("ranks and shapes must be objects", file=CONFIG, field=f"stages[{i}]")
        for name, rank in ranks.items():
            ok = isinstance(rank, int) and rank >= 1 and isinstance(shapes.get(name), list)
            if not ok or name not in params or shapes[name] != params[name][0]:
                raise CheckpointInvalid(
                    f"stage {i} declares a rank-{rank} delta of {name!r} with shape {shapes.get(name)}, "
                    "which the config's model does not have",
                    file=CONFIG,
                    field=f"stages[{i}].ranks",
                )
            shape, dtype = params[name]
            out[stage_tensor_key(i, name, "b")] = ([shape[0], rank], dtype)
            out[stage_tensor_key(i, name, "a")] = ([rank, math.prod(shape[1:])], dtype)
        for key in found:
            parsed = parse_stage_tensor_key(key)
            if parsed is None or parsed[0] != i or key in out:
                continue
            _, name, part = parsed
            if not (part == "full" or (part == "router" and kind_of(name) == "router")):
                continue  # reported as unexpected by _compare
            if name in params:
                out[key] = params[name]
    return out


def _continual_meta(meta: dict[str, Any], model: Flame) -> None:
    """Stages, cursors and parameter births that agree with each other and with the model."""
    stages = meta["stages"]
    if [s.get("index") for s in stages] != list(range(len(stages))):
        raise CheckpointInvalid("stages must be numbered 0, 1, 2, ...", file=CONFIG, field="stages")
    for i, s in enumerate(stages):
        for key in ("tasks", "modalities", "new_modalities"):
            if not isinstance(s.get(key), list) or not all(isinstance(x, str) for x in s[key]):
                raise CheckpointInvalid("must be a list of names", file=CONFIG, field=f"stages[{i}].{key}")
    cursor = meta.get("cursor")
    wanted = {t: i for i, s in enumerate(stages) for t in s.get("tasks", [])}
    if cursor != wanted:
        raise CheckpointInvalid(
            f"cursor must give each task the stage that introduced it: {wanted}", file=CONFIG, field="cursor"
        )
    birth = meta.get("birth")
    names = {n for n, _ in model.named_parameters()}
    if not isinstance(birth, dict) or set(birth) != names:
        raise CheckpointInvalid("birth must name the stage of every parameter", file=CONFIG, field="birth")
    if any(not isinstance(b, int) or not 0 <= b < len(stages) for b in birth.values()):
        raise CheckpointInvalid(f"birth stages must be in 0..{len(stages) - 1}", file=CONFIG, field="birth")


def _finite(tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointInvalid(f"tensor {name!r} holds NaN or infinite values", file=WEIGHTS)


def load_verified(directory: str | Path) -> tuple[ContinualFlame, dict[str, Any]]:
    """The checkpoint in `directory` (both files, checked as above) as a ContinualFlame on the CPU in
    eval mode, with its training ranges; and the checkpoint's `extra`. A plain checkpoint becomes
    stage 0; its ranges come from `extra["training_ranges"]`."""
    src = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (src / name).is_file():
            raise CheckpointInvalid(f"missing from {src}", file=name, field=name)
    if (src / CONFIG).stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointInvalid(f"larger than {MAX_CONFIG_BYTES} bytes", file=CONFIG, field=CONFIG)
    meta = parse_config((src / CONFIG).read_bytes())
    config = _config(meta)
    extra = meta.get("extra") or {}
    if not isinstance(extra, dict):
        raise CheckpointInvalid("extra must be an object", file=CONFIG, field="extra")
    found = _header(src / WEIGHTS)
    continual = meta.get("kind") == "continual"
    if continual:
        stages = meta.get("stages")
        if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
            raise CheckpointInvalid("stages must be a non-empty list", file=CONFIG, field="stages")
        specs = [_specs(s.get("specs"), f"stages[{i}].specs") for i, s in enumerate(stages)]
        skeleton = _skeleton(config, specs)
        _continual_meta(meta, skeleton)
        expected = {**_state_shapes(skeleton, "model."), **_stage_shapes(meta, skeleton, found)}
        ranges, where = meta.get("training_ranges") or {}, "training_ranges"
        stats, stats_where = meta, ""
    else:
        skeleton = _skeleton(config, [_specs(meta.get("specs"), "specs")])
        expected = _state_shapes(skeleton)
        ranges, where = extra.get("training_ranges") or {}, "extra.training_ranges"
        stats, stats_where = extra, "extra."
    _compare(expected, found)
    try:
        check_training_ranges(ranges, skeleton.specs)
    except ValueError as e:
        raise CheckpointInvalid(str(e), file=CONFIG, field=where) from None
    calibration, shift = stats.get("calibration") or {}, stats.get("shift") or {}
    try:
        check_task_statistics(calibration, shift, skeleton.specs, stats_where)
    except ValueError as e:
        raise CheckpointInvalid(str(e), file=CONFIG, field=f"{stats_where}calibration/shift") from None
    # read, not memory-mapped: a file truncated under a mapping would crash the process (SIGBUS)
    tensors = load_safetensors((src / WEIGHTS).read_bytes())
    _finite(tensors)
    if continual:
        cl = build_continual(meta, tensors)
    else:
        model = build_flame(config, skeleton.specs)
        model.load_state_dict(tensors, strict=True)
        cl = ContinualFlame(model.eval())
    cl.training_ranges = ranges
    cl.calibration, cl.shift = calibration, shift
    return cl.eval(), extra


def checkpoint_metrics(extra: dict[str, Any], tasks: list[str]) -> dict[str, dict[str, float]]:
    """Per-task metrics a checkpoint reports, finite numbers only: `flame train` writes them under
    `extra["train"]` (test, else validation); others may put `{task: {metric: value}}` in
    `extra["metrics"]`."""
    train: dict[str, Any] = extra["train"] if isinstance(extra.get("train"), dict) else {}
    source = extra.get("metrics") or train.get("test") or train.get("val") or {}
    out: dict[str, dict[str, float]] = {}
    for task, metrics in source.items() if isinstance(source, dict) else []:
        if task in tasks and isinstance(metrics, dict):
            out[task] = {
                k: float(v)
                for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            }
    return out
