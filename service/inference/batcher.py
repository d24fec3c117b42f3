"""The micro-batcher: one inference thread forms batches across requests and runs one forward each.

A request arrives validated and collated (a `Job`: its `LoadedVersion`, task, `Batch` of instances,
priority and deadline) and waits in its task's queue, bounded at `max_queue_depth` requests: beyond
it `submit` raises `Overloaded` (429 with Retry-After). The thread takes the most urgent queue (a
`stat` request first, then the oldest), and batches requests of one (version, task) - so one cursor
model, never two versions - up to `max_batch_size` instances (a larger request runs alone), `stat`
first, then in arrival order. It waits for more requests at most `max_wait_ms`, and only while
requests are on their way (being validated, see `incoming`): with none coming, waiting would only
add latency, and while a forward runs the next batch fills by itself. A request whose deadline
passed, or whose caller gave up, is dropped before the forward, never computed.

A model swap needs nothing here: a request holds the version it was validated for, the queues are
keyed by version, so the old version's requests drain in order beside the new ones. Batches are
bit-for-bit harmless when the version is batch-invariant (`LoadedVersion.invariant`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from flame_core.batch import Batch
from flame_core.calibration import calibrated
from flame_core.heads import predict_outputs
from flame_core.invariance import concat_batches
from flame_core.shift import shift_scores
from service.errors import DeadlineExceeded, Overloaded, ServiceUnavailable
from service.inference.host import LoadedVersion
from service.observability import (
    PREDICT_BATCH_SIZE,
    PREDICT_DURATION,
    PREDICT_QUEUE_DEPTH,
    PREDICT_QUEUE_SECONDS,
    PREDICT_REJECTED,
    QUEUE_DEPTH,
)

log = logging.getLogger("flame.batcher")
STAT, ROUTINE = 0, 1
PRIORITY_NAMES = ("stat", "routine")
Routes = dict[str, tuple[list[list[int]], list[list[float]], list[bool]]]  # experts, weights, present


@dataclass
class Rows:
    """A job's share of a forward pass as plain Python values (so answering it takes no torch call,
    and no wait for the GIL, on the event loop): per row the head output (a float, or a list for
    multiclass/multilabel), whether it and its gate weights are all finite, and per modality the
    last block's experts, gate weights and presence."""

    values: list[Any]
    finite: list[bool]
    routing: Routes
    batch_size: int  # instances in the forward pass it rode in
    calibrated: list[Any] | None = None  # the calibrated head outputs, when the task has calibration
    shift: list[float | None] | None = None  # shift scores, when the task has shift statistics

    def part(self, start: int, end: int) -> Rows:
        """Rows `start:end` of these (one request's share of a forward pass)."""
        return Rows(
            self.values[start:end],
            self.finite[start:end],
            {m: (e[start:end], w[start:end], p[start:end]) for m, (e, w, p) in self.routing.items()},
            self.batch_size,
            None if self.calibrated is None else self.calibrated[start:end],
            None if self.shift is None else self.shift[start:end],
        )


@dataclass(eq=False)
class Job:
    loaded: LoadedVersion
    task: str
    batch: Batch  # this request's instances, collated by `LoadedVersion.prepare`
    size: int
    priority: int = ROUTINE
    deadline: float = float("inf")  # time.monotonic() by which the forward must have started
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[Rows] = field(default_factory=Future)


