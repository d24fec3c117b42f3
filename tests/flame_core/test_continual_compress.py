"""`ContinualFlame.compress`: truncation to live rank-r factors that the stage may refit before freezing."""

import pytest
import torch

from flame_core.components import as_matrix, truncate
from flame_core.continual import CapacityExceeded, ContinualFlame
from flame_core.model import build_flame
from flame_core.specs import HeadSpec, SpecSet, TaskSpec
from flame_core.stages import param_key
from flame_core.statistics import routed_second_moments


def opened(mk) -> tuple[ContinualFlame, object, torch.Tensor]:
    """Stage 0 with task a; stage 1 open with task b, its full deltas filled as if trained."""
    specs = mk.specs()
    base = SpecSet(
        modalities=specs.modalities, tasks={"a": TaskSpec("a", ("vitals", "labs"), HeadSpec("binary"))}
    )
    cl = ContinualFlame(build_flame(mk.config(), base))
    batch = mk.batch(12)
    cl.eval()
    with torch.no_grad():
        before = cl(batch, ["a"]).outputs["a"].clone()
    new = SpecSet(
        modalities=specs.modalities, tasks={"b": TaskSpec("b", ("labs", "notes"), HeadSpec("binary"))}
    )
    cl.begin_stage(new)
    with torch.no_grad():
        for p in cl.live_deltas.values():
            p.normal_(0, 0.05)
    return cl, batch, before


def test_compress_keeps_the_best_rank_r_factors_and_end_stage_stores_them(mk):
    cl, batch, before = opened(mk)
    full = {k: p.detach().clone() for k, p in cl.live_deltas.items()}
    moments, _ = routed_second_moments(cl, cl.model, batch, ["b"])
    ranks = cl.compress(rank=3, second_moments=moments)
    matrices = [k for k, d in full.items() if d.dim() >= 2]
    assert matrices and set(ranks) == {k.replace("__", ".") for k in matrices}
    assert all(r == min(3, *as_matrix(full[param_key(n)]).shape) for n, r in ranks.items())
    for key in matrices:
        want = truncate(full[key], ranks[key.replace("__", ".")], moments.get(key.replace("__", ".")))
        assert torch.allclose(cl.live_b[key] @ cl.live_a[key], want.b @ want.a, atol=1e-6), key
        assert key not in cl.live_deltas  # the full delta is gone
    assert {k for k in cl.live_deltas} == {k for k, d in full.items() if d.dim() < 2}  # vectors stay full
    live = {id(p) for p in cl.stage_parameters()}
    assert all(id(p) in live for p in (*cl.live_a.values(), *cl.live_b.values()))
    factors = {k: (cl.live_b[k].detach().clone(), cl.live_a[k].detach().clone()) for k in cl.live_b}
    stage = cl.end_stage()
    assert stage.ranks == ranks
    for key, (b, a) in factors.items():
        stored = stage.deltas[key.replace("__", ".")]
        assert torch.equal(stored.b, b) and torch.equal(stored.a, a)
    cl.eval()
    with torch.no_grad():
        assert torch.equal(cl(batch, ["a"]).outputs["a"], before)


def test_refit_trains_the_factors_at_fixed_rank_and_nothing_older(mk):
    cl, batch, before = opened(mk)
    moments, _ = routed_second_moments(cl, cl.model, batch, ["b"])
    ranks = cl.compress(rank=2, second_moments=moments)
    frozen = {n: p.detach().clone() for n, p in cl.model.named_parameters() if not n.startswith("heads.b.")}
    params = cl.stage_parameters()
    start = {k: b.detach().clone() for k, b in cl.live_b.items()}
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1.0)
    target = torch.ones(batch.size)
    cl.train()
    for _ in range(3):
        out = cl(batch, ["b"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.outputs["b"].squeeze(1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(cl.live_b[k], start[k]) for k in start)
    for n, p in cl.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    stage = cl.end_stage()
    assert stage.ranks == ranks  # refitting never grows the stored rank
    cl.eval()
    with torch.no_grad():
        assert torch.equal(cl(batch, ["a"]).outputs["a"], before)


def test_budget_is_checked_at_compress_and_the_stage_stays_open(mk):
    cl, batch, _ = opened(mk)
    cl.rank_budget = 1
    full = {k: p.detach().clone() for k, p in cl.live_deltas.items()}
    with pytest.raises(CapacityExceeded, match="budget 1"):
        cl.compress(rank=2)
    assert cl.current_stage == 1 and not cl.live_b and not cl.live_a
    assert all(torch.equal(cl.live_deltas[k], d) for k, d in full.items())
    ranks = cl.compress(rank=1)
    assert set(ranks.values()) == {1}
    assert len(cl.end_stage().ranks) == len(ranks)
