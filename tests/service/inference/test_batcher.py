"""The micro-batcher on real models: batches across requests, bit-equal to each request alone, stat
first, bounded queues, deadlines dropped before any work, and never two versions in one forward."""

from __future__ import annotations

import time

import pytest
import torch

from flame_core.benchmarks import load_benchmark
from flame_core.config import FlameConfig
from flame_core.continual import ContinualFlame
from flame_core.invariance import fixed_lengths, make_batch_invariant
from flame_core.model import build_flame
from flame_core.training import seed_everything
from flame_core.validation import validate_sample
from service.errors import DeadlineExceeded, Overloaded, ServiceUnavailable
from service.inference.batcher import ROUTINE, STAT, Batcher, Job
from service.inference.host import LoadedVersion

TINY = FlameConfig(
    d_model=16, n_experts=4, top_k=2, expert_hidden=32, ts_ref_points=4, n_heads=2, text_buckets=64
)
TASK = "mortality"


def loaded_version(version: str, seed: int, specs) -> LoadedVersion:  # type: ignore[no-untyped-def]
    seed_everything(seed)
    cl = ContinualFlame(build_flame(TINY, specs).eval())
    return LoadedVersion(
        id=version,
        digest=version,
        model=cl,
        device=torch.device("cpu"),
        cursor_models={0: make_batch_invariant(cl.cursor_model(0).eval())},  # type: ignore[dict-item]
        tokenizer=TINY.tokenizer(),
        lengths=fixed_lengths(specs, TINY),
    )


@pytest.fixture(scope="module")
def icu():  # type: ignore[no-untyped-def]
    data = load_benchmark("synthetic-icu", n=120)
    specs = data.specs.subset([TASK])
    samples = [
        validate_sample({"modalities": s["modalities"]}, specs, [TASK]) for s in data.splits["train"][:24]
    ]
    return {"v1": loaded_version("v1", 0, specs), "v2": loaded_version("v2", 1, specs), "samples": samples}


def job(loaded: LoadedVersion, samples: list[dict], **kw) -> Job:  # type: ignore[no-untyped-def]
    return Job(loaded, TASK, loaded.prepare(samples, TASK), len(samples), **kw)


def alone(loaded: LoadedVersion, sample: dict) -> list[float]:
    return torch.sigmoid(loaded.forward(loaded.prepare([sample], TASK), TASK).outputs[TASK][:, 0]).tolist()


def make(**kw) -> Batcher:  # type: ignore[no-untyped-def]
    return Batcher(**{"max_batch_size": 32, "max_wait_ms": 0.0, "max_queue_depth": 100, **kw})


def test_queued_requests_share_one_forward_and_match_their_alone_bits(icu) -> None:  # type: ignore[no-untyped-def]
    batcher = make()
    futures = [batcher.submit(job(icu["v1"], [s])) for s in icu["samples"][:10]]  # queued before start
    batcher.start()
    rows = [f.result(timeout=30) for f in futures]
    batcher.stop()
    assert batcher.batches == 1 and all(r.batch_size == 10 for r in rows)
    for r, s in zip(rows, icu["samples"][:10], strict=True):
        assert r.values == alone(icu["v1"], s) and r.finite == [True]


def test_batches_stop_at_max_batch_size_and_a_larger_request_runs_alone(icu) -> None:  # type: ignore[no-untyped-def]
    batcher = make(max_batch_size=4)
    singles = [batcher.submit(job(icu["v1"], [s])) for s in icu["samples"][:6]]
    big = batcher.submit(job(icu["v1"], icu["samples"][6:12]))
    batcher.start()
    sizes = [f.result(timeout=30).batch_size for f in singles]
    assert sizes == [4, 4, 4, 4, 2, 2] and big.result(timeout=30).batch_size == 6
    batcher.stop()
    assert batcher.batches == 3


def test_stat_requests_go_first(icu) -> None:  # type: ignore[no-untyped-def]
    batcher = make(max_batch_size=1)
    done: list[str] = []
    for name, priority in (("routine-1", ROUTINE), ("routine-2", ROUTINE), ("stat", STAT)):
        f = batcher.submit(job(icu["v1"], [icu["samples"][0]], priority=priority))
        f.add_done_callback(lambda _, n=name: done.append(n))
    batcher.start()
    batcher.stop()
    assert done == ["stat", "routine-1", "routine-2"]


def test_a_full_queue_refuses_with_overloaded(icu) -> None:  # type: ignore[no-untyped-def]
    batcher = make(max_queue_depth=2)
    batcher.submit(job(icu["v1"], [icu["samples"][0]]))
    batcher.submit(job(icu["v1"], [icu["samples"][1]]))
    with pytest.raises(Overloaded) as e:
        batcher.submit(job(icu["v1"], [icu["samples"][2]]))
    assert e.value.retry_after >= 1 and "queue is full" in e.value.message
    assert batcher.queued(TASK) == 2
    batcher.start()
    batcher.stop()
    assert batcher.queued(TASK) == 0


def test_expired_and_abandoned_requests_are_dropped_uncomputed(icu) -> None:  # type: ignore[no-untyped-def]
    batcher = make()
    expired = batcher.submit(job(icu["v1"], [icu["samples"][0]], deadline=time.monotonic() - 1))
    abandoned = batcher.submit(job(icu["v1"], [icu["samples"][1]]))
    assert abandoned.cancel()
    batcher.start()
    with pytest.raises(DeadlineExceeded) as e:
        expired.result(timeout=30)
    batcher.stop()
    assert e.value.field == "x-flame-deadline-ms"
    assert batcher.batches == 0  # nothing was computed


def test_a_batch_never_mixes_versions(icu) -> None:  # type: ignore[no-untyped-def]
    batcher = make()
    order = [("v1" if i % 3 else "v2", s) for i, s in enumerate(icu["samples"][:12])]
    futures = [(v, s, batcher.submit(job(icu[v], [s]))) for v, s in order]
    batcher.start()
    batcher.stop()
    assert batcher.batches == 2
    for v, s, f in futures:
        rows = f.result(timeout=30)
        assert rows.batch_size == sum(1 for w, _ in order if w == v)
        assert rows.values == alone(icu[v], s)  # computed by its own version's model


def test_stop_answers_what_is_queued_then_refuses(icu) -> None:  # type: ignore[no-untyped-def]
    batcher = make()
    queued = batcher.submit(job(icu["v1"], [icu["samples"][0]]))
    batcher.start()
    batcher.stop()
    assert len(queued.result(timeout=1).values) == 1
    with pytest.raises(ServiceUnavailable):
        batcher.submit(job(icu["v1"], [icu["samples"][0]]))
