"""Throughput over time: the queues' outcome counters sampled on a period, as rates per second.

The counters live in the broker (`stats:<queue>`, and per task `tstats:<queue>`), so rates
survive master restarts up to the history kept here in memory (one hour: the dashboard's charts
with their chosen window, per-task rates, and the arrival rates the autoscaling signal uses).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from ..model import QueueInfo
from ..outage import Outage
from ..store import Store

log = logging.getLogger("jobq.master")
MAX_QUEUES = 2000


class QueuePages(Protocol):
    def queue_page(self, cursor: int = 0, limit: int = 200) -> tuple[list[QueueInfo], int]: ...


def first_queues(store: QueuePages, limit: int) -> tuple[list[QueueInfo], bool]:
    """About the first `limit` queues (registry scan order), and whether there are more."""
    out: dict[str, QueueInfo] = {}
    cursor = 0
    while len(out) < limit:
        page, cursor = store.queue_page(cursor, 500)
        out.update((q.name, q) for q in page)
        if not cursor:
            return sorted(out.values(), key=lambda q: q.name), False
    return sorted(out.values(), key=lambda q: q.name), True


#: How much history a tracker keeps by default (seconds).
KEEP_S = 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    t_ms: int
    counts: dict[str, tuple[int, int]]
    """queue -> (succeeded, failed) lifetime counters."""
    tasks: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(queue, task) -> (succeeded, failed) lifetime counters (tstats:<queue>)."""
    seen: dict[str, int] = field(default_factory=dict)
    """queue -> jobs it ever took in, as far as the counters tell: those waiting, scheduled
    or running plus those that ended (arrivals are its growth)."""


class RateTracker:
    """Samples the queues' counters every `interval_s` (in its own thread) and derives rates."""

    def __init__(self, store: Store, interval_s: float = 2.0, keep: int | None = None) -> None:
        self.store = store
        self.interval_s = interval_s
        if keep is None:  # one hour of samples
            keep = max(2, math.ceil(KEEP_S / max(interval_s, 1e-3)))
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage = Outage(log, "master: rate sampler")

    def sample(self, now_ms: int | None = None) -> None:
        # Bounded per sample whatever the number of queues: past MAX_QUEUES the rest go
        # unsampled (their rates read 0) rather than making every sample O(queues).
        qs, _ = first_queues(self.store, MAX_QUEUES)
        counts = {q.name: (q.succeeded, q.failed) for q in qs}
        seen = {
            q.name: q.queued + q.scheduled + q.running + q.succeeded + q.failed + q.cancelled
            for q in qs
        }
        tasks = {
            (t.queue, t.task): (t.succeeded, t.failed)
            for t in self.store.task_stats([q.name for q in qs])
        }
        s = Sample(now_ms if now_ms is not None else int(time.time() * 1000), counts, tasks, seen)
        with self._lock:
            self.samples.append(s)

    def _window(self, window_s: float | None) -> list[Sample]:
        """The samples of about the last `window_s` seconds (all kept when None), with the
        one before them so the first rate of the window covers its start."""
        with self._lock:
            samples = list(self.samples)
        if window_s is None or len(samples) < 2:
            return samples
        since = samples[-1].t_ms - window_s * 1000
        first = next((i for i, s in enumerate(samples) if s.t_ms >= since), len(samples) - 1)
        return samples[max(first - 1, 0) :]

    def _span(self, window_s: float) -> tuple[Sample, Sample] | None:
        """The first and last sample of about the last `window_s` s (None: fewer than two)."""
        samples = self._window(window_s)
        if len(samples) < 2:
            return None
        return samples[0], samples[-1]

    def task_rates(self, window_s: float = 60) -> dict[tuple[str, str], tuple[float, float]]:
        """(queue, task) -> (succeeded/s, failed/s) over about the last `window_s` seconds
        (empty without two samples)."""
        span = self._span(window_s)
        if span is None:
            return {}
        a, b = span
        dt = max((b.t_ms - a.t_ms) / 1000, 1e-3)
        out = {}
        for k, (s1, f1) in b.tasks.items():
            s0, f0 = a.tasks.get(k, (0, 0))
            out[k] = (max(0, s1 - s0) / dt, max(0, f1 - f0) / dt)
        return out

    def arrivals_per_s(self, queue: str, window_s: float = 60) -> float | None:
        """Jobs arriving in `queue` per second over about the last `window_s` seconds (the
        growth of what it took in: waiting + scheduled + running + ended); None without two
        samples of it."""
        span = self._span(window_s)
        if span is None:
            return None
        a, b = span
        if queue not in b.seen:
            return None
        dt = max((b.t_ms - a.t_ms) / 1000, 1e-3)
        return max(0, b.seen[queue] - a.seen.get(queue, 0)) / dt

    def points(self, window_s: float | None = None) -> list[dict[str, object]]:
        """Rates between consecutive samples: total and per queue, per second; only those of
        about the last `window_s` seconds when given (everything kept otherwise)."""
        samples = self._window(window_s)
        out: list[dict[str, object]] = []
        for a, b in itertools.pairwise(samples):
            dt = max((b.t_ms - a.t_ms) / 1000, 1e-3)
            per_q = {
                q: max(0, (s + f) - sum(a.counts.get(q, (0, 0)))) / dt
                for q, (s, f) in b.counts.items()
            }
            ok = sum(max(0, s - a.counts.get(q, (0, 0))[0]) for q, (s, _) in b.counts.items())
            bad = sum(max(0, f - a.counts.get(q, (0, 0))[1]) for q, (_, f) in b.counts.items())
            out.append(
                {
                    "t": b.t_ms,
                    "succeeded_per_s": ok / dt,
                    "failed_per_s": bad / dt,
                    "queues": per_q,
                }
            )
        return out

    def recent(self, queue: str, window_s: float = 10.0) -> tuple[float, float]:
        """(succeeded/s, failed/s) of one queue over about the last `window_s` seconds."""
        with self._lock:
            samples = list(self.samples)
        if len(samples) < 2:
            return 0.0, 0.0
        last = samples[-1]
        first = next((s for s in samples if last.t_ms - s.t_ms <= window_s * 1000 + 1), samples[-2])
        if first is last:
            first = samples[-2]
        dt = max((last.t_ms - first.t_ms) / 1000, 1e-3)
        s1, f1 = last.counts.get(queue, (0, 0))
        s0, f0 = first.counts.get(queue, (0, 0))
        return max(0, s1 - s0) / dt, max(0, f1 - f0) / dt

    def thread_alive(self) -> bool | None:
        """For /healthz: is the sampler thread running (None before start)?"""
        return None if self._thread is None else self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="jobq-rates", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            try:
                self.sample()
                self.outage.ok()
            except Exception as exc:  # the sampler outlives any error (outage.py)
                self.outage.failed(exc)
            if self._stop.wait(self.interval_s):
                return
