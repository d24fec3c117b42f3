"""The stress cases of the serving benchmark (`bench/serving.py`, section e): batch invariance on
and off, 1 vs 20 stages served, a soak at concurrency 64 and an overload burst. A mixin of its
`Bench`, which provides `p` (durations), `reg` (the registry fixtures), the bodies, `env()`,
`closed()`, `emit()` and `notes`."""

from __future__ import annotations

from typing import Any

from bench.serving_report import LOAD_HEADERS, errors, load_cells, table
from bench.serving_server import Server
from bench.serving_setup import TASK

INSTANCES = 32


class Stress:
    p: dict[str, Any]
    reg: Any
    single: Any
    batch: Any
    workdir: Any
    notes: list[str]
    results: dict[str, Any]

    def env(self, **extra: str) -> dict[str, str]:
        raise NotImplementedError

    def closed(self, server: Server, path: str, bodies: Any, c: int) -> dict[str, Any]:
        raise NotImplementedError

    def emit(self, title: str, text: str) -> None:
        raise NotImplementedError

    def soak(self, server: Server) -> None:
        n = self.p["soak"]
        r = server.load(f"/predict/{TASK}", self.single, concurrency=64, requests=n, timeout=60)
        ok = r["statuses"].get("200", 0)
        self.results["soak"] = r
        rows = [[n, 64, r["count"], ok, errors(r), r["rps"], r["p50_ms"], r["p99_ms"], r["max_ms"]]]
        headers = [
            "requests",
            "concurrency",
            "answered",
            "200",
            "errors",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "max ms",
        ]
        verdict = "0 errors, as expected" if ok == n else f"**{n - ok} requests did not get a 200**"
        self.emit("e3. Soak: requests at concurrency 64", table(headers, rows) + f"\n\n{verdict}.")

    def stages(self, server: Server) -> None:
        rows = []
        for version, stages in ((self.reg.v1, 1), (self.reg.v20, 20)):
            out = server.post(f"/models/{version}/activate", {"reason": "bench"}, self.reg.admin_token)
            if out.get("serving") != version:
                self.notes.append(f"activating {version} answered {out}: the 1 vs 20 stages rows are suspect")
            for c in (1, 8):
                r = self.closed(server, f"/predict/{TASK}", self.single, c)
                rows.append([stages, version, c, *load_cells(r, 1)])
        server.post(f"/models/{self.reg.v1}/activate", {"reason": "bench"}, self.reg.admin_token)
        self.emit(
            f"e2. 1 vs 20 stages served: {TASK} (cursor 0) on v1, then on v1 + 19 stages",
            "Moved with `POST /models/{version}/activate` on the running server.\n\n"
            + table(["stages", "version", "concurrency", *LOAD_HEADERS], rows),
        )

    def invariance_runs(self, server: Server) -> list[tuple[int, int, dict[str, Any]]]:
        runs = ((1, self.single, 32), (INSTANCES, self.batch, 8))
        return [(n, c, self.closed(server, f"/predict/{TASK}", bodies, c)) for n, bodies, c in runs]

    def batch_invariance(self, on: list[tuple[int, int, dict[str, Any]]]) -> None:
        env = self.env(FLAME_BATCH_INVARIANT="false")
        server = Server("natural", "bench/serving_app.py", env, self.workdir, self.reg.predict_token)
        try:
            off = self.invariance_runs(server)
        finally:
            server.stop()
        rows = [
            [flag, n, c, *load_cells(r, n)]
            for flag, runs in (("true (default)", on), ("false", off))
            for n, c, r in runs
        ]
        self.emit(
            "e1. Batch invariance: FLAME_BATCH_INVARIANT=true vs false",
            "`true`: the server of (c), measured last; `false`: a fresh server started right after it with "
            "natural padding (each batch padded to its longest sample; outputs then depend on the batch). "
            "The difference is what invariance costs the service; (a) gives it for the forward alone.\n\n"
            + table(["FLAME_BATCH_INVARIANT", "instances/request", "concurrency", *LOAD_HEADERS], rows),
        )

    def overload(self) -> None:
        env = self.env(FLAME_MAX_QUEUE_DEPTH="64")
        server = Server("overload", "bench/serving_app.py", env, self.workdir, self.reg.predict_token)
        try:
            r = server.load(
                f"/predict/{TASK}", self.single, concurrency=512, duration=self.p["burst"], timeout=30
            )
        finally:
            server.stop()
        self.results["overload"] = r
        statuses = ", ".join(f"{s}: {n}" for s, n in r["all_statuses"].items()) or "none"
        row = [
            512,
            64,
            r["issued"],
            statuses,
            r["timeouts"],
            r["conn_errors"],
            r["ok_p50_ms"],
            r["ok_p99_ms"],
            r["max_ms"],
        ]
        headers = [
            "concurrency",
            "max queue depth",
            "sent",
            "answers by status",
            "timed out (30 s)",
            "conn errors",
        ]
        headers += ["200 p50 ms", "200 p99 ms", "max ms"]
        verdict = "no request timed out" if not r["timeouts"] else f"**{r['timeouts']} requests timed out**"
        shed = r["all_statuses"].get("429", 0)
        self.emit(
            f"e4. Overload: a {self.p['burst']:.0f} s burst at concurrency 512, FLAME_MAX_QUEUE_DEPTH=64",
            table(headers, [row])
            + f"\n\n{verdict}; {shed} answered 429 with Retry-After instead of waiting.",
        )
