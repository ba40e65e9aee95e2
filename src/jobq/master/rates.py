"""Throughput over time: the queues' outcome counters sampled on a period, as rates per second.

The counters live in the broker (`stats:<queue>`), so rates survive master restarts up to the
history kept here in memory (a few minutes; the dashboard's live chart).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Sample:
    t_ms: int
    counts: dict[str, tuple[int, int]]
    """queue -> (succeeded, failed) lifetime counters."""


class RateTracker:
    """Samples the queues' counters every `interval_s` (in its own thread) and derives rates."""

    def __init__(self, store: Store, interval_s: float = 2.0, keep: int = 300) -> None:
        self.store = store
        self.interval_s = interval_s
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
        s = Sample(now_ms if now_ms is not None else int(time.time() * 1000), counts)
        with self._lock:
            self.samples.append(s)

    def points(self) -> list[dict[str, object]]:
        """Rates between consecutive samples: total and per queue, per second."""
        with self._lock:
            samples = list(self.samples)
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
