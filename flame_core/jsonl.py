"""JSON Lines datasets: one sample object per line (docs/design.md s2).

Reading names the 1-based line of any bad JSON so a user can fix the file; writing is atomic (temp
file, then rename) and refuses NaN/Infinity, which are not JSON and which other readers reject.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def iter_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, sample) for every non-blank line; lets callers report line numbers."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: line {lineno}: not valid UTF-8 text") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{path}: line {lineno}: each line must be a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Samples one at a time, for files too big to hold as a list."""
    for _, obj in iter_jsonl_numbered(path):
        yield obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def _plain(obj: Any) -> Any:
    """numpy values from Python callers become JSON numbers and lists (NaN still refused after)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_jsonl(path: str | Path, samples: Iterable[dict[str, Any]]) -> int:
    """Write samples, one per line, replacing `path` atomically; returns the number written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for i, sample in enumerate(samples):
                try:
                    line = json.dumps(sample, allow_nan=False, default=_plain, ensure_ascii=False)
                except ValueError as e:
                    raise ValueError(
                        f"sample {i}: cannot write NaN or Infinity to JSON ({e}); use null "
                        "for a missing value"
                    ) from None
                except TypeError as e:
                    raise ValueError(f"sample {i}: {e}") from None
                f.write(line + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a dataset file is ordinary
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
