"""Checkpoints: `model.safetensors` (tensors) + `config.json` (model config and specs), enough to
rebuild the model with no other input."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from flame_core.components import LowRank
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame, Stage
from flame_core.model import Flame, build_flame
from flame_core.naming import parse_stage_tensor_key, stage_tensor_key
from flame_core.specs import SpecSet

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT_VERSION = 1


def _atomic_write(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    directory: str | Path, model: Flame, specs: SpecSet, extra: dict[str, Any] | None = None
) -> Path:
    """Write weights then config, each atomically; returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(out / WEIGHTS, lambda p: save_file(state, p))
    meta = {
        "format": FORMAT_VERSION,
        "model": asdict(model.config),
        "specs": specs.to_dict(),
        "extra": extra or {},
    }
    _atomic_write(out / CONFIG, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    return out


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Flame, SpecSet, dict]:
    """Rebuild the model from `config.json` and load `model.safetensors`; eval mode."""
    src = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} not found: is {src} a FLAME checkpoint directory?")
    meta = json.loads((src / CONFIG).read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"unsupported checkpoint format {meta.get('format')!r} in {src / CONFIG}")
    specs = SpecSet.from_dict(meta["specs"])
    model = build_flame(FlameConfig(**meta["model"]), specs)
    model.load_state_dict(load_file(src / WEIGHTS, device="cpu"), strict=True)
    model.to(device).eval()
    return model, specs, meta.get("extra", {})


def continual_tensors(cl: ContinualFlame) -> dict[str, torch.Tensor]:
    """Every tensor of a continual model, by a stable name (model state + frozen stage tensors)."""
    if cl.open_stage is not None:
        raise ValueError(f"stage {cl.open_stage.index} is still open; end it before saving")
    out = {f"model.{k}": v for k, v in cl.model.state_dict().items()}
    for s in cl.stages:
        for n, d in s.deltas.items():
            if isinstance(d, LowRank):
                out[stage_tensor_key(s.index, n, "b")], out[stage_tensor_key(s.index, n, "a")] = d.b, d.a
            else:
                out[stage_tensor_key(s.index, n, "full")] = d
        for n, r in s.routers.items():
            out[stage_tensor_key(s.index, n, "router")] = r
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def continual_manifest(cl: ContinualFlame) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "kind": "continual",
        "model": asdict(cl.model.config),
        "rank_budget": cl.rank_budget,
        "stages": [
            {
                "index": s.index,
                "specs": cl.specs.subset(s.tasks).to_dict(),
                "tasks": s.tasks,
                "modalities": s.modalities,
                "new_modalities": s.new_modalities,
                "ranks": s.ranks,
                "shapes": {n: list(d.shape) for n, d in s.deltas.items() if isinstance(d, LowRank)},
            }
            for s in cl.stages
        ],
        "birth": cl.birth,
        "cursor": cl.cursor,
        "training_ranges": cl.training_ranges,
        "calibration": cl.calibration,
        "shift": cl.shift,
    }


def save_continual(directory: str | Path, cl: ContinualFlame, extra: dict[str, Any] | None = None) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = continual_tensors(cl)
    _atomic_write(out / WEIGHTS, lambda p: save_file(tensors, p))
    meta = {**continual_manifest(cl), "extra": extra or {}}
    _atomic_write(out / CONFIG, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    return out


def build_continual(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ContinualFlame:
    """Rebuild a `ContinualFlame` from its manifest and tensors: the modules are created stage by stage
    in their original order, then every tensor is loaded."""
    config = FlameConfig(**meta["model"])
    stages = meta["stages"]
    model = build_flame(config, SpecSet.from_dict(stages[0]["specs"]))
    for s in stages[1:]:
        model.extend(SpecSet.from_dict(s["specs"]))
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    cl = ContinualFlame(model, rank_budget=meta.get("rank_budget"))
    cl.birth = {k: int(v) for k, v in meta["birth"].items()}
    cl.cursor = {k: int(v) for k, v in meta["cursor"].items()}
    cl.training_ranges = meta.get("training_ranges", {})  # absent in manifests written before ranges
    cl.calibration = meta.get("calibration", {})  # absent before calibration and shift statistics
    cl.shift = meta.get("shift", {})
    cl.stages = []
    for s in stages:
        i = s["index"]
        stage = Stage(i, list(s["tasks"]), list(s["modalities"]), list(s["new_modalities"]))
        for key, v in tensors.items():
            parsed = parse_stage_tensor_key(key)
            if parsed is None or parsed[0] != i:
                continue
            _, name, part = parsed
            if part == "router":
                stage.routers[name] = v
            elif part == "full":
                stage.deltas[name] = v
            elif part == "b":
                a = tensors[stage_tensor_key(i, name, "a")]
                stage.deltas[name] = LowRank(v, a, tuple(s["shapes"][name]))
        cl.stages.append(stage)
    cl.eval()
    return cl


def load_continual(directory: str | Path, device: str | torch.device = "cpu") -> tuple[ContinualFlame, dict]:
    src = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} not found: is {src} a FLAME continual checkpoint?")
    meta = json.loads((src / CONFIG).read_text())
    if meta.get("kind") != "continual":
        raise ValueError(f"{src / CONFIG} is not a continual checkpoint")
    cl = build_continual(meta, load_file(src / WEIGHTS, device="cpu"))
    return cl.to(device), meta.get("extra", {})
