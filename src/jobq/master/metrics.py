"""The Prometheus exposition of `/metrics`, and the snapshot it (and `/v1/autoscale`) read.

One scrape costs a bounded number of broker commands however many jobs there are: a page walk
of the queue registry up to `MAX_QUEUES` names, then pipelined per-queue reads (depth and
counters, per-task figures, the front job's ready time), the worker registry (at most
`MAX_WORKERS` entries), one INFO per partition for memory. Nothing walks the jobs. The result
is cached for `CACHE_S` per master, and built under a lock, so many scrapers (several
Prometheus replicas, a KEDA poll, the autoscale route) arriving together cost one read.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..autoscale import DEFAULT_TARGET_S, Decision, WorkerSlots, decide, load_of
from ..histograms import Histogram, TaskStats
from ..memory import MemoryState
from ..model import QueueInfo, WorkerInfo
from .context import Context
from .rates import MAX_QUEUES, RateTracker, first_queues

#: How long one snapshot of the broker serves every scrape (seconds).
CACHE_S = 1.0
#: Worker registry entries read per scrape.
MAX_WORKERS = 1000
#: Snapshots kept per master (one per distinct queue selection asked for).
MAX_SNAPSHOTS = 32
#: The window (seconds) of the arrival rate the autoscaling signal uses.
ARRIVAL_WINDOW_S = 60.0


@dataclass
class Snapshot:
    """What one read of the broker found (figures over every partition)."""

    taken: float
    """time.monotonic() when read."""
    now_ms: int
    """The server's clock then (ms), for ages of server-clock times."""
    queues: list[QueueInfo]
    truncated: bool
    tasks: list[TaskStats]
    oldest: dict[str, int | None]
    workers: list[WorkerInfo]
    dead: int
    events: int
    memory: MemoryState
    room_limit: float
    arrivals: dict[str, float | None]
    _decisions: dict[float, list[Decision]] = field(default_factory=dict)

    def slots(self) -> list[WorkerSlots]:
        """The live workers as the autoscaling rule sees them."""
        return [worker_slots(w) for w in self.workers if w.alive]

    def decisions(self, target_s: float = DEFAULT_TARGET_S) -> list[Decision]:
        """The autoscaling decision of every queue in the snapshot (memoised per target)."""
        got = self._decisions.get(target_s)
        if got is None:
            slots = self.slots()
            runtime = runtime_means(self.tasks)
            got = [
                decide(
                    load_of(
                        q.name, q.queued, self.arrivals.get(q.name), runtime.get(q.name), slots
                    ),
                    target_s,
                )
                for q in self.queues
            ]
            self._decisions[target_s] = got
        return got


def worker_slots(w: WorkerInfo) -> WorkerSlots:
    """A registry entry's queues, slots and running jobs (garbage fields read as 0)."""
    queues = tuple(q for q in w.info.get("queues", "").split(",") if q)
    return WorkerSlots(queues, _int(w.info.get("concurrency")), _int(w.info.get("inflight")))


def runtime_means(tasks: Iterable[TaskStats]) -> dict[str, float | None]:
    """Per queue, the mean runtime (s) of every attempt of every task that ran there."""
    sums: dict[str, Histogram] = {}
    for t in tasks:
        sums[t.queue] = sums[t.queue] + t.runtime if t.queue in sums else t.runtime
    return {q: (None if h.count == 0 else h.sum_ms / h.count / 1000) for q, h in sums.items()}


def arrivals_per_s(
    rates: RateTracker, queue: str, window_s: float = ARRIVAL_WINDOW_S
) -> float | None:
    """The arrival rate the master's sampler measured over `window_s`; None under two samples."""
    got = rates.arrivals_per_s(queue, window_s)
    return None if got is None else float(got)


def read_snapshot(c: Context, names: list[str] | None = None) -> Snapshot:
    """One bounded read of the broker: the first `MAX_QUEUES` queues (or `names`), their
    per-task figures and front jobs, the worker registry and memory."""
    store = c.reads()  # may be a replica at most max_staleness_ms behind (replicas.py)
    if names is None and c.app.store.partitions > 1:
        # Several partitions (read from their primaries: replicas.py reads one partition):
        # a bounded walk of each one's names, not queue_page's union of every name.
        qs, more = c.app.store.first_queue_infos(MAX_QUEUES)
    elif names is None:
        qs, more = first_queues(store, MAX_QUEUES)
    else:
        # A few named queues (an autoscaler's poll): from the primary (the router has no such
        # read), whose handful of commands is no load.
        qs, more = c.app.store.queue_infos(names), False
    qnames = [q.name for q in qs]
    tasks = store.task_stats(qnames) if qnames else []
    oldest = store.oldest_queued(qnames) if qnames else {}
    workers = store.list_workers(MAX_WORKERS)
    primary = c.app.store
    sec, usec = primary.r.time()
    mem = primary.memory()
    return Snapshot(
        taken=time.monotonic(),
        now_ms=int(sec) * 1000 + int(usec) // 1000,
        queues=qs,
        truncated=more,
        tasks=tasks,
        oldest=oldest,
        workers=workers,
        dead=store.dead_count(),
        events=store.events_length(),
        memory=mem,
        room_limit=float(primary.room.limit),
        arrivals={n: arrivals_per_s(c.rates, n) for n in qnames},
    )


