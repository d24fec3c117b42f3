import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flame_core.collate import collate, make_loader
from flame_core.specs import SpecSet
from flame_core.tokenizer import HashTokenizer
from flame_core.validation import validate_dataset

SPECS = SpecSet.from_dict(
    {
        "modalities": {
            "vitals": {"kind": "timeseries", "dim": 2},
            "labs": {"kind": "tabular", "dim": 3},
            "note": {"kind": "text"},
            "emb": {"kind": "embedding", "dim": 2},
            "xray": {"kind": "image", "dim": 2},
            "rgb": {"kind": "image", "dim": 2, "channels": 3},
        },
        "tasks": [
            {"name": "death", "modalities": ["vitals", "labs", "note"], "head": {"type": "binary"}},
            {
                "name": "stage",
                "modalities": ["vitals", "emb"],
                "head": {"type": "multiclass", "labels": ["a", "b", "c"]},
            },
            {"name": "pheno", "modalities": ["xray"], "head": {"type": "multilabel", "classes": 3}},
            {"name": "los", "modalities": ["labs", "rgb"], "head": {"type": "regression"}},
        ],
    }
)


def samples() -> list[dict]:
    full = {
        "id": "a",
        "modalities": {
            "vitals": {"times": [0, 2.5, 4], "values": [[1, None], [None, None], [3, 4]]},
            "labs": {"values": [None, 2, 3]},
            "note": {"text": "fever and cough"},
            "emb": {"embeddings": [[1, 2], [3, 4]], "times": [1, 5]},
            "xray": {"pixels": [[1, 2], [3, 4]]},
            "rgb": {"pixels": [[[1, 1], [1, 1]], [[2, 2], [2, 2]], [[3, 3], [3, 3]]]},
        },
        "labels": {"death": 1, "stage": "c", "pheno": [1, 0, 1], "los": 2.5},
    }
    short = {
        "id": 7,
        "modalities": {"vitals": {"times": [1], "values": [[5, 6]]}, "emb": {"embedding": [9, 8]}},
        "labels": {"death": 0, "stage": None},
    }
    empty_ts = {"modalities": {"labs": {"values": [1, 1, 1]}}, "labels": {"los": -1.0}}
    return [full, short, empty_ts]


def test_timeseries_padding_missing_values_and_absent_samples() -> None:
    vit = collate(samples(), SPECS).modalities["vitals"]
    assert vit.kind == "timeseries" and vit.values.dtype == torch.float32
    assert vit.values.shape == (3, 3, 2) and vit.obs.shape == (3, 3, 2)
    assert vit.present.tolist() == [True, True, False]
    assert vit.pad.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert vit.times[0].tolist() == [0, 2.5, 4] and vit.times[1].tolist() == [1, 0, 0]
    assert vit.values[0].tolist() == [[1, 0], [0, 0], [3, 4]]
    assert vit.obs[0].tolist() == [[True, False], [False, False], [True, True]]
    assert vit.values[1, 0].tolist() == [5, 6] and vit.obs[1, 1:].any().item() is False
    assert vit.values[2].abs().sum().item() == 0 and vit.obs[2].any().item() is False


def test_other_kinds_shapes_and_masks() -> None:
    b = collate(samples(), SPECS)
    labs = b.modalities["labs"]
    assert labs.values.tolist() == [[0, 2, 3], [0, 0, 0], [1, 1, 1]]
    assert labs.obs.tolist() == [[False, True, True], [False, False, False], [True, True, True]]
    assert labs.present.tolist() == [True, False, True] and labs.pad is None and labs.times is None
    emb = b.modalities["emb"]
    assert emb.values.shape == (3, 2, 2) and emb.obs is None
    assert emb.values[1, 0].tolist() == [9, 8] and emb.times[1].tolist() == [0, 0]
    assert emb.times[0].tolist() == [1, 5]
    assert emb.pad.tolist() == [[True, True], [True, False], [False, False]]
    xray, rgb = b.modalities["xray"], b.modalities["rgb"]
    assert xray.values.shape == (3, 1, 2, 2) and xray.values[0, 0].tolist() == [[1, 2], [3, 4]]
    assert rgb.values.shape == (3, 3, 2, 2) and rgb.values[0, :, 0, 0].tolist() == [1, 2, 3]
    assert xray.present.tolist() == [True, False, False] and rgb.values[1:].abs().sum().item() == 0
    note = b.modalities["note"]
    ids = HashTokenizer().encode("fever and cough")
    assert note.values.dtype == torch.long and note.values.shape == (3, len(ids))
    assert note.values[0].tolist() == ids
    assert note.pad.tolist() == (note.values != 0).tolist()
    assert note.present.tolist() == [True, False, False]
    assert b.ids == ["a", "7", None] and b.size == 3


