import math

import pytest
import torch

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from flame_core.strategies import build_strategy
from flame_core.stream import StreamResult, parse_stream, run_stream
from flame_core.training import TrainConfig

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
FAST = TrainConfig(epochs=2, batch_size=32, progress=False, device="cpu", patience=0)


def test_parse_stream():
    assert parse_stream("pheno;los,ihm;mor") == [["pheno"], ["los", "ihm"], ["mor"]]
    with pytest.raises(ValueError, match="empty stage"):
        parse_stream("a;;b")
    with pytest.raises(ValueError, match="twice"):
        parse_stream("a;a")


def test_summary_bwt_and_max_based_forgetting():
    r = StreamResult(
        "x",
        [["a"], ["b"], ["c"]],
        {},
        [
            {"a": 0.8},
            {"a": 0.9, "b": 0.7},
            {"a": 0.6, "b": 0.75, "c": 0.5},
        ],
        [],
        [10, 5, 5],
        [10, 15, 20],
        [1.0, 1.0, 1.0],
    )
    s = r.summary()
    assert s["final_average"] == pytest.approx((0.6 + 0.75 + 0.5) / 3)
    assert s["bwt"] == pytest.approx(((0.6 - 0.8) + (0.75 - 0.7)) / 2)
    assert s["forgetting"] == pytest.approx(((0.9 - 0.6) + (0.7 - 0.75)) / 2)  # max over earlier stages
    assert s["stage_params_mean"] == 5


@pytest.fixture(scope="module")
def data():
    return load_benchmark("synthetic-icu", seed=0, n=300)


def test_flame_stream_never_forgets_and_finetune_does(data):
    stages = parse_stream("mortality,los;phenotype;acuity")
    torch.manual_seed(0)
    flame = run_stream(
        build_strategy("flame", rank="auto", energy=0.99), data, stages, model_config=TINY, train_config=FAST
    )
    finetune = run_stream(build_strategy("finetune"), data, stages, model_config=TINY, train_config=FAST)
    for t in ("mortality", "los", "phenotype"):  # earlier tasks: exactly the score of their stage
        intro = next(i for i, s in enumerate(stages) if t in s)
        assert all(flame.matrix[s][t] == flame.matrix[intro][t] for s in range(intro, 3))
    assert flame.summary()["forgetting"] == 0.0 and flame.summary()["bwt"] == 0.0
    assert any(finetune.matrix[2][t] != finetune.matrix[0][t] for t in ("mortality", "los"))
    assert flame.stage_params[1] < finetune.stage_params[1] / 3
    # Scores right after truncation are kept beside the final (refit) ones, per new task.
    assert [set(m) for m in flame.at_truncation] == [set(), {"phenotype"}, {"acuity"}]
    assert all(not math.isnan(v) for m in flame.matrix for v in m.values())


def test_unknown_task_in_stream_is_rejected(data):
    with pytest.raises(ValueError, match="unknown tasks"):
        run_stream(
            build_strategy("finetune"), data, [["mortality"], ["nope"]], model_config=TINY, train_config=FAST
        )
