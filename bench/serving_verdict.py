"""The serving benchmark's last sections: the service on two worker processes, and the issue's
criteria checked against the numbers measured in this run."""

from __future__ import annotations

import os
from typing import Any

from bench.serving_report import LOAD_HEADERS, load_cells, table
from bench.serving_server import Server
from bench.serving_setup import TASK
from bench.serving_stress import INSTANCES, Stress


class Verdict(Stress):
    """The last sections; the attributes and hooks it reads are declared on `Stress`."""

    service_rows: dict[tuple[int, int], dict[str, Any]]
    http_rows: dict[tuple[str, int], dict[str, Any]]
    forward_ceiling: dict[int, float]
    validated_ceiling: dict[int, float]

    def two_workers(self) -> None:
        """`flame serve --workers 2`: one process (and one batcher) per core."""
        env = self.env(PROMETHEUS_MULTIPROC_DIR=str(self.workdir / "metrics"))
        (self.workdir / "metrics").mkdir(exist_ok=True)
        server = Server(
            "two", "bench/serving_app.py", env, self.workdir, self.reg.predict_token, ("--workers", "2")
        )
        rows = []
        try:
            for bodies, n, c in ((self.single, 1, 32), (self.single, 1, 64), (self.batch, INSTANCES, 8)):
                r = self.closed(server, f"/predict/{TASK}", bodies, c)
                self.results[f"two_{n}_{c}"] = r
                rows.append([n, c, *load_cells(r, n)])
        finally:
            server.stop()
        self.emit(
            "g. The service on two worker processes (`--workers 2`, one batcher each)",
            "Python holds one core per process (the GIL): (c) is one process. Here the host's 2 cores "
            "each run one.\n\n" + table(["instances/request", "concurrency", *LOAD_HEADERS], rows),
        )

    def verdict(self) -> None:
        single = self.service_rows[(1, 32)]["rps"]
        http = self.http_rows[("empty", 32)]["rps"]
        forward = self.forward_ceiling[32]
        lower, which = (
            (http, "HTTP (empty route, c=32)") if http < forward else (forward, "forward (batch 32)")
        )
        naive = self.results["naive_32"]["rps"]
        batched = max(self.service_rows[(INSTANCES, c)]["rps"] * INSTANCES for c in (1, 8, 32, 64))
        batched_two = self.results[f"two_{INSTANCES}_8"]["rps"] * INSTANCES
        half = self.results["half_peak"]
        soak, over = self.results["soak"], self.results["overload"]
        two = self.results["two_1_32"]["rps"]
        checks = [
            (
                "single-instance req/s at c=32 >= 0.8 x the lower ceiling",
                f"{single:,.0f} vs 0.8 x {lower:,.0f} ({which}) = {0.8 * lower:,.0f}; "
                f"ratio {single / lower:.2f}; two workers: {two:,.0f} ({two / lower:.2f})",
                single >= 0.8 * lower,
            ),
            (
                "... and >= 3 x the naive endpoint (c=32)",
                f"{single:,.0f} vs 3 x {naive:,.0f}",
                single >= 3 * naive,
            ),
            (
                "32-instance requests: samples/s >= 0.8 x the raw forward (batch 32)",
                f"{batched:,.0f} vs 0.8 x {forward:,.0f}; ratio {batched / forward:.2f}; two workers: "
                f"{batched_two:,.0f} ({batched_two / forward:.2f})",
                max(batched, batched_two) >= 0.8 * forward,
            ),
            (
                "p99 <= 2 x p50 at half of peak throughput",
                f"p50 {half['p50_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms",
                half["p99_ms"] <= 2 * half["p50_ms"],
            ),
            (
                f"{self.p['soak']:,} requests at c=64 with 0 errors",
                f"{soak['statuses'].get('200', 0):,} answered 200",
                soak["statuses"].get("200", 0) == self.p["soak"],
            ),
            (
                "overload answered with 429, not timeouts",
                f"{over['all_statuses'].get('429', 0):,} x 429, {over['timeouts']} timeouts",
                over["all_statuses"].get("429", 0) > 0 and over["timeouts"] == 0,
            ),
        ]
        rows = [[name, measured, "yes" if ok else "**no**"] for name, measured, ok in checks]
        self.emit("h. The issue's criteria, from this run", table(["criterion", "measured", "met"], rows))
        self.host_bound()

    def host_bound(self) -> None:
        """What the single-instance target leaves for the service's own work on this host, from this
        run's numbers: at the target rate the forward, the HTTP parsing and the load generator take
        their share of the cores first; the rest is all a request may spend on the key check, the
        batching, the answer, the audit row and the metrics."""
        forward, empty = self.forward_ceiling[32], self.http_rows[("empty", 32)]
        http, service = empty["rps"], self.service_rows[(1, 32)]
        cpus = os.cpu_count() or 1
        a, b = 1e3 / forward, 1e3 / http  # ms of one core per sample / per request
        c = 1e3 * empty["client_cores"] / http  # the load generator's ms per request
        target = 0.8 * min(forward, http)
        spare = cpus - target * (a + b + c) / 1e3  # cores left at the target rate
        now = 1e3 * service["server_cores"] / service["rps"] - a - b
        rows = [
            ["(a) forward at batch 32, per sample", f"{a:.3f} ms", "section a"],
            ["(b) HTTP, empty route at c=32, per request", f"{b:.3f} ms", "section b"],
            ["(c) the load generator, per request", f"{c:.3f} ms", "section b, client CPU"],
            ["single-instance target at c=32", f"{target:,.0f} req/s", "0.8 x the lower ceiling"],
            [f"cores left at that rate ({cpus} here)", f"{spare:.2f}", "cores - target x (a+b+c)"],
            ["... per request, for all the service's own work", f"{1e3 * spare / target:.3f} ms", ""],
            ["the service's own work per request now (c=32)", f"{now:.3f} ms", "server CPU / req/s - a - b"],
            [
                "32-instance target vs validate + collate + forward (batch 32, one core)",
                f"{0.8 * forward:,.0f} vs {self.validated_ceiling[32]:,.0f} samples/s",
                "section a, before JSON parsing and answers",
            ],
        ]
        self.emit(
            "i. What the targets leave for the service's own work on this host (this run's numbers)",
            table(["quantity", "value", "how"], rows),
        )
