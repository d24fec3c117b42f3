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

from flame_core.config import FlameConfig
from flame_core.model import Flame, build_flame
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
