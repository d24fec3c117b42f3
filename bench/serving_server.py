"""A server subprocess for the serving benchmark (`bench/serving.py`), and load runs against it:
each run is `bench/loadgen.py` in its own process; the server's CPU time is read from /proc."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    """utime + stime of a process and of its live descendants (`--workers N`), seconds."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:13]) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited between the listing and the read
    return total


class Server:
    """One server subprocess on a free port; `load()` runs bench/loadgen.py against it."""

    def __init__(
        self,
        name: str,
        script: str,
        env: dict[str, str],
        workdir: Path,
        token: str,
        args: tuple[str, ...] = (),
    ) -> None:
        self.name, self.port, self.workdir, self.token = name, _free_port(), workdir, token
        self.log = workdir / f"{name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, script, "--port", str(self.port), *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start-up:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{name} not ready after 180 s")

    def load(self, path: str, bodies: Path, **opts: Any) -> dict[str, Any]:
        cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(self.port), "--path", path]
        cmd += ["--bodies", str(bodies), "--header", f"Authorization: Bearer {self.token}"]
        for k, v in opts.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        before, t0 = _cpu_s(self.proc.pid), time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.monotonic() - t0
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout)
        result["server_cores"] = (_cpu_s(self.proc.pid) - before) / wall
        result["client_cores"] = result["client_cpu_s"] / wall
        return result

    def post(self, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if "Traceback" in self.log.read_text():
            print(
                f"note: {self.name}'s log has a traceback:\n{self.log.read_text()[-2000:]}", file=sys.stderr
            )