def test_labels_and_label_masks() -> None:
    b = collate(samples(), SPECS)
    assert b.labels["death"].dtype == torch.long and b.labels["death"].tolist() == [1, 0, 0]
    assert b.label_mask["death"].tolist() == [True, True, False]
    assert b.labels["stage"].tolist()[0] == 2 and b.label_mask["stage"].tolist() == [True, False, False]
    assert b.labels["pheno"].dtype == torch.float32 and b.labels["pheno"].shape == (3, 3)
    assert b.labels["pheno"].tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert b.labels["los"].dtype == torch.float32 and b.labels["los"].tolist() == [2.5, 0, -1]
    assert b.label_mask["los"].tolist() == [True, False, True]


def test_tasks_restrict_modalities_and_single_label() -> None:
    b = collate(samples(), SPECS, tasks=["los"])
    assert list(b.modalities) == ["labs", "rgb"] and list(b.labels) == ["los"]
    single = [
        {"modalities": {"labs": {"values": [1, 2, 3]}}, "label": 1},
        {"modalities": {"labs": {"values": [0, 0, 0]}}},
    ]
    b = collate(single, SPECS, tasks=["death"])
    assert b.labels["death"].tolist() == [1, 0] and b.label_mask["death"].tolist() == [True, False]
    with pytest.raises(ValueError, match="single 'label'"):
        collate(single, SPECS, tasks=["death", "los"])
    with pytest.raises(ValueError, match="unknown tasks"):
        collate(single, SPECS, tasks=["nope"])
    with pytest.raises(ValueError, match="empty"):
        collate([], SPECS)


def test_all_absent_modality_still_has_one_step() -> None:
    b = collate([{"modalities": {"labs": {"values": [1, 2, 3]}}}], SPECS)
    for name in ("vitals", "emb", "note"):
        mb = b.modalities[name]
        assert mb.values.shape[:2] == (1, 1) and mb.pad.tolist() == [[False]] and not mb.present.item()


def test_nothing_observed_counts_as_missing_and_the_forward_stays_finite() -> None:
    """A library caller can skip validation: a series or table of nulls must not reach attention as
    a present modality with nothing to attend over (that gave NaN and an empty expert dispatch)."""
    from flame_core.config import FlameConfig
    from flame_core.model import build_flame

    empty = {
        "modalities": {
            "vitals": {"times": [0.0], "values": [[None, None]]},
            "labs": {"values": [None, None, None]},
            "note": {"text": "stable"},
        }
    }
    seen = {
        "modalities": {
            "vitals": {"times": [0.0], "values": [[1.0, None]]},
            "labs": {"values": [1, None, None]},
        }
    }
    b = collate([empty, seen], SPECS, tasks=["death"])
    assert b.modalities["vitals"].present.tolist() == [False, True]
    assert b.modalities["vitals"].pad[0].tolist() == [False]
    assert b.modalities["labs"].present.tolist() == [False, True]
    torch.manual_seed(0)
    model = build_flame(FlameConfig(d_model=16, n_experts=4, expert_hidden=32, ts_ref_points=4), SPECS).eval()
    with torch.no_grad():
        out = model(b, ["death"])
    assert torch.isfinite(out.outputs["death"]).all()


