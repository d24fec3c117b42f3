"""docker-compose.yml is valid and wires migrations before the API, without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _compose(*args: str) -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed; install it with `apt-get install docker-compose` "
            "(it checks the file offline, no Docker engine needed)",
            pytrace=False,
        )
    proc = subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"docker-compose {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def test_compose_file_is_valid_and_complete():
    assert _compose("config", "-q") == ""
    resolved = _compose("config")
    block = re.search(r"^services:\n((?:[ \n].*\n)*)", resolved, flags=re.MULTILINE)
    assert block is not None, resolved
    services = set(re.findall(r"^  ([a-z0-9_-]+):$", block.group(1), flags=re.MULTILINE))
    assert services == {"api", "worker", "postgres", "redis", "prometheus", "grafana", "migrate", "bootstrap"}
    # The worker and the bootstrap wait for the one-shot migration; the API for both; the
    # migration waits for PostgreSQL.
    assert resolved.count("condition: service_completed_successfully") == 4
    assert "alembic" in resolved and "upgrade" in resolved
    assert "postgresql+psycopg://flame:" in resolved and "redis://redis:6379/0" in resolved
    api = _service(resolved, "api")
    assert re.search(r"bootstrap:\n\s+condition: service_completed_successfully", api), api
    boot = _service(resolved, "bootstrap")
    assert re.search(r"- flame\n\s+- bootstrap\n", boot) and "FLAME_BOOTSTRAP_MODEL_DIR" in boot, boot
    # The bootstrap token is written to FLAME_HOME, a volume the API mounts too (`exec api cat ...`).
    for block in (api, boot):
        assert "FLAME_HOME: /data" in block and re.search(r"- flame-home:/data(:rw)?\n", block), block


def _service(resolved: str, name: str) -> str:
    """One service's block of `docker-compose config` output."""
    match = re.search(rf"^  {name}:\n((?:    .*\n|\n)*)", resolved, flags=re.MULTILINE)
    assert match is not None, f"no service {name!r} in:\n{resolved}"
    return match.group(1)


def test_files_the_compose_file_mounts_exist_and_agree():
    docker = ROOT / "docker"
    for path in (
        "Dockerfile.api",
        "Dockerfile.worker",
        "api-entrypoint.sh",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/dashboards.yml",
        "grafana/dashboards",
    ):
        assert (docker / path).exists(), f"docker/{path} is missing"
    assert "names: [api]" in (docker / "prometheus/prometheus.yml").read_text()  # DNS discovery
    assert (
        "path: /var/lib/grafana/dashboards"
        in (docker / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    assert (
        "url: http://prometheus:9090"
        in (docker / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    entry = (docker / "api-entrypoint.sh").read_text()
    assert entry.index("alembic upgrade head") < entry.index("exec flame serve")
    assert "torch==2.13.0" in (docker / "Dockerfile.api").read_text()
    assert 'CMD ["flame", "worker"]' in (docker / "Dockerfile.worker").read_text()
