"""Markdown for the serving benchmark (`bench/serving.py`): the machine note and the tables."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any


def machine(root: Path, device: str) -> str:
    import fastapi
    import torch
    import uvicorn

    def has(module: str) -> bool:
        try:
            __import__(module)
        except ImportError:
            return False
        return True

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    http = "httptools" if has("httptools") else "h11 (pure Python: httptools not installed)"
    loop = "uvloop" if has("uvloop") else "asyncio (uvloop not installed)"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "none used"
    return "\n".join(
        [
            f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs ({affinity} usable by this process), shared with other work",
            f"- Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads), "
            f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__} (HTTP: {http}; loop: {loop})",
            f"- device: {device} (GPU: {gpu}); OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
            f"- commit {commit or '?'}, {time.strftime('%Y-%m-%d %H:%M %Z')}",
        ]
    )


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "-"
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)

    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def errors(r: dict[str, Any]) -> str:
    """Non-200 answers by status, then timeouts and connection errors; `0` when none."""
    parts = [f"{s}: {n}" for s, n in r["statuses"].items() if s != "200"]
    if r["timeouts"]:
        parts.append(f"timeout: {r['timeouts']}")
    if r["conn_errors"]:
        kinds = ", ".join(f"{k} {n}" for k, n in r["error_kinds"].items())
        parts.append(f"conn error: {r['conn_errors']} ({kinds})")
    return "; ".join(parts) or "0"


LOAD_HEADERS = ["requests/s", "samples/s", "p50 ms", "p99 ms", "errors", "server CPU", "client CPU"]


def load_cells(r: dict[str, Any], instances: int) -> list[Any]:
    """The common columns of one load run (CPU in cores: 1.00 = one core busy the whole run)."""
    return [
        r["rps"],
        r["rps"] * instances,
        r["p50_ms"],
        r["p99_ms"],
        errors(r),
        f"{r['server_cores']:.2f}",
        f"{r['client_cores']:.2f}",
    ]
