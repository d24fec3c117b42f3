"""Verifying a checkpoint someone brings: plain and continual checkpoints load exactly; every way a
checkpoint can be wrong is a CheckpointInvalid naming the file and field, before any weight loads."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load, save_file

from flame_core.checkpoint import save_checkpoint, save_continual
from flame_core.collate import collate
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.model import build_flame
from flame_core.ranges import check_training_ranges, observed_ranges
from flame_core.specs import SpecSet
from flame_core.verify import CheckpointInvalid, checkpoint_metrics, load_verified

TINY = FlameConfig(d_model=8, n_experts=2, top_k=1, expert_hidden=8, ts_ref_points=4, n_heads=2)
SPECS = SpecSet.from_dict(
    {
        "modalities": {"vitals": {"kind": "timeseries", "dim": 2}, "labs": {"kind": "tabular", "dim": 3}},
        "tasks": [
            {"name": "death", "modalities": ["vitals", "labs"], "head": {"type": "binary"}},
            {"name": "stay", "modalities": ["labs"], "head": {"type": "regression"}},
        ],
    }
)
SAMPLES = [
    {
        "modalities": {
            "vitals": {"times": [0.0, 2.0], "values": [[1.0, None], [3.0, 10.0]]},
            "labs": {"values": [0.5, -1.0, 2.0]},
        },
        "labels": {"death": 1, "stay": 2.0},
    },
    {"modalities": {"labs": {"values": [1.5, 0.0, None]}}, "labels": {"death": 0, "stay": 1.0}},
]


def read_tensors(path):
    """Copies, not a mapping of the file: rewriting a mapped file in place would crash (SIGBUS)."""
    return load(path.read_bytes())


def ranges_of(specs: SpecSet) -> dict:
    return {t: observed_ranges(SAMPLES, specs, specs.tasks[t].modalities) for t in specs.tasks}


@pytest.fixture
def plain(tmp_path):
    torch.manual_seed(0)
    model = build_flame(TINY, SPECS).eval()
    extra = {
        "train": {"val": {"death": {"auroc": 0.75, "f1": float("nan")}}},
        "training_ranges": ranges_of(SPECS),
    }
    return save_checkpoint(tmp_path / "run", model, SPECS, extra=extra), model


def outputs(module, specs, tasks):
    batch = collate([{"modalities": s["modalities"]} for s in SAMPLES], specs, tasks=tasks)
    with torch.inference_mode():
        return module(batch, tasks).outputs


def test_a_plain_checkpoint_becomes_stage_zero_with_its_ranges_and_metrics(plain):
    directory, model = plain
    cl, extra = load_verified(directory)
    assert cl.cursor == {"death": 0, "stay": 0} and len(cl.stages) == 1
    assert cl.training_ranges == ranges_of(SPECS) and cl.training_ranges["stay"]["labs"]["values"][0] == [
        0.5,
        1.5,
    ]
    mine, theirs = outputs(cl, SPECS, ["death", "stay"]), outputs(model, SPECS, ["death", "stay"])
    assert all(torch.equal(mine[t], theirs[t]) for t in ("death", "stay"))
    assert checkpoint_metrics(extra, list(cl.cursor)) == {"death": {"auroc": 0.75}}  # NaN dropped


def test_a_continual_checkpoint_keeps_its_stages_and_cursors(tmp_path):
    torch.manual_seed(0)
    cl = ContinualFlame(build_flame(TINY, SPECS.subset(["death"])).eval())
    cl.begin_stage(SPECS.subset(["stay"]))
    with torch.no_grad():
        for p in cl.stage_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cl.end_stage(rank=1)
    cl.training_ranges = ranges_of(SPECS)
    loaded, _ = load_verified(save_continual(tmp_path / "cl", cl))
    assert loaded.cursor == {"death": 0, "stay": 1} and loaded.stages[1].ranks == cl.stages[1].ranks
    assert loaded.training_ranges == cl.training_ranges
    mine, theirs = outputs(loaded, SPECS, ["death", "stay"]), outputs(cl.eval(), SPECS, ["death", "stay"])
    assert all(torch.equal(mine[t], theirs[t]) for t in ("death", "stay"))


def rewrite(directory, edit):
    meta = json.loads((directory / "config.json").read_text())
    edit(meta)
    (directory / "config.json").write_text(json.dumps(meta))


def bad_head(meta):
    meta["specs"]["tasks"][0]["head"]["type"] = "astrology"


def wrong_shape(directory):
    tensors = read_tensors(directory / "model.safetensors")
    name = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)
    save_file(tensors, directory / "model.safetensors")
    return name


def extra_tensor(directory):
    save_file(
        {"x": torch.zeros(1), **read_tensors(directory / "model.safetensors")},
        directory / "model.safetensors",
    )


def wider_config(directory):  # a valid config, but not the one these tensors were trained with
    rewrite(directory, lambda m: m["model"].update(d_model=10))


@pytest.mark.parametrize(
    "breaks,file,field,words",
    [
        (lambda d: torch.save({"w": torch.zeros(2)}, d / "model.safetensors"), "model.safetensors", "weights",
         "looks like a torch.save pickle"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors", "model.safetensors", "missing"),
        (wrong_shape, "model.safetensors", None, "the config's model needs F32"),
        (extra_tensor, "model.safetensors", None, "no place for: x"),
        (lambda d: rewrite(d, bad_head), "config.json", "specs.tasks.death.head.type", "astrology"),
        (lambda d: rewrite(d, lambda m: m["model"].update(d_model=9)), "config.json", "model", "divisible"),
        (wider_config, "model.safetensors", None, "needs F32 [10, "),
        (lambda d: rewrite(d, lambda m: m["model"].update(wings=2)), "config.json", "model", "wings"),
        (lambda d: rewrite(d, lambda m: m.update(format=9)), "config.json", "format", "format 9"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json", None, "not valid JSON"),
        (lambda d: rewrite(d, lambda m: m["extra"]["training_ranges"]["stay"]["labs"]["values"].pop()),
         "config.json", "extra.training_ranges", "training_ranges.stay.labs.values has 2 ranges"),
    ],
)  # fmt: skip
def test_a_bad_checkpoint_is_refused_naming_file_and_field(plain, breaks, file, field, words):
    directory, _ = plain
    named = breaks(directory)
    with pytest.raises(CheckpointInvalid) as info:
        load_verified(directory)
    assert (info.value.file, info.value.field) == (file, field)
    assert words in str(info.value) and str(info.value).startswith(file)
    if isinstance(named, str):  # the misshapen tensor is named
        assert repr(named) in str(info.value)


def test_non_finite_weights_are_refused(plain):
    directory, _ = plain
    tensors = read_tensors(directory / "model.safetensors")
    name = sorted(tensors)[3]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(CheckpointInvalid, match=f"tensor '{name}' holds NaN"):
        load_verified(directory)


def test_a_continual_manifest_that_disagrees_with_itself_is_refused(tmp_path, plain):
    cl = ContinualFlame(build_flame(TINY, SPECS).eval())
    directory = save_continual(tmp_path / "cl", cl)
    copy = shutil.copytree(directory, tmp_path / "cl2")
    rewrite(directory, lambda m: m["cursor"].update(death=1))
    with pytest.raises(CheckpointInvalid, match="cursor must give each task"):
        load_verified(directory)
    rewrite(copy, lambda m: m["stages"][0]["ranks"].update({"heads.death.out.weight": 2}))
    with pytest.raises(CheckpointInvalid) as info:
        load_verified(copy)
    assert info.value.field == "stages[0].ranks"


def test_training_ranges_are_checked_against_the_specs():
    good = ranges_of(SPECS)
    check_training_ranges(good, SPECS)
    for bad, words in [
        ({"ghost": {}}, "training_ranges.ghost: no such task"),
        ({"stay": {"vitals": good["death"]["vitals"]}}, "reads no numeric modality 'vitals'"),
        ({"stay": {"labs": {"values": [[2, 1], None, None], "times": None}}}, "values[0]"),
        ({"stay": {"labs": {"values": [None, None, None], "times": [0, float("inf")]}}}, "labs.times"),
        ([], "must be an object"),
    ]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            check_training_ranges(bad, SPECS)
