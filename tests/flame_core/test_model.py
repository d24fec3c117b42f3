from dataclasses import asdict

import pytest
import torch

from flame_core.batch import Batch, ModalityBatch
from flame_core.config import FlameConfig
from flame_core.losses import task_loss
from flame_core.model import Flame, FlameOutput, Routing, build_flame
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec

HEADS = {
    "binary": HeadSpec("binary"),
    "multiclass": HeadSpec("multiclass", classes=3),
    "multilabel": HeadSpec("multilabel", classes=2),
    "regression": HeadSpec("regression"),
}


def multitask_specs() -> SpecSet:
    modalities = {
        "vitals": ModalitySpec("vitals", "timeseries", dim=3),
        "labs": ModalitySpec("labs", "tabular", dim=5),
        "notes": ModalitySpec("notes", "text"),
        "scan": ModalitySpec("scan", "image", dim=4),
    }
    tasks = {
        "death": TaskSpec("death", ("vitals", "labs", "notes"), HEADS["binary"], "spread"),
        "group": TaskSpec("group", ("labs", "notes"), HEADS["multiclass"], "concentrate"),
        "scan_only": TaskSpec("scan_only", ("scan",), HEADS["regression"]),
    }
    return SpecSet(modalities=modalities, tasks=tasks)


def with_scan(batch: Batch) -> Batch:
    scan = ModalityBatch("image", torch.randn(batch.size, 1, 4, 4), torch.ones(batch.size, dtype=torch.bool))
    return Batch({**batch.modalities, "scan": scan}, batch.size)


def replace(batch: Batch, name: str, mb: ModalityBatch) -> Batch:
    return Batch({**batch.modalities, name: mb}, batch.size)


def test_config_round_trips_and_validates():
    config = FlameConfig(gating="gaussian", top_k=3)
    assert FlameConfig(**asdict(config)) == config
    for bad, field in [
        ({"top_k": 9}, "top_k"),
        ({"gating": "relu"}, "gating"),
        ({"d_model": 30, "n_heads": 4}, "d_model"),
        ({"dropout": 1.0}, "dropout"),
        ({"n_experts": 0}, "n_experts"),
        ({"balance_coef": -1.0}, "balance_coef"),
        ({"text_chunk": 0}, "text_chunk"),
    ]:
        with pytest.raises(ValueError, match=field):
            FlameConfig(**bad)  # type: ignore[arg-type]


def test_forward_returns_outputs_losses_and_routing(mk):
    specs = multitask_specs()
    config = mk.config()
    model = build_flame(config, specs)
    assert isinstance(model, Flame)
    out = model(with_scan(mk.batch(bsz=6)))
    assert isinstance(out, FlameOutput)
    assert {t: tuple(v.shape) for t, v in out.outputs.items()} == {
        "death": (6, 1),
        "group": (6, 3),
        "scan_only": (6, 1),
    }
    assert set(out.routing) == {"vitals", "labs", "notes", "scan"}
    for r in out.routing.values():
        assert isinstance(r, Routing)
        assert r.experts.shape == (6, 2) and r.experts.dtype == torch.long
        assert torch.allclose(r.weights.sum(1), torch.ones(6), atol=1e-6) and r.present.all()
    expected = config.balance_coef * out.balance_loss + config.interaction_coef * out.interaction_loss
    assert torch.allclose(out.aux_loss, expected)
    assert out.balance_loss.item() > 0 and out.aux_loss.dim() == 0


def test_eval_forward_skips_the_aux_losses_and_keeps_outputs_and_routing(mk):
    model = build_flame(mk.config(), multitask_specs())
    batch = with_scan(mk.batch(bsz=6))
    model.eval()
    out = model(batch)
    assert [out.aux_loss.item(), out.balance_loss.item(), out.interaction_loss.item()] == [0.0, 0.0, 0.0]
    assert out.aux_loss.dim() == 0 and set(out.routing) == {"vitals", "labs", "notes", "scan"}
    model.train()
    torch.manual_seed(0)
    trained = model(batch)
    assert trained.balance_loss.item() > 0 and trained.aux_loss.item() > 0
    model.eval()
    again = model(batch)  # eval outputs do not depend on the skipped losses
    assert all(torch.equal(out.outputs[t], again.outputs[t]) for t in out.outputs)


def test_requested_tasks_run_only_their_modalities(mk):
    model = build_flame(mk.config(), multitask_specs())
    batch = mk.batch(bsz=4)  # no "scan" at all: not needed for "group"
    out = model(batch, tasks=["group"])
    assert set(out.outputs) == {"group"} and set(out.routing) == {"labs", "notes"}
    with pytest.raises(ValueError, match="unknown tasks"):
        model(batch, tasks=["nope"])


def test_absent_modality_uses_the_missing_vector(mk):
    model = build_flame(mk.config(), mk.specs()).eval()
    batch = mk.batch(bsz=5, seed=3)
    notes = mk.absent(batch.modalities["notes"], [0, 2])
    batch = replace(batch, "notes", notes)
    out = model(batch)
    assert not out.routing["notes"].present[[0, 2]].any()
    assert torch.equal(out.routing["notes"].weights[[0, 2]], torch.zeros(2, 2))
    # Raw values of an absent modality are ignored...
    junk = ModalityBatch("text", notes.values.clone(), notes.present, pad=notes.pad.clone())
    junk.values[[0, 2]] = 17
    junk.pad[[0, 2]] = True
    assert torch.equal(model(replace(batch, "notes", junk)).outputs["t"], out.outputs["t"])
    # ...the learned missing vector stands in for them...
    with torch.no_grad():
        model.heads["t"].missing[2] += 1.0  # "notes" is the third modality of the task
    moved = model(batch).outputs["t"]
    assert not torch.allclose(moved[[0, 2]], out.outputs["t"][[0, 2]])
    assert torch.equal(moved[[1, 3, 4]], out.outputs["t"][[1, 3, 4]])
    # ...while a present modality's values do change the output.
    labs = batch.modalities["labs"]
    shifted = ModalityBatch("tabular", labs.values + labs.obs.float(), labs.present, obs=labs.obs)
    assert not torch.allclose(model(replace(batch, "labs", shifted)).outputs["t"], out.outputs["t"])


