"""Batch invariance: a sample's output bits are the same alone and anywhere in any batch."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.invariance import (
    ROW_MULTIPLE,
    concat_batches,
    fixed_lengths,
    make_batch_invariant,
    pad_rows,
)
from flame_core.model import Flame, build_flame
from flame_core.specs import HeadSpec, ModalitySpec, SpecSet, TaskSpec
from flame_core.training import seed_everything
from flame_core.validation import validate_sample

SPECS = SpecSet(
    modalities={
        "vitals": ModalitySpec("vitals", "timeseries", dim=3, max_len=48),
        "labs": ModalitySpec("labs", "tabular", dim=5),
        "notes": ModalitySpec("notes", "text"),
        "cxr": ModalitySpec("cxr", "embedding", dim=8, max_len=6),
        "scan": ModalitySpec("scan", "image", dim=8, channels=1),
    },
    tasks={
        "death": TaskSpec("death", ("vitals", "labs", "notes", "cxr", "scan"), HeadSpec("binary")),
        "pheno": TaskSpec("pheno", ("vitals", "notes", "scan"), HeadSpec("multilabel", 4)),
    },
)
CONFIG = FlameConfig(d_model=32, n_experts=4, n_heads=4, expert_hidden=64, ts_ref_points=8, text_buckets=512)
# Every device this machine has: the same property on CUDA wherever a GPU is present.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
WORDS = ["fever", "cough", "sepsis", "stable", "lactate", "rising", "intubated", "chest", "clear", "effusion"]


def _sample(rng: random.Random, i: int) -> dict:
    """A random patient: long or short series, any modality missing, values on every scale."""
    mods: dict = {}
    if rng.random() < 0.8:
        steps = rng.choice([1, 2, 5, rng.randint(1, 48)])
        times = sorted(rng.uniform(0, 500) for _ in range(steps))
        values = [[None if rng.random() < 0.2 else rng.gauss(0, 10) for _ in range(3)] for _ in times]
        values[0][0] = 1.0  # at least one observation
        mods["vitals"] = {"times": times, "values": values}
    if rng.random() < 0.7:
        mods["labs"] = {"values": [None if rng.random() < 0.3 else rng.gauss(5, 3) for _ in range(5)]}
    if rng.random() < 0.7:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 300)))
        mods["notes"] = {"text": words[:2000]}
    if rng.random() < 0.6:
        n = rng.randint(1, 6)
        mods["cxr"] = {"times": list(range(n)), "embeddings": [[rng.gauss(0, 1) for _ in range(8)]] * n}
    if rng.random() < 0.6:
        mods["scan"] = {"pixels": [[rng.uniform(0, 1) for _ in range(8)] for _ in range(8)]}
    if not {"vitals", "notes", "scan"} & set(mods):
        mods["notes"] = {"text": "no acute distress"}  # every task needs one of its modalities
    return {"id": f"p{i}", "modalities": mods}


@pytest.fixture(scope="module", params=DEVICES)
def model(request: pytest.FixtureRequest) -> Flame:
    seed_everything(0)
    return make_batch_invariant(build_flame(CONFIG, SPECS).to(request.param).eval())  # type: ignore[return-value]


@pytest.fixture(scope="module")
def patients() -> list[dict]:
    rng = random.Random(7)
    return [validate_sample(_sample(rng, i), SPECS, ["death", "pheno"]) for i in range(96)]


def _forward(model: Flame, samples: list[dict], task: str) -> torch.Tensor:
    """Collate each sample on its own (as each request is), concatenate, pad rows: as the host does."""
    lengths = fixed_lengths(SPECS, CONFIG)
    parts = [
        collate([s], SPECS, tasks=[task], tokenizer=CONFIG.tokenizer(), lengths=lengths) for s in samples
    ]
    batch = pad_rows(concat_batches(parts))
    assert batch.size % ROW_MULTIPLE == 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(batch.to(device), [task]).outputs[task][: len(samples)].cpu()


@pytest.fixture(scope="module")
def alone(model: Flame, patients: list[dict]) -> dict[str, torch.Tensor]:
    return {t: torch.cat([_forward(model, [p], t) for p in patients]) for t in ("death", "pheno")}


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    picks=st.lists(st.integers(0, 95), min_size=1, max_size=64),
    task=st.sampled_from(["death", "pheno"]),
)
def test_outputs_do_not_depend_on_the_batch(
    model: Flame, patients: list[dict], alone: dict[str, torch.Tensor], picks: list[int], task: str
) -> None:
    out = _forward(model, [patients[i] for i in picks], task)
    assert torch.equal(out, alone[task][picks])  # bit for bit, whatever the company and position


def test_a_batch_of_64_mixing_every_kind_is_bit_equal(
    model: Flame, patients: list[dict], alone: dict[str, torch.Tensor]
) -> None:
    picks = list(range(64))
    random.Random(3).shuffle(picks)
    kinds = {m for i in picks for m in patients[i]["modalities"]}
    assert kinds == set(SPECS.modalities)
    for task in ("death", "pheno"):
        assert torch.equal(_forward(model, [patients[i] for i in picks], task), alone[task][picks])


def test_without_the_fixes_outputs_do_depend_on_the_batch(model: Flame, patients: list[dict]) -> None:
    """The property is not vacuous: natural padding and row counts change some bits."""
    plain = build_flame(CONFIG, SPECS).eval()
    plain.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    tok = CONFIG.tokenizer()
    with torch.inference_mode():
        together = plain(collate(patients[:32], SPECS, tasks=["pheno"], tokenizer=tok), ["pheno"])
        single = [
            plain(collate([p], SPECS, tasks=["pheno"], tokenizer=tok), ["pheno"]) for p in patients[:32]
        ]
    same = torch.equal(together.outputs["pheno"], torch.cat([o.outputs["pheno"] for o in single]))
    assert not same
