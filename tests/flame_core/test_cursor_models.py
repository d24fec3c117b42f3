"""Cursor models are clean copies: no statistics hooks leak into the frozen per-cursor Flame."""

import torch

from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.experts import Expert
from flame_core.model import build_flame
from flame_core.specs import SpecSet

SPEC = SpecSet.from_dict(
    {
        "modalities": {"labs": {"kind": "tabular", "dim": 3}},
        "tasks": [{"name": "a", "modalities": ["labs"], "head": {"type": "binary"}}],
    }
)


def test_cursor_model_drops_hooks_and_observers():
    cl = ContinualFlame(build_flame(FlameConfig(d_model=16, n_experts=4, expert_hidden=32, n_heads=2), SPEC))
    calls = []
    handle = cl.model.heads["a"].out.register_forward_pre_hook(lambda *_: calls.append(1))
    for m in cl.model.modules():
        if isinstance(m, Expert):
            m.observe = lambda *_: calls.append(2)
    copy0 = cl.cursor_model(0)
    handle.remove()
    assert all(not m._forward_pre_hooks for m in copy0.modules())
    assert all(m.observe is None for m in copy0.modules() if isinstance(m, Expert))
    assert all(not p.requires_grad for p in copy0.parameters())
    assert cl.cursor_model(0) is copy0  # built once
    for p_copy, p_base in zip(copy0.parameters(), cl.model.parameters(), strict=True):
        assert torch.equal(p_copy, p_base)  # cursor 0 is the base model itself