def test_validated_samples_collate_like_raw_ones() -> None:
    raw = samples()
    canon = validate_dataset(raw, SPECS)
    a, b = collate(raw, SPECS), collate(canon, SPECS)
    for name, ma in a.modalities.items():
        mb = b.modalities[name]
        for attr in ("values", "present", "obs", "times", "pad"):
            x, y = getattr(ma, attr), getattr(mb, attr)
            assert (x is None and y is None) or torch.equal(x, y), (name, attr)
    assert all(torch.equal(a.labels[t], b.labels[t]) for t in a.labels)


def test_bad_rows_raise_value_error() -> None:
    bad = [{"modalities": {"vitals": {"times": [0, 1], "values": [[1, 2, 3], [1]]}}}]
    with pytest.raises(ValueError, match="vitals"):
        collate(bad, SPECS)


def test_modalities_outside_the_specs_are_ignored() -> None:
    batch = collate([{"modalities": {"ecg": {}, "labs": {"values": [1, 2, 3]}}}], SPECS)
    assert "ecg" not in batch.modalities and bool(batch.modalities["labs"].present[0])


def test_loader_batches_and_seeded_shuffle() -> None:
    data = [
        {"id": str(i), "modalities": {"labs": {"values": [i, 0, 0]}}, "labels": {"los": float(i)}}
        for i in range(10)
    ]
    loader = make_loader(data, SPECS, tasks=["los"], batch_size=4)
    sizes = [b.size for b in loader]
    assert sizes == [4, 4, 2]

    def order(seed: int) -> list:
        return [
            i
            for b in make_loader(data, SPECS, tasks=["los"], batch_size=4, shuffle=True, seed=seed)
            for i in b.ids
        ]

    assert order(3) == order(3) and sorted(order(3), key=int) == [str(i) for i in range(10)]
    assert order(3) != [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(data, SPECS, batch_size=0)


def test_collate_is_fast() -> None:
    specs = SpecSet.from_dict(
        {
            "modalities": {"v": {"kind": "timeseries", "dim": 4}},
            "tasks": [{"name": "t", "modalities": ["v"], "head": {"type": "binary"}}],
        }
    )
    row = [0.5, None, 1.0, 2.0]
    data = [
        {"modalities": {"v": {"times": list(range(50)), "values": [row] * 50}}, "label": i % 2}
        for i in range(256)
    ]
    collate(data, specs)
    start = time.perf_counter()
    for _ in range(5):
        b = collate(data, specs)
    per_call = (time.perf_counter() - start) / 5
    assert b.modalities["v"].values.shape == (256, 50, 4)
    assert per_call < 0.25, per_call  # a few ms on an idle core; generous for a busy CI box


# Tokenizer: the text modality's contract.


def test_tokenizer_ngrams_and_padding_id() -> None:
    tok = HashTokenizer(n_buckets=64, ngrams=2, max_tokens=100)
    ids = tok.encode("Fever, fever AND cough")
    assert len(ids) == 4 + 3  # 4 unigrams + 3 bigrams
    assert all(1 <= i <= 64 for i in ids) and tok.vocab_size == 65
    assert ids[0] == ids[1]  # "fever" twice, case-folded; order is w0, w1, (w0 w1), w2, (w1 w2), ...
    assert tok.encode("FEVER") == tok.encode("fever")
    abc = tok.encode("a b c")  # a, b, "a b", c, "b c"
    assert HashTokenizer(n_buckets=64, ngrams=1).encode("a b c") == [abc[0], abc[1], abc[3]]
    assert abc[2] != abc[0]  # a bigram is hashed apart from its words
    assert len(HashTokenizer(max_tokens=3).encode("one two three four")) == 3
    assert tok.encode("  ...  ") == []
    with pytest.raises(ValueError, match="n_buckets"):
        HashTokenizer(n_buckets=0)


def test_tokenizer_is_deterministic_across_processes() -> None:
    text = "Pt c/o chest pain; troponin elevated. Hx of CHF."
    code = f"from flame_core.tokenizer import HashTokenizer as H; print(H(n_buckets=1000).encode({text!r}))"
    root = Path(__file__).resolve().parents[2]
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        res = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout.strip())
    assert outs[0] == outs[1] == str(HashTokenizer(n_buckets=1000).encode(text))
