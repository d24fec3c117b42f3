"""CPU defaults (service/runtime.py): the `flame` entry sets OMP_WAIT_POLICY before torch loads,
and each API process runs torch at FLAME_TORCH_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.app import create_app
from service.runtime import default_wait_policy, torch_threads
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# What the `flame` console script does first (`from service.cli import app`), then what it sees.
ENTRY = (
    "import sys, os; from service.cli import app; "
    "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
)


def run_entry(env_policy: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    done = subprocess.run(
        [sys.executable, "-c", ENTRY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_flame_entry_sets_a_passive_wait_policy_before_torch_loads():
    assert run_entry(None) == ["PASSIVE", "False"]  # and torch is not loaded yet, so it takes effect


def test_flame_entry_keeps_the_users_wait_policy():
    assert run_entry("ACTIVE") == ["ACTIVE", "False"]


def test_the_wait_policy_reports_when_it_came_too_late(monkeypatch):
    assert "torch" in sys.modules  # imported above, as a library user might
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert default_wait_policy() is False and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice: nothing to report
    assert default_wait_policy() is True and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_training_keeps_torchs_default_unless_the_setting_is_explicit(tmp_path, monkeypatch):
    monkeypatch.delenv("FLAME_TORCH_THREADS", raising=False)
    default = Settings(home=tmp_path)
    assert default.torch_threads == 1
    assert torch_threads(default, serving=True) == 1 and torch_threads(default, serving=False) is None
    monkeypatch.setenv("FLAME_TORCH_THREADS", "3")
    explicit = Settings(home=tmp_path)
    assert torch_threads(explicit, serving=False) == 3 and torch_threads(explicit, serving=True) == 3


@pytest.mark.parametrize("threads", [1, 2])
def test_the_app_runs_torch_at_the_configured_threads(tmp_path, threads):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3 if threads != 3 else 4)
        create_app(Settings(home=tmp_path, torch_threads=threads, auth_enabled=False))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
