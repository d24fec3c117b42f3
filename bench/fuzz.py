"""Fuzz the whole API in-process for many cases (default 50,000) and write `bench/results/fuzz.md`.

The same harness as `tests/service/test_fuzz.py` (`tests/service/fuzzing.py`): every operation, a
key of each scope and none, schemathesis' positive and negative generation, the documented examples,
prediction bodies built from real samples with perturbed values, and hostile raw requests; checks:
no 5xx, documented status code, content type, headers and body schema.

    OMP_WAIT_POLICY=PASSIVE python bench/fuzz.py --cases 50000
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.fuzz_env import build_env, close_env  # noqa: E402
from tests.service.fuzzing import problems, run, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50_000, help="generated cases in all (about)")
    parser.add_argument("--seed", type=int, default=1, help="hypothesis seed (the test suite uses 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="flame-fuzz-") as tmp:
        start = time.perf_counter()
        env = build_env(Path(tmp))
        try:
            report = run(env, args.cases, seed_value=args.seed)
        finally:
            close_env(env)
        elapsed = time.perf_counter() - start

    summary = table(report)
    server = problems(report, server_errors=True) or "none"
    schema = problems(report, server_errors=False) or "none"
    print(summary)
    print(f"\nserver errors by cause:\n{server}\n\nschema violations by cause:\n{schema}")
    text = f"""# Fuzzing the API against its OpenAPI document

`python bench/fuzz.py --cases {args.cases} --seed {args.seed}`: {report.total} requests in
{elapsed / 60:.1f} min on {platform.machine()} (Python {platform.python_version()}), in-process
(ASGI) on the embedded SQLite registry with a tiny FLAME trained for one epoch on synthetic-icu.
Callers: a key of each scope (`predict`, `train`, `admin`) and none. Generation: schemathesis
positive and negative data from `/openapi.json`, the documented examples, known ids in paths,
prediction bodies built from real samples with values replaced by extreme or wrong ones, and
hostile raw requests (deep nesting, 5,000-digit integers, non-JSON content types, unknown query
parameters). Checks: `not_a_server_error`, `status_code_conformance`, `content_type_conformance`,
`response_headers_conformance`, `response_schema_conformance`. Status `raised`: the app raised
through the ASGI transport instead of answering.

{summary}

## Server errors by cause

{server}

## Schema violations by cause

{schema}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