def test_modality_missing_from_the_batch_counts_as_absent(mk):
    model = build_flame(mk.config(), mk.specs()).eval()
    batch = mk.batch(bsz=3)
    everywhere_absent = mk.absent(batch.modalities["notes"], [0, 1, 2])
    a = model(replace(batch, "notes", everywhere_absent))
    b = model(Batch({k: v for k, v in batch.modalities.items() if k != "notes"}, 3))
    assert torch.equal(a.outputs["t"], b.outputs["t"])
    assert not b.routing["notes"].present.any()


def test_padding_does_not_change_outputs(mk):
    model = build_flame(mk.config(), mk.specs()).eval()
    batch = mk.batch(bsz=5, seed=4)
    vit, notes = batch.modalities["vitals"], batch.modalities["notes"]

    def grow(t: torch.Tensor, n: int, fill: float) -> torch.Tensor:
        return torch.cat([t, torch.full((t.shape[0], n, *t.shape[2:]), fill, dtype=t.dtype)], dim=1)

    vit_padded = ModalityBatch(
        "timeseries",
        grow(vit.values, 3, 5.0),
        vit.present,
        obs=grow(vit.obs, 3, True),
        times=grow(vit.times, 3, 1e3),
        pad=grow(vit.pad, 3, False),
    )
    notes_padded = ModalityBatch(
        "text", grow(notes.values, 6, 9), notes.present, pad=grow(notes.pad, 6, False)
    )
    padded = Batch({"vitals": vit_padded, "labs": batch.modalities["labs"], "notes": notes_padded}, 5)
    assert torch.allclose(model(batch).outputs["t"], model(padded).outputs["t"], atol=1e-5, rtol=0)


def test_samples_do_not_influence_each_other(mk):
    model = build_flame(mk.config(), mk.specs()).eval()
    batch = mk.batch(bsz=6, seed=5)
    full = model(batch).outputs["t"]
    for i in (0, 4):
        one = Batch({k: select(v, i) for k, v in batch.modalities.items()}, 1)
        assert torch.allclose(model(one).outputs["t"][0], full[i], atol=1e-5)


def select(mb: ModalityBatch, i: int) -> ModalityBatch:
    def pick(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[i : i + 1]

    return ModalityBatch(
        mb.kind, mb.values[i : i + 1], mb.present[i : i + 1], pick(mb.obs), pick(mb.times), pick(mb.pad)
    )


def test_irregular_sparse_inputs_never_give_nan(mk):
    model = build_flame(mk.config(dropout=0.1), mk.specs()).train()
    batch = mk.batch(bsz=6, seed=6)
    vit = batch.modalities["vitals"]
    vit.obs[1] = False  # present but nothing observed
    vit.values[1] = 0.0
    vit.times[2] = 7.0  # all steps at the same instant
    batch = replace(batch, "labs", mk.absent(batch.modalities["labs"], [1, 3]))
    out = model(batch)
    assert torch.isfinite(out.outputs["t"]).all() and torch.isfinite(out.aux_loss)
    assert not out.routing["vitals"].present[1]
    (out.outputs["t"].sum() + out.aux_loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def make_labels(head: HeadSpec, batch: Batch) -> torch.Tensor:
    """Labels that depend on the inputs, so a model can fit them."""
    score = batch.modalities["labs"].values[:, :2].sum(1)  # (B,)
    if head.type == "binary":
        return (score > 0).long()
    if head.type == "multiclass":
        return torch.bucketize(score, torch.tensor([-0.5, 0.5]))
    if head.type == "multilabel":
        return torch.stack([score > 0, batch.modalities["labs"].values[:, 2] > 0], dim=1).float()
    return score


@pytest.mark.parametrize("head_type", list(HEADS))
def test_every_head_type_trains_and_gradients_reach_routers_and_used_experts(mk, head_type):
    head = HEADS[head_type]
    model = build_flame(mk.config(), mk.specs(head=head))
    batch = mk.batch(bsz=16, seed=7)
    labels, mask = make_labels(head, batch), torch.ones(16, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return task_loss(head, model(batch).outputs["t"], labels, mask).item()

    before = eval_loss()
    model.train()
    for step in range(30):
        out = model(batch)
        loss = task_loss(head, out.outputs["t"], labels, mask) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for name, router in model.blocks[0].routers.items():
                assert router.w_gate.grad.abs().sum() > 0, name
                assert router.pool.query.grad.abs().sum() > 0, name
            used = torch.cat([r.experts[r.present].flatten() for r in out.routing.values()]).unique()
            for e in used.tolist():
                expert = model.blocks[0].moe.experts[e]
                for p in (expert.conv.weight, expert.fc1.weight, expert.fc2.weight):
                    assert p.grad is not None and p.grad.abs().sum() > 0, e
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)