class SnapshotCache:
    """The last snapshot per queue selection, fresh for `ttl_s`; one reader at a time, so
    scrapes arriving together wait for the one read under way instead of each reading."""

    def __init__(self, ttl_s: float = CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[str, ...] | None, Snapshot] = OrderedDict()
        self.reads = 0
        """Snapshots read from the broker (for tests and the curious)."""

    def get(self, c: Context, names: list[str] | None = None) -> Snapshot:
        key = None if names is None else tuple(names)
        with self._lock:
            snap = self._kept.get(key)
            if snap is not None and time.monotonic() - snap.taken < self.ttl_s:
                return snap
            snap = read_snapshot(c, names)
            self.reads += 1
            self._kept[key] = snap
            self._kept.move_to_end(key)
            while len(self._kept) > MAX_SNAPSHOTS:
                self._kept.popitem(last=False)
            return snap


_init_lock = threading.Lock()


def cache_of(state: Any) -> SnapshotCache:
    """The snapshot cache of one master app (kept in its FastAPI ``app.state``)."""
    cache: SnapshotCache | None = getattr(state, "jobq_metrics", None)
    if cache is None:
        with _init_lock:
            cache = getattr(state, "jobq_metrics", None)
            if cache is None:
                cache = SnapshotCache()
                state.jobq_metrics = cache
    return cache


