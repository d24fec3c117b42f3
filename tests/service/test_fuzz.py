"""Schemathesis against the whole app in-process, every operation with a key of each scope (and
none): no 5xx, and every response has a documented status, content type and body. Bounded for CI
(about 2,000 cases, a fixed seed); `bench/fuzz.py` runs the same for 50,000 and more."""

from __future__ import annotations

import pytest

from .fuzz_env import build_env, close_env
from .fuzzing import problems, run, table

BUDGET = 2000
OPERATIONS = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "POST /predict/{task}",
    "POST /predict",
    "POST /datasets",
    "GET /datasets/{dataset_id}",
    "POST /tasks",
    "GET /tasks",
    "GET /tasks/{name}",
    "PATCH /tasks/{name}",
    "GET /tasks/{name}/card",
    "GET /jobs",
    "POST /predictions/batch",
    "GET /predictions/batch/{job_id}",
    "GET /jobs/{job_id}",
    "POST /jobs/{job_id}/cancel",
    "GET /models",
    "POST /models",
    "GET /models/{version}",
    "POST /models/{version}/activate",
    "GET /keys",
    "POST /keys",
    "DELETE /keys/{key_id}",
}
# A 2xx needs state the fuzzer cannot make: a job still queued or running (the env's job has ended),
# a valid checkpoint upload (tests/service/registry/test_byom.py registers real ones), a stored
# dataset's id and a finished scoring job (tests/service/jobs/test_scoring.py makes both).
NO_2XX_EXPECTED = {
    "POST /jobs/{job_id}/cancel",
    "POST /models",
    "POST /predictions/batch",
    "GET /predictions/batch/{job_id}",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):  # type: ignore[no-untyped-def]
    env = build_env(tmp_path_factory.mktemp("fuzz"))
    try:
        yield run(env, BUDGET, seed_value=0)
    finally:
        close_env(env)


def test_fuzz_reaches_every_operation_scope_and_the_model(report):  # type: ignore[no-untyped-def]
    assert set(report.cases) == OPERATIONS
    assert 0.9 * BUDGET <= report.total <= 1.3 * BUDGET, table(report)
    for label in OPERATIONS - {"GET /healthz", "GET /readyz", "GET /metrics"}:
        seen = report.statuses[label]
        assert seen[401] and seen[403], (label, seen)  # no key, and a key without the scope
        if label not in NO_2XX_EXPECTED:
            assert any(200 <= code < 300 for code in seen), (label, seen)  # the right key gets through
    predict = report.statuses["POST /predict/{task}"]
    assert predict[200] >= 0.1 * report.cases["POST /predict/{task}"], predict  # bodies reach the model
    assert predict[422] and predict[404], predict


def test_fuzz_finds_no_server_error(report):  # type: ignore[no-untyped-def]
    found = problems(report, server_errors=True)
    assert not found, f"server errors:\n{found}\n\n{table(report)}"


def test_fuzz_responses_match_the_document(report):  # type: ignore[no-untyped-def]
    found = problems(report, server_errors=False)
    assert not found, f"responses that break the OpenAPI document:\n{found}\n\n{table(report)}"
