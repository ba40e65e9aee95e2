"""The autoscaling signal: how many workers a queue needs to drain its backlog in a target time.

Pure (no I/O, no jobq imports): the master measures (queue depth, arrival rate, mean runtime,
the workers serving the queue and their slots) and this module decides, so the rule can be
unit-tested on its edge cases and read in one place (docs/autoscaling.md explains it):

    needed slots = arrival/s * mean runtime  +  backlog * mean runtime / target_s
    workers      = ceil(needed slots / slots per worker)

The first term keeps up with what arrives (Little's law: jobs in service = rate * time in
service), the second drains what waits within `target_s`. The result is at least 1 while
anything is queued or running (a queue with work never scales to zero) and 0 when the queue is
idle (nothing queued, running or arriving), so a scaler may stop every worker of an idle queue.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

#: The drain target (seconds) when none is asked for.
DEFAULT_TARGET_S = 60.0


@dataclass(frozen=True, slots=True)
class WorkerSlots:
    """What the registry says about one live worker: the queues it serves, its slots and the
    jobs it runs now."""

    queues: tuple[str, ...]
    concurrency: int
    inflight: int


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """The measured load of one queue."""

    queue: str
    backlog: int
    """Jobs ready and waiting (the queue's depth; scheduled jobs are not ready yet)."""
    arrival_per_s: float | None
    """Jobs arriving per second (None: not measured yet)."""
    runtime_mean_s: float | None
    """Mean run time of an attempt (None: nothing has run yet)."""
    workers: int
    """Live workers serving the queue."""
    busy: int
    """Slots of those workers running a job now."""
    free: int
    """Slots of those workers free now."""
    slots_per_worker: int
    """Slots one more worker would bring (its concurrency)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one queue, with the figures it came from and why."""

    queue: str
    desired_workers: int
    backlog: int
    arrival_per_s: float | None
    runtime_mean_s: float | None
    slots_per_worker: int
    workers: int
    busy: int
    free: int
    reason: str


def queue_slots(queue: str, workers: Iterable[WorkerSlots]) -> tuple[int, int, int, int | None]:
    """(workers, busy, free, mean concurrency or None) of the live workers serving `queue`.
    A worker serving several queues counts in each: its slots are shared, not split."""
    n = busy = free = slots = 0
    for w in workers:
        if queue in w.queues:
            n += 1
            running = max(w.inflight, 0)
            busy += running
            free += max(w.concurrency - running, 0)
            slots += max(w.concurrency, 0)
    return n, busy, free, (round(slots / n) if n and slots else None)


def slots_per_worker(queue: str, workers: list[WorkerSlots]) -> int:
    """The slots one more worker of `queue` would bring: the mean concurrency of the workers
    serving it, else of every live worker, else 1 (one slot per worker process)."""
    _, _, _, mean = queue_slots(queue, workers)
    if mean:
        return max(mean, 1)
    total = sum(max(w.concurrency, 0) for w in workers)
    return max(round(total / len(workers)), 1) if workers and total else 1


def load_of(
    queue: str,
    backlog: int,
    arrival_per_s: float | None,
    runtime_mean_s: float | None,
    workers: list[WorkerSlots],
) -> QueueLoad:
    """The load of `queue` from its figures and the live workers' registry entries."""
    n, busy, free, _ = queue_slots(queue, workers)
    return QueueLoad(
        queue,
        max(backlog, 0),
        arrival_per_s,
        runtime_mean_s,
        n,
        busy,
        free,
        slots_per_worker(queue, workers),
    )


def decide(load: QueueLoad, target_s: float = DEFAULT_TARGET_S) -> Decision:
    """The workers `load.queue` needs to keep up with its arrivals and drain its backlog
    within `target_s` seconds (see the module's docstring for the formula)."""
    if not target_s > 0 or math.isinf(target_s):
        raise ValueError("target_s must be a positive number of seconds")
    arrival = load.arrival_per_s if load.arrival_per_s and load.arrival_per_s > 0 else 0.0
    runtime = load.runtime_mean_s
    slots = max(load.slots_per_worker, 1)
    active = load.backlog > 0 or load.busy > 0

    def answer(desired: int, reason: str) -> Decision:
        return Decision(
            load.queue,
            desired,
            load.backlog,
            load.arrival_per_s,
            load.runtime_mean_s,
            slots,
            load.workers,
            load.busy,
            load.free,
            reason,
        )

    if not active and arrival == 0.0:
        return answer(0, "idle: nothing queued, running or arriving")
    if runtime is None:
        # Nothing has run yet, so no rate of service is known: keep what serves the queue,
        # and at least one worker, until the first runtimes are counted.
        return answer(max(load.workers, 1), "no runtime measured yet: keeping the workers there")
    runtime = max(runtime, 0.0)
    needed = arrival * runtime + load.backlog * runtime / target_s
    desired = math.ceil(needed / slots - 1e-9) if needed > 0 else 0
    floor = 1 if active or arrival > 0 else 0
    if desired < floor:
        why = "runtime is ~0" if runtime == 0 else "less than one worker's slots"
        return answer(floor, f"work waiting or running, {why}: at least one worker")
    measured = "" if load.arrival_per_s is not None else " (arrival rate not measured yet)"
    return answer(
        desired,
        f"{needed:.2f} slots needed ({arrival:.3g}/s x {runtime:.3g} s + "
        f"{load.backlog} queued x {runtime:.3g} s / {target_s:g} s), "
        f"{slots} per worker{measured}",
    )
