"""`flame serve --workers 2`: real processes share one metrics folder, so /metrics, whichever worker
answers it, counts every request of every worker exactly once; a worker that exits drops its gauges."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

ROOT = Path(__file__).resolve().parents[2]
N = 60
HEALTHZ = re.compile(r'^flame_http_requests_total\{(?=[^}]*route="/healthz")[^}]*\} (\S+)$', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    """One request on a new connection, so the kernel may hand it to either worker."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def served_by_pid(folder: Path, route: str) -> dict[int, float]:
    """Requests to `route` each worker counted, read from its own counter file."""
    counts = {}
    for f in folder.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(f))
        counts[int(f.stem.rsplit("_", 1)[1])] = sum(
            v for key, v, *_ in values if f'"route": "{route}"' in key and '"flame_http_requests"' in key
        )
    return counts


def burst(url: str, n: int) -> list[tuple[int, str]]:
    """`n` requests, 8 at a time: a worker busy with some leaves the others to the second one."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(get, [url] * n))


def test_two_workers_count_every_request_once(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAME_", "PROMETHEUS_"))}
    env.update(FLAME_HOME=str(tmp_path), PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    stale = tmp_path / f"metrics-{port}" / "counter_1.db"  # an earlier run's file: wiped before workers start
    stale.parent.mkdir()
    stale.write_bytes(b"not a metrics file")
    cmd = [sys.executable, "-m", "service.cli", "serve", "--workers", "2", "--no-bootstrap"]
    # the log goes to a file: a pipe nobody reads fills (64 KiB, ~300 access lines while one worker
    # answers the readiness bursts alone) and blocks the server mid-request
    log = tmp_path / "serve.log"
    with log.open("w") as err:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(
            [*cmd, "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    base = f"http://127.0.0.1:{port}"
    folder = stale.parent
    try:
        deadline = time.monotonic() + 25
        # up when both workers answered /readyz (503 without a model; counted under its own route)
        while stale.exists() or sum(c > 0 for c in served_by_pid(folder, "/readyz").values()) < 2:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"flame serve --workers 2 did not start:\n{log.read_text()[-3000:]}"
            )
            try:
                burst(base + "/readyz", 8)
            except OSError:
                time.sleep(0.2)
        sent = 0
        while sent < N or min(served_by_pid(folder, "/healthz").values()) == 0:  # both served some
            assert burst(base + "/healthz", 20) == [(200, '{"status":"ok"}')] * 20
            sent += 20
            assert sent <= 10 * N, "one worker took every request"
        for _ in range(6):  # each scrape may land on either worker: both see all
            status, text = get(base + "/metrics")
            assert status == 200
            assert [float(v) for v in HEALTHZ.findall(text)] == [float(sent)]
        by_pid = served_by_pid(folder, "/healthz")
        assert len(by_pid) == 2 and server.pid not in by_pid  # one file per worker, none for the supervisor
        assert sum(by_pid.values()) == sent
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        finally:
            if server.poll() is None:
                server.kill()
    # graceful exits marked both workers dead: no live gauge file is left to sum
    assert not list(folder.glob("gauge_live*.db"))
    assert list(folder.glob("counter_*.db"))  # counters stay
