"""Fuzzing the whole API in-process against its own OpenAPI document (schemathesis 4), shared by
`tests/service/test_fuzz.py` (bounded for CI) and `bench/fuzz.py` (long runs, a table).

`run` draws cases for every operation and caller (a key of each scope, and none): schemathesis'
positive and negative generation, the documented examples, known ids in paths, and for predictions
the bodies and hostile requests of `fuzz_env`. It never stops at a failure: it counts statuses and
keeps each distinct problem (operation, check, cause) with the first input that showed it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .fuzz_env import HOSTILE, IDEMPOTENCY_KEY, STAGE_REPLAY, FuzzEnv, prediction_bodies

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
OPEN = ("/healthz", "/readyz", "/metrics")


def re_path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _with_path(case: Any, name: str, value: str) -> Any:
    case.path_parameters = {**(case.path_parameters or {}), name: value}
    return case


def _body(cases: Any) -> Any:
    return cases.map(lambda case: case.body)


def strategies(env: FuzzEnv, op: Any) -> list[tuple[str, Any, float]]:
    """(mode, strategy, share of the operation's budget) for one operation."""
    positive = op.as_strategy(generation_mode=GenerationMode.POSITIVE)
    negative = op.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    params = [p for p in re_path_params(op.path) if p in env.known]
    if op.path == "/predict/{task}":
        realistic = prediction_bodies(env).map(
            lambda tb: op.Case(path_parameters={"task": tb[0]}, body=tb[1], media_type="application/json")
        )
        return [("realistic", realistic, 0.5), ("positive", positive, 0.25), ("negative", negative, 0.25)]
    if op.path == "/tasks" and op.method.upper() == "POST":  # the same request answers its first job
        replay = st.one_of(st.just(STAGE_REPLAY), _body(positive)).map(
            lambda body: op.Case(
                body=body, headers={"Idempotency-Key": IDEMPOTENCY_KEY}, media_type="application/json"
            )
        )
        return [("replay", replay, 0.2), ("positive", positive, 0.5), ("negative", negative, 0.3)]
    if params:
        known = st.tuples(positive, st.sampled_from(env.known[params[0]])).map(
            lambda cv: _with_path(cv[0], params[0], cv[1])
        )
        return [("known ids", known, 0.4), ("positive", positive, 0.35), ("negative", negative, 0.25)]
    return [("positive", positive, 0.6), ("negative", negative, 0.4)]


# --- running and recording --------------------------------------------------------------------------


@dataclass
class Problem:
    operation: str
    check: str
    cause: str
    example: str
    count: int = 0


@dataclass
class Report:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)  # responses breaking the document
    problems: dict[tuple[str, str, str], Problem] = field(default_factory=dict)

    def add(self, operation: str, check: str, cause: str, example: str) -> None:
        key = (operation, check, cause)
        problem = self.problems.setdefault(key, Problem(operation, check, cause, example))
        problem.count += 1

    @property
    def total(self) -> int:
        return sum(self.cases.values())