# -- the exposition text ---------------------------------------------------------------------


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class Exposition:
    """Families of the text format: HELP and TYPE once, then the family's samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_num(value)}")
        else:
            self.lines.append(f"{name} {_num(value)}")

    def histogram(self, name: str, h: Histogram, **labels: str) -> None:
        for le, n in h.cumulative():
            self.sample(f"{name}_bucket", n, **labels, le=_num(le))
        self.sample(f"{name}_sum", h.sum_ms / 1000, **labels)
        self.sample(f"{name}_count", h.count, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(c: Context, snap: Snapshot, target_s: float = DEFAULT_TARGET_S) -> str:
    """The whole exposition: the original families first (names unchanged), then the per-task,
    per-worker, memory and autoscaling ones (docs/metrics.md lists them all)."""
    out = Exposition()
    qs = snap.queues
    out.family("jobq_jobs", "gauge", "Jobs waiting or running, per queue and state.")
    for q in qs:
        for state, v in (("queued", q.queued), ("scheduled", q.scheduled), ("running", q.running)):
            out.sample("jobq_jobs", v, queue=q.name, state=state)
    out.family(
        "jobq_jobs_finished_total", "counter", "Jobs that reached a terminal state, per queue."
    )
    for q in qs:
        for outcome, v in (
            ("succeeded", q.succeeded),
            ("failed", q.failed),
            ("cancelled", q.cancelled),
        ):
            out.sample("jobq_jobs_finished_total", v, queue=q.name, outcome=outcome)
    out.family(
        "jobq_jobs_retried_total",
        "counter",
        "Attempts retried (failure back-off or expired lease).",
    )
    for q in qs:
        out.sample("jobq_jobs_retried_total", q.retried, queue=q.name)
    out.family("jobq_dead_letter_jobs", "gauge", "Failed jobs waiting in the dead-letter set.")
    out.sample("jobq_dead_letter_jobs", snap.dead)
    out.family(
        "jobq_queues_truncated", "gauge", "1 if queues past the first few thousand are not shown."
    )
    out.sample("jobq_queues_truncated", int(snap.truncated))
    out.family("jobq_workers", "gauge", "Workers with a live registry entry.")
    out.sample("jobq_workers", sum(1 for w in snap.workers if w.alive))
    out.family("jobq_events_stream_length", "gauge", "Entries in the (capped) event stream.")
    out.sample("jobq_events_stream_length", snap.events)
    # This master's own figures: read now, never cached.
    out.family("jobq_event_clients", "gauge", "Open /v1/events streams on this master.")
    out.sample("jobq_event_clients", len(c.hub.subscribers))
    out.family(
        "jobq_event_clients_dropped_total", "counter", "Streams closed for falling too far behind."
    )
    out.sample("jobq_event_clients_dropped_total", c.hub.dropped)
    if c.maintainer is not None:
        out.family(
            "jobq_master_leading", "gauge", "1 if this master runs the maintenance loop now."
        )
        out.sample("jobq_master_leading", int(c.maintainer.leading))
    _queue_families(out, snap, target_s)
    _task_families(out, snap.tasks)
    _worker_families(out, snap.workers)
    _memory_families(out, snap)
    return out.text()


def _queue_families(out: Exposition, snap: Snapshot, target_s: float) -> None:
    out.family(
        "jobq_queue_oldest_age_seconds",
        "gauge",
        "How long the job at the front of the queue has been ready (0 when none is queued).",
    )
    for q in snap.queues:
        ready = snap.oldest.get(q.name)
        age = 0.0 if ready is None else max(snap.now_ms - ready, 0) / 1000
        out.sample("jobq_queue_oldest_age_seconds", age, queue=q.name)
    decisions = snap.decisions(target_s)
    out.family(
        "jobq_queue_desired_workers",
        "gauge",
        f"Workers needed to keep up and drain the backlog within {target_s:g} s "
        "(docs/autoscaling.md).",
    )
    for d in decisions:
        out.sample("jobq_queue_desired_workers", d.desired_workers, queue=d.queue)
    out.family("jobq_queue_workers", "gauge", "Live workers serving the queue.")
    for d in decisions:
        out.sample("jobq_queue_workers", d.workers, queue=d.queue)
    out.family(
        "jobq_queue_free_slots", "gauge", "Free slots of the live workers serving the queue."
    )
    for d in decisions:
        out.sample("jobq_queue_free_slots", d.free, queue=d.queue)


def _task_families(out: Exposition, tasks: list[TaskStats]) -> None:
    out.family(
        "jobq_task_jobs_finished_total",
        "counter",
        "Jobs that reached a terminal state, per queue and task.",
    )
    for t in tasks:
        for outcome, v in (
            ("succeeded", t.succeeded),
            ("failed", t.failed),
            ("cancelled", t.cancelled),
        ):
            out.sample(
                "jobq_task_jobs_finished_total", v, queue=t.queue, task=t.task, outcome=outcome
            )
    out.family("jobq_task_jobs_retried_total", "counter", "Attempts retried, per queue and task.")
    for t in tasks:
        out.sample("jobq_task_jobs_retried_total", t.retried, queue=t.queue, task=t.task)
    out.family(
        "jobq_task_runtime_seconds",
        "histogram",
        "Run time of each attempt that ran to an outcome, per queue and task.",
    )
    for t in tasks:
        out.histogram("jobq_task_runtime_seconds", t.runtime, queue=t.queue, task=t.task)
    out.family(
        "jobq_task_queue_wait_seconds",
        "histogram",
        "Time from ready to claimed of each attempt, per queue and task.",
    )
    for t in tasks:
        out.histogram("jobq_task_queue_wait_seconds", t.wait, queue=t.queue, task=t.task)


def _worker_families(out: Exposition, workers: list[WorkerInfo]) -> None:
    live = [w for w in workers if w.alive]
    out.family("jobq_worker_busy_slots", "gauge", "Slots of a live worker running a job.")
    for w in live:
        out.sample("jobq_worker_busy_slots", max(worker_slots(w).inflight, 0), worker=w.name)
    out.family("jobq_worker_free_slots", "gauge", "Slots of a live worker free for a job.")
    for w in live:
        s = worker_slots(w)
        out.sample(
            "jobq_worker_free_slots", max(s.concurrency - max(s.inflight, 0), 0), worker=w.name
        )
    out.family(
        "jobq_worker_jobs_processed_total",
        "counter",
        "Jobs a live worker has run since it started.",
    )
    for w in live:
        out.sample("jobq_worker_jobs_processed_total", _int(w.info.get("processed")), worker=w.name)


def _memory_families(out: Exposition, snap: Snapshot) -> None:
    mem = snap.memory
    out.family(
        "jobq_broker_memory_used_bytes",
        "gauge",
        "Memory the fullest broker node counts against its maxmemory.",
    )
    out.sample("jobq_broker_memory_used_bytes", mem.used)
    out.family("jobq_broker_memory_max_bytes", "gauge", "That node's maxmemory (0: no limit set).")
    out.sample("jobq_broker_memory_max_bytes", mem.maxmemory)
    out.family(
        "jobq_broker_memory_limit_ratio",
        "gauge",
        "Share of maxmemory past which jobq refuses new jobs (the budget).",
    )
    out.sample("jobq_broker_memory_limit_ratio", snap.room_limit)
    if mem.share is not None:
        out.family(
            "jobq_broker_memory_used_ratio", "gauge", "Share of maxmemory in use (used / max)."
        )
        out.sample("jobq_broker_memory_used_ratio", round(mem.share, 6))


def _int(v: str | None) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0
