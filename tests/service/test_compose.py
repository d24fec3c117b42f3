"""docker-compose.yml scales and keeps its secrets out of the file, checked without a Docker engine:
Debian's `docker-compose config` resolves it (and the GPU override) offline, and these tests read the
result. What they pin: `--scale api=3` works (no host port on api; only the load balancer publishes
8000, and its nginx config answers /metrics with 404), artifacts live in the object store (no shared
volume), every long-running service has a healthcheck, and no password has a default."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SECRETS = ("POSTGRES_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY", "GRAFANA_ADMIN_PASSWORD")
SERVICES = {
    "api",
    "lb",
    "worker",
    "postgres",
    "redis",
    "s3",
    "s3-bucket",
    "prometheus",
    "grafana",
    "migrate",
    "bootstrap",
}
ONE_SHOTS = {"migrate", "bootstrap", "s3-bucket"}
STORE_ENV = {
    "FLAME_ARTIFACT_URL": "s3://flame/artifacts",
    "AWS_ENDPOINT_URL": "http://s3:8333",
    "AWS_REGION": "us-east-1",
}


def _run_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed; install it with `apt-get install docker-compose` "
            "(it checks the file offline, no Docker engine needed)",
            pytrace=False,
        )
    # only the variables given here (over .env.example's empty ones): a developer's own shell or .env
    # must not make the test pass
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [binary, "--project-directory", str(ROOT), "--env-file", str(ROOT / ".env.example"), *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _secrets(**overrides: str) -> dict[str, str]:
    values = {name: f"test-{name.lower()}" for name in SECRETS}
    return {k: v for k, v in {**values, **overrides}.items() if v}


def _resolved(*files: str) -> dict[str, Any]:
    args = [a for f in files for a in ("-f", f)]
    proc = _run_compose(*args, "config", env=_secrets())
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _resolved("docker-compose.yml")


def test_the_stack_resolves_with_every_service(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == SERVICES
    # migrations and the bucket before anything uses them; the API after the bootstrap
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, needs in {
        "bootstrap": ("migrate", "s3-bucket"),
        "api": ("migrate", "bootstrap"),
        "worker": ("migrate", "s3-bucket"),
    }.items():
        for need in needs:
            assert services[name]["depends_on"][need]["condition"] == "service_completed_successfully"
    assert services["bootstrap"]["command"] == ["flame", "bootstrap"]
    assert "FLAME_BOOTSTRAP_MODEL_DIR" in services["bootstrap"]["environment"]
    # The bootstrap token is written to FLAME_HOME, a volume the API mounts too (`exec api cat ...`).
    for name in ("api", "bootstrap"):
        assert services[name]["environment"]["FLAME_HOME"] == "/data"
        assert any(v.startswith("flame-home:/data") for v in services[name]["volumes"]), name


def test_api_scales_behind_a_load_balancer_that_hides_metrics(config: dict[str, Any]) -> None:
    services = config["services"]
    assert "ports" not in services["api"], "a fixed host port on api breaks `--scale api=3`"
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert set(published) == {"lb", "prometheus", "grafana"}, published
    assert published["lb"] == [{"published": 8000, "target": 8000}]
    # Prometheus's UI shows every metric and Grafana is an admin tool: on this host only
    for name in ("prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in published[name]), published[name]
    assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert any(v.endswith(":/etc/nginx/nginx.conf:ro") for v in services["lb"]["volumes"])
    nginx = (DOCKER / "nginx/nginx.conf").read_text()
    assert re.search(r"location /metrics \{\s*return 404;\s*\}", nginx), "the lb must not serve /metrics"
    assert re.search(r"resolver 127\.0\.0\.11\b", nginx)  # Docker's DNS: one address per replica
    assert re.search(r"server api:8000 resolve\b", nginx)  # re-resolved: new replicas get traffic
    assert re.search(r"listen 8000;", nginx) and "proxy_pass http://flame_api;" in nginx
    assert "access_log off;" in nginx  # the API logs each request once


def test_every_long_running_service_has_a_healthcheck(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, svc in services.items():
        if name in ONE_SHOTS:
            assert svc["restart"] == "no", name
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    worker = services["worker"]
    assert "http://127.0.0.1:9808/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["environment"]["FLAME_WORKER_METRICS_PORT"] == "9808"


def test_artifacts_live_in_the_object_store_not_a_shared_volume(config: dict[str, Any]) -> None:
    services = config["services"]
    assert "artifacts" not in config.get("volumes", {})
    for name in ("api", "worker", "bootstrap", "migrate"):
        env = services[name]["environment"]
        assert {k: env.get(k) for k in STORE_ENV} == STORE_ENV, name
        assert env["AWS_ACCESS_KEY_ID"] == "test-s3_access_key", name
        assert env["AWS_SECRET_ACCESS_KEY"] == "test-s3_secret_key", name
        assert env["FLAME_ARTIFACT_CACHE"] == "/cache/artifacts", name
        assert not any("artifacts" in v for v in services[name].get("volumes", [])), name
    # each api and worker container caches in its own (anonymous) volume, never a shared one
    for name in ("api", "worker"):
        assert "/cache" in services[name]["volumes"], name
    assert "/spool" in services["api"]["volumes"]  # audit spool: per replica
    assert services["api"]["environment"]["FLAME_AUDIT_SPOOL_PATH"].startswith("/spool/")
    # the object store checks the same key pair, and the one-shot creates the bucket the URL names
    s3 = services["s3"]
    assert s3["environment"] == {"S3_ACCESS_KEY": "test-s3_access_key", "S3_SECRET_KEY": "test-s3_secret_key"}
    start = (DOCKER / "seaweedfs/start.sh").read_text()
    assert "-s3.config=" in start and "${S3_ACCESS_KEY}" in start and "-s3.port=8333" in start
    bucket = services["s3-bucket"]
    assert "create-bucket --bucket flame" in " ".join(bucket["command"])
    assert bucket["environment"]["AWS_ENDPOINT_URL"] == "http://s3:8333"


def test_no_secret_has_a_default(config: dict[str, Any]) -> None:
    for name in SECRETS:
        proc = _run_compose("config", "-q", env=_secrets(**{name: ""}))
        assert proc.returncode != 0 and name in proc.stderr, (name, proc.stderr)
    grafana = config["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "test-grafana_admin_password"
    assert "test-postgres_password@postgres" in config["services"]["api"]["environment"]["FLAME_DATABASE_URL"]
    # every required variable is in .env.example (empty: nothing to copy blindly), and .env is ignored
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required == set(SECRETS)
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"^\w+=", line)
    )
    assert {k: v for k, v in example.items() if k in required} == dict.fromkeys(required, "")
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_gpu_override_builds_cuda_wheels_and_reserves_a_gpu() -> None:
    worker = _resolved("docker-compose.yml", "docker-compose.gpu.yml")["services"]["worker"]
    assert worker["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert worker["environment"]["FLAME_DEVICE"] == "cuda"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["image"] != "flame-worker:local"  # the CPU and CUDA images do not overwrite each other


def test_files_the_compose_file_mounts_exist_and_agree(config: dict[str, Any]) -> None:
    for path in (
        "Dockerfile.api",
        "Dockerfile.worker",
        "api-entrypoint.sh",
        "nginx/nginx.conf",
        "seaweedfs/start.sh",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/dashboards.yml",
        "grafana/dashboards",
    ):
        assert (DOCKER / path).exists(), f"docker/{path} is missing"
    prometheus = config["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert any(v.endswith("/docker/prometheus:/etc/prometheus:ro") for v in prometheus["volumes"])
    scrape = (DOCKER / "prometheus/prometheus.yml").read_text()
    assert "names: [api]" in scrape and "names: [worker]" in scrape  # DNS discovery of every replica
    assert (
        "path: /var/lib/grafana/dashboards"
        in (DOCKER / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    assert (
        "url: http://prometheus:9090"
        in (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    entry = (DOCKER / "api-entrypoint.sh").read_text()
    assert entry.index("alembic upgrade head") < entry.index("exec flame serve")
    for name in ("api", "worker"):
        dockerfile = (DOCKER / f"Dockerfile.{name}").read_text()
        assert "ARG TORCH_VARIANT=cpu" in dockerfile and "whl/${TORCH_VARIANT}" in dockerfile, name
        assert "torch==2.13.0" in dockerfile, name
        assert config["services"][name]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert 'CMD ["flame", "worker"]' in (DOCKER / "Dockerfile.worker").read_text()
