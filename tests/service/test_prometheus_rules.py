"""The shipped Prometheus files through Debian's `promtool` (installed with `prometheus` by
`make install-system`): the alert rules' unit tests (docker/prometheus/alerts_test.yml) and
`promtool check config` on docker/prometheus/prometheus.yml, which loads alerts.yml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "docker" / "prometheus"
INSTALL = "install Debian's `prometheus` package (`make install-system`)"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: {INSTALL}", pytrace=False)
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS` in docker/prometheus/, which must exit 0."""
    out = subprocess.run(
        [tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_promtool_unit_tests_the_alert_rules():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml").stdout


def test_promtool_checks_the_shipped_config():
    out = promtool("check", "config", "prometheus.yml")
    assert "9 rules found" in out.stdout  # alerts.yml is loaded from the config
