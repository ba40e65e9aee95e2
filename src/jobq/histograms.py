"""Latency histograms and per-task figures, counted by the broker's scripts.

A leaf module (no jobq imports): the scripts count each sample into one of a fixed set of
buckets (`BOUNDS_MS`, mirrored in lua/_tally.lua), so per-task runtime and queue-wait
figures cost the broker a few HINCRBYs per call instead of one write per job, and every reader
(the HTTP API, Prometheus) derives quantiles and cumulative buckets from the same counts.
Buckets are fixed rather than configurable so counts written by any version add up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Upper bounds of the buckets (ms, inclusive: a sample v goes into the first bound >= v); one
#: more bucket above the last holds everything longer.
BOUNDS_MS: tuple[int, ...] = (
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
    30000, 60000, 300000, 900000, 3600000,
)  # fmt: skip
N_BUCKETS = len(BOUNDS_MS) + 1


def bucket_of(ms: float) -> int:
    """The bucket index of a sample of `ms` (what the scripts compute, for tests and callers
    counting on their own)."""
    for i, b in enumerate(BOUNDS_MS):
        if ms <= b:
            return i
    return len(BOUNDS_MS)


@dataclass(frozen=True)
class Histogram:
    """Non-cumulative bucket counts (len(BOUNDS_MS) + 1) and the sum of the samples (ms)."""

    counts: tuple[int, ...] = field(default=(0,) * N_BUCKETS)
    sum_ms: int = 0

    def __post_init__(self) -> None:
        if len(self.counts) != N_BUCKETS:
            raise ValueError(f"a histogram has {N_BUCKETS} buckets, got {len(self.counts)}")

    @property
    def count(self) -> int:
        return sum(self.counts)

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            self.sum_ms + other.sum_ms,
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) in ms, linear inside its bucket (Prometheus'
        histogram_quantile does the same), None when there are no samples. The open bucket
        above the last bound answers that bound (nothing better is known)."""
        total = self.count
        if total <= 0:
            return None
        q = min(max(q, 0.0), 1.0)
        rank = q * total
        seen = 0
        for i, c in enumerate(self.counts):
            if c <= 0:
                continue
            if seen + c >= rank:
                if i >= len(BOUNDS_MS):
                    return float(BOUNDS_MS[-1])
                lo = 0.0 if i == 0 else float(BOUNDS_MS[i - 1])
                hi = float(BOUNDS_MS[i])
                return lo + (hi - lo) * max(rank - seen, 0.0) / c
            seen += c
        return float(BOUNDS_MS[-1])  # (not reached: the loop ends at rank <= total)

    def mean(self) -> float | None:
        """The mean sample (ms), None when there are none."""
        n = self.count
        return self.sum_ms / n if n > 0 else None

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, math.inf last; cumulative count) per bucket, as
        Prometheus' ``_bucket{le=...}`` series want them."""
        out: list[tuple[float, int]] = []
        run = 0
        for i, c in enumerate(self.counts):
            run += c
            out.append((BOUNDS_MS[i] / 1000 if i < len(BOUNDS_MS) else math.inf, run))
        return out


@dataclass(frozen=True)
class TaskStats:
    """One task's figures in one queue, over every partition. runtime = each attempt that ran
    to an outcome (ms); wait = the queue wait of each attempt, from the moment the job became
    ready to its claim (ms)."""

    queue: str
    task: str
    succeeded: int
    failed: int
    retried: int
    cancelled: int
    runtime: Histogram
    wait: Histogram

    def __add__(self, other: TaskStats) -> TaskStats:
        return TaskStats(
            self.queue,
            self.task,
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.retried + other.retried,
            self.cancelled + other.cancelled,
            self.runtime + other.runtime,
            self.wait + other.wait,
        )

    @property
    def failure_rate(self) -> float | None:
        """failed / (succeeded + failed), None before any outcome."""
        n = self.succeeded + self.failed
        return self.failed / n if n > 0 else None


# -- the broker's encoding: fields of the per-queue hash ``tstats:<queue>`` ------------------
#
# Field = "<kind>|<task>" (the task after the first "|", so a task name may hold any
# character): s / f / r / c = succeeded / failed / retried / cancelled, "t<i>" / "w<i>" = runtime
# / wait bucket i (0-based), "ts" / "ws" = runtime / wait sum (ms).

_COUNTERS = {"s": "succeeded", "f": "failed", "r": "retried", "c": "cancelled"}


def parse_task_stats(queue: str, raw: dict[bytes, bytes] | dict[str, str]) -> list[TaskStats]:
    """The tasks of one queue's ``tstats:<queue>`` hash (HGETALL), sorted by task. A field
    that is garbage (not a number, an unknown kind) is skipped: never a 500."""
    per: dict[str, dict[str, int]] = {}
    rt: dict[str, list[int]] = {}
    wt: dict[str, list[int]] = {}
    for k, v in raw.items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
        kind, sep, task = key.partition("|")
        if not sep:
            continue
        try:
            n = int(v)
        except ValueError:
            continue
        if kind in _COUNTERS or kind in ("ts", "ws"):
            per.setdefault(task, {})[kind] = n
            continue
        if kind[:1] in ("t", "w") and kind[1:].isdigit():
            i = int(kind[1:])
            if i < N_BUCKETS:
                (rt if kind[0] == "t" else wt).setdefault(task, [0] * N_BUCKETS)[i] += n
                per.setdefault(task, {})
    out = []
    for task in sorted(per):
        c = per[task]
        out.append(
            TaskStats(
                queue,
                task,
                c.get("s", 0),
                c.get("f", 0),
                c.get("r", 0),
                c.get("c", 0),
                Histogram(tuple(rt.get(task, [0] * N_BUCKETS)), c.get("ts", 0)),
                Histogram(tuple(wt.get(task, [0] * N_BUCKETS)), c.get("ws", 0)),
            )
        )
    return out


def merge_task_stats(parts: list[list[TaskStats]]) -> list[TaskStats]:
    """Partitions' figures summed per (queue, task), sorted by (queue, task)."""
    acc: dict[tuple[str, str], TaskStats] = {}
    for part in parts:
        for t in part:
            k = (t.queue, t.task)
            acc[k] = acc[k] + t if k in acc else t
    return [acc[k] for k in sorted(acc)]
