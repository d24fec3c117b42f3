"""CPU defaults every `flame` process applies: OpenMP threads that sleep, and torch's thread count.

Torch's OpenMP runtime reads `OMP_WAIT_POLICY` once, when torch (and with it libgomp) is first
imported; its default, busy-waiting threads, made `flame train` take 213 s instead of 27 s on a CPU
shared with other work. So `default_wait_policy()` runs at the very top of the `flame` entry point
(`service/cli/__init__.py`), before any module that imports torch; a user's own value is kept.
Processes started without the CLI (`uvicorn service.app:create_app --factory`, `celery -A ...`)
should set `OMP_WAIT_POLICY=PASSIVE` in their environment themselves.

`FLAME_TORCH_THREADS` (`Settings.torch_threads`, default 1) is torch's intra-op thread count per
process. Serving processes (every `flame serve` worker) use it always: measured on a 2-core host,
2 threads were slower than 1 at every batch size (2.4x at batch 1), and several workers or replicas
share the cores. Training processes (`flame train`, `flame continual`, `flame worker`) keep torch's
default (one thread per core) unless FLAME_TORCH_THREADS is set explicitly.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("flame.runtime")


def default_wait_policy() -> bool:
    """Set `OMP_WAIT_POLICY=PASSIVE` unless the user set it. Returns False when it was unset and torch
    is already imported, so the value can no longer reach its OpenMP pool (the caller ran too late)."""
    if "OMP_WAIT_POLICY" in os.environ:
        return True
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if "torch" in sys.modules:
        log.warning("torch was imported before OMP_WAIT_POLICY was set; its OpenMP threads may busy-wait")
        return False
    return True


def torch_threads(settings: Settings, *, serving: bool) -> int | None:
    """The intra-op thread count for this process: the setting when serving or when set explicitly
    (environment or .env), else None (torch's default)."""
    if serving or "torch_threads" in settings.model_fields_set:
        return settings.torch_threads
    return None


def apply_torch_threads(settings: Settings, *, serving: bool) -> None:
    """Set torch's intra-op threads per `torch_threads` (imports torch: call it where torch is due)."""
    threads = torch_threads(settings, serving=serving)
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def apply_training_threads() -> None:
    """`flame train`, `flame evaluate`, `flame continual`, `flame worker`: torch's default thread count
    unless FLAME_TORCH_THREADS is set."""
    from service.settings import get_settings

    apply_torch_threads(get_settings(), serving=False)


# Serving processes hold large, long-lived object graphs (models, specs, settings) and allocate many
# short-lived ones per request. Python's default collector (a gen0 pass every 700 net allocations)
# walks the long-lived graph again and again: at 250 requests/s the pauses took p99 from 47 to
# 188 ms (bench/serving.py, f). `freeze_heap` moves everything alive now (the loaded model) out of
# the collector's reach and makes gen0 passes rarer.
GC_THRESHOLDS = (50_000, 50, 100)


def freeze_heap() -> None:
    """Collect once, then freeze what survives (call after a model version is loaded)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