class _Captured(logging.Handler):
    """The exceptions the app's 500 handler logs (`flame.errors`), to name a server error's cause."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _where(exc: BaseException) -> str:
    """`Type at package/module.py:line` of the deepest project frame (the cause, without values)."""
    tb, frame = exc.__traceback__, None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if ("/flame_core/" in name or "/service/" in name) and "/tests/" not in name:
            frame = tb
        tb = tb.tb_next
    if frame is None:
        return type(exc).__name__
    path = frame.tb_frame.f_code.co_filename
    return f"{type(exc).__name__} at {path[path.rfind('/', 0, path.rfind('/')) + 1 :]}:{frame.tb_lineno}"


def _cause(failure: Failure, captured: _Captured) -> tuple[str, str, str]:
    """(check, cause, detail): the cause names no input value, so equal problems count as one."""
    name = type(failure).__name__
    if name in ("ServerError", "ContentTypeServerError"):
        excs = [r.exc_info[1] for r in captured.records if r.exc_info and r.exc_info[1] is not None]
        if not excs:
            return "not_a_server_error", failure.title, ""
        return "not_a_server_error", _where(excs[-1]), str(excs[-1])[:160]
    if name == "JsonSchemaError":
        where = "/".join("*" if isinstance(p, int) else str(p) for p in failure.instance_path)  # type: ignore[attr-defined]
        rule = "/".join(str(p) for p in failure.schema_path[-2:])  # type: ignore[attr-defined]
        return "response_schema_conformance", f"/{where} breaks {rule}", failure._raw_message[:200]  # type: ignore[attr-defined]
    if name == "UndefinedStatusCode":
        return "status_code_conformance", f"undocumented {failure.status_code}", ""  # type: ignore[attr-defined]
    detail = failure.message.splitlines()[0][:160] if failure.message else ""
    return name, failure.title, detail


def _example(case: Any, note: str = "") -> str:
    body = "" if type(case.body).__name__ == "NotSet" else repr(case.body)
    query = f"?{case.query}" if case.query else ""
    return f"{case.method} {case.formatted_path}{query} {note}{body[:240]}".strip()


def send(
    report: Report, captured: _Captured, label: str, case: Any, headers: dict[str, str], **kw: Any
) -> None:
    """One request and the checks; every outcome goes into `report`, nothing raises."""
    captured.records.clear()
    example = _example(case, kw.pop("note", ""))
    try:
        response = case.call(headers=headers, **kw)
    except Exception as e:  # noqa: BLE001 - the app raised through the transport: a server error
        report.cases[label] += 1
        report.statuses.setdefault(label, Counter())[599] += 1
        report.server_errors[label] += 1
        report.add(label, "not_a_server_error", _where(e), f"{example} -> {str(e)[:160]}")
        return
    report.cases[label] += 1
    report.statuses.setdefault(label, Counter())[response.status_code] += 1
    if response.status_code >= 500:
        report.server_errors[label] += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as group:
        broke = False
        for failure in group.exceptions:
            check, cause, detail = _cause(failure, captured)
            broke = broke or check != "not_a_server_error"
            report.add(label, check, cause, f"{example} -> {detail}" if detail else example)
        report.violations[label] += broke


def _budget_of(op: Any) -> float:
    if op.path in OPEN:
        return 0.25
    if op.path == "/predict/{task}":
        return 8.0
    return 2.0 if op.method.upper() == "POST" else 1.0


def _callers(op: Any) -> list[tuple[str, float]]:
    if op.path in OPEN:
        return [("anonymous", 1.0)]
    return [("predict", 0.3), ("train", 0.3), ("admin", 0.3), ("anonymous", 0.1)]


def run(env: FuzzEnv, budget: int, *, seed_value: int = 0) -> Report:
    """About `budget` generated cases over every operation and caller, plus each documented example
    and each hostile request once per caller."""
    report, captured = Report(), _Captured()
    logger = logging.getLogger("flame.errors")
    logger.addHandler(captured)
    ops = [result.ok() for result in env.schema.get_all_operations()]
    weights = {op.label: _budget_of(op) for op in ops}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow casts: the 5xx is the finding
            for op in ops:
                n_op = budget * weights[op.label] / sum(weights.values())
                for caller, share in _callers(op):
                    _run_caller(env, op, caller, n_op * share, report, captured, seed_value)
    finally:
        logger.removeHandler(captured)
    return report


def _run_caller(
    env: FuzzEnv, op: Any, caller: str, n: float, report: Report, captured: _Captured, seed_value: int
) -> None:
    headers = {"Authorization": f"Bearer {env.tokens[caller]}"} if caller in env.tokens else {}
    for example in op.get_strategies_from_examples():
        _drive(report, captured, op.label, example, 1, headers, seed_value)
    for _, strategy, part in strategies(env, op):
        _drive(report, captured, op.label, strategy, max(1, math.ceil(n * part)), headers, seed_value)
    if op.path == "/predict/{task}" and caller in ("predict", "admin"):
        for note, raw, content_type, params in HOSTILE:
            case = op.Case(path_parameters={"task": env.tasks[0]})
            h = {**headers, **({"Content-Type": content_type} if content_type else {})}
            send(report, captured, op.label, case, h, data=raw, params=params, note=f"[{note}] ")


def _drive(
    report: Report,
    captured: _Captured,
    label: str,
    strategy: Any,
    n: int,
    headers: dict[str, str],
    seed_value: int,
) -> None:
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(case=strategy)
    def one(case: Any) -> None:
        send(report, captured, label, case, headers)

    try:
        one()
    except Unsatisfiable:
        pass  # nothing to vary (e.g. negative data for an operation without inputs)
    except Exception as e:  # noqa: BLE001 - a strategy that cannot generate is a finding, not a crash
        report.add(label, "generation", _where(e), "")


# --- reporting --------------------------------------------------------------------------------------


def table(report: Report) -> str:
    """Markdown: operation, cases, status counts, server errors, schema violations."""
    lines = [
        "| operation | cases | statuses | server errors | schema violations |",
        "|---|---:|---|---:|---:|",
    ]
    for label in sorted(report.cases, key=lambda op: (op.split(" ", 1)[1], op)):
        statuses = ", ".join(
            f"{'raised' if code == 599 else code}: {n}" for code, n in sorted(report.statuses[label].items())
        )
        lines.append(
            f"| `{label}` | {report.cases[label]} | {statuses} | "
            f"{report.server_errors[label]} | {report.violations[label]} |"
        )
    lines.append(
        f"| **all** | {report.total} | | {sum(report.server_errors.values())} | "
        f"{sum(report.violations.values())} |"
    )
    return "\n".join(lines)


def problems(report: Report, *, server_errors: bool | None = None) -> str:
    """One line per distinct problem (operation, check, cause) with its count and first input; only
    the server errors (True), only the rest (False), or all (None)."""
    chosen = [
        p
        for p in report.problems.values()
        if server_errors is None or (p.check == "not_a_server_error") == server_errors
    ]
    chosen.sort(key=lambda p: (p.operation, p.check, -p.count))
    return "\n".join(
        f"- `{p.operation}` {p.check} x{p.count}: {p.cause}\n  first input: `{p.example[:300]}`"
        for p in chosen
    )
