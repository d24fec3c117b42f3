"""A dependency-free HTTP/1.1 load generator: asyncio, raw keep-alive connections, request bytes
encoded once, responses read by Content-Length (or chunked). Run it in its own process so it never
shares a GIL with the server or the harness:

    python bench/loadgen.py --port 8000 --path /predict/mortality --bodies bodies.jsonl \
        --header "Authorization: Bearer flm_..." --concurrency 64 --duration 10 --warmup 2
    python bench/loadgen.py ... --rate 150 --duration 20            # open loop: 150 requests/s

Closed loop (default): `--concurrency` connections, each sending its next request as soon as the
last answer arrived, for `--duration` s (after `--warmup` s that are not recorded; the answers that
arrive in those `--duration` s are the ones counted) or until `--requests` requests in all.
Open loop (`--rate`): requests are due at a fixed rate whatever the server does; each waits for an
idle connection (at most `--max-connections`) and its latency counts from when it was due, so a
slow server cannot hide its queue (no coordinated omission).
Bodies: one JSON document per line of `--bodies`, sent in turn. Prints one JSON object: count,
requests/s, latency percentiles (nearest rank, ms), statuses, timeouts, connection errors and the
client's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def encode(host: str, port: int, path: str, body: bytes, headers: list[str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Run:
    def __init__(self, args: argparse.Namespace, requests: list[bytes]) -> None:
        self.args = args
        self.requests = itertools.cycle(requests)
        self.records: list[tuple[float, float, int]] = []  # (start, end, status), perf_counter s
        self.timeouts = self.conn_errors = self.issued = 0
        self.errors: dict[str, int] = {}
        self.stop_at = math.inf

    def more(self) -> bool:
        if self.args.requests and self.issued >= self.args.requests:
            return False
        return time.perf_counter() < self.stop_at

    async def one(self, conn: Conn, start: float) -> None:
        data = next(self.requests)
        try:
            status = await asyncio.wait_for(conn.request(data), self.args.timeout)
        except TimeoutError:
            self.timeouts += 1
            conn.close()
            return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.conn_errors += 1
            name = type(e).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            conn.close()
            await asyncio.sleep(0.01)
            return
        self.records.append((start, time.perf_counter(), status))

    async def closed(self) -> None:
        async def worker() -> None:
            conn = Conn(self.args.host, self.args.port)
            while self.more():
                self.issued += 1
                await self.one(conn, time.perf_counter())
            conn.close()

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))

    async def open(self) -> None:
        idle: asyncio.Queue[Conn] = asyncio.Queue()
        opened = 0
        tasks: set[asyncio.Task] = set()

        async def send(due: float) -> None:
            nonlocal opened
            if idle.empty() and opened < self.args.max_connections:
                opened += 1
                conn = Conn(self.args.host, self.args.port)
            else:
                conn = await idle.get()
            await self.one(conn, due)
            idle.put_nowait(conn)

        t0 = time.perf_counter()
        for i in itertools.count():
            if not self.more():
                break
            due = t0 + i / self.args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.issued += 1
            task = asyncio.create_task(send(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        while not idle.empty():
            idle.get_nowait().close()

    async def main(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        warm_end = t0 + self.args.warmup
        if not self.args.requests:
            self.stop_at = warm_end + self.args.duration
        await (self.open() if self.args.rate else self.closed())
        if self.args.requests:  # every request counts, from the first to the last answer
            kept, window = self.records, time.perf_counter() - t0
        elif self.args.rate:  # every request due in the window, however late it was answered
            kept, window = [r for r in self.records if r[0] >= warm_end], self.args.duration
        else:  # closed loop: the answers that arrived in the window
            end = self.stop_at
            kept = [r for r in self.records if warm_end <= r[1] <= end]
            window = self.args.duration
        done = sum(1 for r in kept if r[1] <= warm_end + window)
        return summary(kept, done / max(window, 1e-9), window, self)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank."""
    if not ordered:
        return math.nan
    return ordered[max(math.ceil(len(ordered) * q / 100), 1) - 1]


def summary(kept: list[tuple[float, float, int]], rps: float, window: float, run: Run) -> dict[str, Any]:
    lat = sorted((end - start) * 1000 for start, end, _ in kept)
    statuses: dict[str, int] = {}
    for _, _, status in kept:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = sorted((end - start) * 1000 for start, end, status in kept if status == 200)
    everything: dict[str, int] = {}  # every answer, warm-up and stragglers included
    for _, _, status in run.records:
        everything[str(status)] = everything.get(str(status), 0) + 1
    times = os.times()
    return {
        "count": len(kept),
        "issued": run.issued,
        "seconds": window,
        "rps": rps,
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else math.nan,
        "mean_ms": sum(lat) / len(lat) if lat else math.nan,
        "ok_p50_ms": percentile(ok, 50),
        "ok_p99_ms": percentile(ok, 99),
        "statuses": dict(sorted(statuses.items())),
        "all_statuses": dict(sorted(everything.items())),
        "timeouts": run.timeouts,
        "conn_errors": run.conn_errors,
        "error_kinds": run.errors,
        "client_cpu_s": times.user + times.system,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--bodies", type=Path, required=True, help="one JSON body per line, sent in turn")
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--concurrency", type=int, default=1, help="closed loop: connections")
    p.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    p.add_argument("--max-connections", type=int, default=512, help="open loop: connection cap")
    p.add_argument("--duration", type=float, default=5.0, help="recorded seconds")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds sent first and not recorded")
    p.add_argument("--requests", type=int, default=0, help="stop after this many (instead of --duration)")
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    lines = [line for line in args.bodies.read_bytes().splitlines() if line.strip()]
    requests = [encode(args.host, args.port, args.path, body, args.header) for body in lines]
    result = asyncio.run(Run(args, requests).main())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
