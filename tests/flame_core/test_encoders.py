import pytest
import torch

from flame_core.batch import ModalityBatch
from flame_core.encoders import build_encoder, normalise_times
from flame_core.specs import ModalitySpec


def pad_steps(mb: ModalityBatch, extra: int) -> ModalityBatch:
    """The same batch with `extra` padded steps appended, filled with garbage where the mask is False."""

    def grow(t: torch.Tensor | None, fill: float | bool) -> torch.Tensor | None:
        if t is None:
            return None
        shape = (t.shape[0], extra, *t.shape[2:])
        return torch.cat([t, torch.full(shape, fill, dtype=t.dtype)], dim=1)

    values = grow(mb.values, 7 if mb.kind == "text" else 99.0)
    return ModalityBatch(
        mb.kind, values, mb.present, grow(mb.obs, True), grow(mb.times, 1e4), grow(mb.pad, False)
    )


def test_timeseries_tokens_with_irregular_times_and_missing_values(mk):
    config = mk.config()
    enc = build_encoder(ModalitySpec("v", "timeseries", dim=3), config)
    gen = torch.Generator().manual_seed(0)
    mb = mk.absent(mk.timeseries(6, 7, 3, gen, miss=0.5), [1])
    mb.obs[4] = False  # present, but nothing observed
    mb.values[4] = 0.0
    tokens, mask = enc(mb)
    assert tokens.shape == (6, config.ts_ref_points, 16) and mask.dtype == torch.bool
    assert torch.isfinite(tokens).all()
    assert mask[[0, 2, 3, 5]].all() and not mask[[1, 4]].any()
    assert torch.equal(tokens[[1, 4]], torch.zeros(2, config.ts_ref_points, 16))
    tokens.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)
    assert enc.ref_times.grad.abs().sum() > 0


def test_timeseries_padding_and_unobserved_values_do_not_change_tokens(mk):
    enc = build_encoder(ModalitySpec("v", "timeseries", dim=3), mk.config()).eval()
    gen = torch.Generator().manual_seed(1)
    mb = mk.timeseries(5, 6, 3, gen)
    tokens, _ = enc(mb)
    padded, _ = enc(pad_steps(mb, 4))
    assert torch.allclose(tokens, padded, atol=1e-6, rtol=0)
    hidden = mb.values.clone()
    hidden[~mb.obs] = 123.0  # values under a False obs mask must be ignored
    again, _ = enc(ModalityBatch("timeseries", hidden, mb.present, mb.obs, mb.times, mb.pad))
    assert torch.allclose(tokens, again, atol=1e-6, rtol=0)
    changed = mb.values.clone()
    changed[mb.obs] += 1.0
    moved, _ = enc(ModalityBatch("timeseries", changed, mb.present, mb.obs, mb.times, mb.pad))
    assert not torch.allclose(tokens, moved)


def test_time_normalisation_is_per_sample_and_unit_free():
    times = torch.tensor([[0.0, 2.0, 4.0, 0.0], [10.0, 10.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    t_norm, span = normalise_times(times, valid)
    assert torch.allclose(t_norm[0, :3], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(t_norm[1:], torch.zeros(2, 4))  # one instant or nothing: all at 0, no NaN
    assert torch.allclose(span, torch.tensor([4.0, 0.0, 0.0]))
    scaled, _ = normalise_times(times * 1000 + 5, valid)
    assert torch.allclose(scaled[valid], t_norm[valid], atol=1e-6)


def test_tabular_tokens_mark_missing_values(mk):
    enc = build_encoder(ModalitySpec("l", "tabular", dim=4), mk.config())
    values = torch.zeros(3, 4)
    obs = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    present = torch.tensor([True, True, False])
    tokens, mask = enc(ModalityBatch("tabular", values, present, obs=obs))
    assert tokens.shape == (3, 4, 16)
    assert mask[:2].all() and not mask[2].any()
    assert not torch.allclose(tokens[0, 1], tokens[1, 1])  # observed 0 differs from missing
    assert torch.equal(tokens[0, 0], tokens[1, 0])
    assert torch.equal(tokens[2], torch.zeros(4, 16))


def test_text_chunks_ignore_padding_and_respect_the_vocabulary(mk):
    config = mk.config()  # text_chunk=2, text_max_tokens=32, text_buckets=50
    enc = build_encoder(ModalitySpec("n", "text"), config).eval()
    gen = torch.Generator().manual_seed(2)
    mb = mk.absent(mk.text(4, 7, 50, gen), [3])
    tokens, mask = enc(mb)
    assert tokens.shape == (4, 4, 16)  # ceil(7 / 2) chunks
    assert torch.equal(mask[:3], ((mb.pad[:3].sum(1, keepdim=True) + 1) // 2) > torch.arange(4))
    assert not mask[3].any() and torch.equal(tokens[3], torch.zeros(4, 16))
    padded, pmask = enc(pad_steps(mb, 5))
    assert torch.allclose(padded[:, :4], tokens, atol=1e-6, rtol=0) and not pmask[:, 4:].any()
    bad = ModalityBatch("text", mb.values + 60, mb.present, pad=mb.pad)
    with pytest.raises(ValueError, match="text_buckets"):
        enc(bad)


def test_text_longer_than_the_cap_is_cut(mk):
    enc = build_encoder(ModalitySpec("n", "text"), mk.config(text_max_tokens=6, text_chunk=2))
    ids = torch.randint(1, 50, (2, 20))
    tokens, mask = enc(
        ModalityBatch("text", ids, torch.ones(2, dtype=torch.bool), pad=torch.ones(2, 20).bool())
    )
    assert tokens.shape == (2, 3, 16) and mask.all()


def test_embedding_tokens_with_and_without_times(mk):
    enc = build_encoder(ModalitySpec("e", "embedding", dim=5), mk.config())
    values = torch.randn(3, 2, 5)
    pad = torch.tensor([[1, 1], [1, 0], [0, 0]], dtype=torch.bool)
    present = torch.tensor([True, True, False])
    values[~pad] = 0.0
    times = torch.tensor([[0.0, 3.0], [1.0, 0.0], [0.0, 0.0]])
    tokens, mask = enc(ModalityBatch("embedding", values, present, times=times, pad=pad))
    assert tokens.shape == (3, 2, 16) and torch.equal(mask, pad)
    assert torch.isfinite(tokens).all() and torch.equal(tokens[2], torch.zeros(2, 16))
    untimed, _ = enc(ModalityBatch("embedding", values, present, pad=pad))
    assert not torch.allclose(tokens[0], untimed[0])


def test_image_patches_cover_sides_that_do_not_divide(mk):
    enc = build_encoder(ModalitySpec("i", "image", dim=5, channels=2), mk.config(image_patch=2))
    present = torch.tensor([True, False])
    tokens, mask = enc(ModalityBatch("image", torch.randn(2, 2, 5, 5), present))
    assert tokens.shape == (2, 9, 16)  # ceil(5 / 2) ** 2 patches
    assert mask[0].all() and not mask[1].any()
    with pytest.raises(ValueError, match="image batch shape"):
        enc(ModalityBatch("image", torch.randn(2, 1, 5, 5), present))