class Batcher:
    """Thread-safe: `submit` from any thread; one daemon thread runs the forwards."""

    def __init__(self, *, max_batch_size: int, max_wait_ms: float, max_queue_depth: int) -> None:
        self.max_batch_size, self.max_queue_depth = max_batch_size, max_queue_depth
        self.max_wait_s = max_wait_ms / 1000.0
        self._cond = threading.Condition()
        self._queues: dict[tuple[str, str], tuple[deque[Job], deque[Job]]] = {}
        self._depth: dict[str, int] = defaultdict(int)  # queued requests per task
        self._incoming = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="flame-batcher", daemon=True)
        self.batches = 0  # forwards run (tests, benchmarks)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests, finish the queued ones, stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Around a request's validation: tells the thread a request is on its way."""
        with self._cond:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cond:
                self._incoming -= 1
                self._cond.notify_all()

    def check_capacity(self, task: str) -> None:
        """Raise `Overloaded` if `task`'s queue is full (before spending work on the request)."""
        if self._depth[task] >= self.max_queue_depth:
            PREDICT_REJECTED.labels(task=task, reason="overloaded").inc()
            raise Overloaded(
                f"the {task!r} prediction queue is full ({self.max_queue_depth} requests waiting); "
                "retry after the Retry-After delay",
                retry_after=1,
            )

    def submit(self, job: Job) -> Future[Rows]:
        with self._cond:
            if self._stopping:
                raise ServiceUnavailable("the server is shutting down; retry on another replica")
            self.check_capacity(job.task)
            lanes = self._queues.get((job.loaded.id, job.task))
            if lanes is None:
                lanes = self._queues[(job.loaded.id, job.task)] = (deque(), deque())
            lanes[job.priority].append(job)
            self._depth[job.task] += 1
            QUEUE_DEPTH.inc()
            PREDICT_QUEUE_DEPTH.observe(self._depth[job.task])  # what this request met, itself included
            self._cond.notify_all()
        return job.future

    def queued(self, task: str) -> int:
        return self._depth[task]

    # -- the inference thread ------------------------------------------------------------------

    def _pick(self) -> tuple[str, str] | None:
        """The queue whose head is most urgent: any stat request first, then the oldest head."""
        best, best_rank = None, (2, float("inf"))
        for key, lanes in self._queues.items():
            for priority, lane in enumerate(lanes):
                if lane and (priority, lane[0].enqueued) < best_rank:
                    best, best_rank = key, (priority, lane[0].enqueued)
        return best

    def _size(self, key: tuple[str, str]) -> int:
        return sum(j.size for lane in self._queues[key] for j in lane)

    def _take(self, key: tuple[str, str]) -> list[Job]:
        """Pop up to max_batch_size instances (at least one request), stat first; drop the dead."""
        jobs: list[Job] = []
        total, now = 0, time.monotonic()
        for lane in self._queues[key]:
            while lane and (not jobs or total + lane[0].size <= self.max_batch_size):
                job = lane.popleft()
                self._depth[job.task] -= 1
                QUEUE_DEPTH.dec()
                if not job.future.set_running_or_notify_cancel():
                    continue  # the caller gave up (its deadline passed while it waited)
                if job.deadline < now:
                    PREDICT_REJECTED.labels(task=job.task, reason="deadline").inc()
                    job.future.set_exception(
                        DeadlineExceeded(
                            "the request's deadline passed while it waited in the queue; it was not computed",
                            field="x-flame-deadline-ms",
                        )
                    )
                    continue
                PREDICT_QUEUE_SECONDS.labels(priority=PRIORITY_NAMES[job.priority]).observe(
                    now - job.enqueued
                )
                jobs.append(job)
                total += job.size
        if not any(self._queues[key]):
            del self._queues[key]
        return jobs

    def _next(self) -> list[Job] | None:
        with self._cond:
            while True:
                key = self._pick()
                if key is None:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                head = min(lane[0].enqueued for lane in self._queues[key] if lane)
                until = head + self.max_wait_s
                while (
                    self._incoming > 0
                    and not self._stopping
                    and self._size(key) < self.max_batch_size
                    and time.monotonic() < until
                ):
                    self._cond.wait(until - time.monotonic())
                jobs = self._take(key)
                if jobs:
                    return jobs

    def _run(self) -> None:
        while (jobs := self._next()) is not None:
            try:
                self._execute(jobs)
            except BaseException as e:  # noqa: BLE001 - the callers get the error, the thread lives on
                log.exception("forward pass failed", extra={"task": jobs[0].task})
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)

    def _execute(self, jobs: list[Job]) -> None:
        loaded, task = jobs[0].loaded, jobs[0].task
        t0 = time.perf_counter()
        batch = concat_batches([j.batch for j in jobs])
        shares = forward_rows(loaded, task, batch, [j.size for j in jobs])
        PREDICT_DURATION.labels(task=task, stage="forward").observe(time.perf_counter() - t0)
        PREDICT_BATCH_SIZE.observe(batch.size)
        self.batches += 1
        for job, rows in zip(jobs, shares, strict=True):
            job.future.set_result(rows)


def forward_rows(loaded: LoadedVersion, task: str, batch: Batch, sizes: list[int]) -> list[Rows]:
    """One forward pass over `batch`, split into consecutive shares of `sizes` rows, as plain Python:
    outputs, finiteness, routing, calibrated outputs and shift scores (the batch scoring job uses it
    too)."""
    out = loaded.forward(batch, task)
    head, logits = loaded.specs.tasks[task].head, out.outputs[task]
    values = predict_outputs(head, logits).cpu()  # the one sync
    finite = torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
    calib, shift = loaded.model.calibration.get(task), loaded.model.shift.get(task)
    cal = calibrated(head, logits, calib).cpu().tolist() if calib else None
    scores: list[float | None] | None = None
    if shift:
        fitted = [m for m, r in out.routing.items() if m in shift["modalities"] and r.summary is not None]
        summaries = {m: out.routing[m].summary.cpu().double().numpy() for m in fitted}  # type: ignore[union-attr]
        present = {m: out.routing[m].present.cpu().numpy() for m in fitted}
        scores = shift_scores(shift, summaries, present) if fitted else [None] * batch.size
    routing: Routes = {}
    for m, r in out.routing.items():
        weights = r.weights.cpu()
        finite &= torch.isfinite(weights).all(dim=1)
        routing[m] = (r.experts.cpu().tolist(), weights.tolist(), r.present.cpu().tolist())
    whole = Rows(values.tolist(), finite.tolist(), routing, batch.size, cal, scores)
    shares, start = [], 0
    for size in sizes:
        shares.append(whole.part(start, start + size))
        start += size
    return shares
