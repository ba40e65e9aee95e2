"""The autoscaling rule (autoscale.py), pure: the formula on known figures and its edge cases
(no data, zero runtime, no workers, idle, a worker serving several queues)."""

from __future__ import annotations

import math

import pytest

from jobq.autoscale import (
    DEFAULT_TARGET_S,
    QueueLoad,
    WorkerSlots,
    decide,
    load_of,
    queue_slots,
    slots_per_worker,
)


def load(
    backlog: int = 0,
    arrival: float | None = None,
    runtime: float | None = None,
    *,
    workers: int = 0,
    busy: int = 0,
    free: int = 0,
    slots: int = 1,
) -> QueueLoad:
    return QueueLoad("q", backlog, arrival, runtime, workers, busy, free, slots)


def test_formula_keeps_up_and_drains() -> None:
    # 10 jobs/s of 2 s each keep 20 slots busy; 600 queued x 2 s / 60 s = 20 more slots;
    # 40 slots at 4 per worker = 10 workers.
    d = decide(load(600, 10.0, 2.0, slots=4), 60)
    assert d.desired_workers == 10
    assert "40.00 slots needed" in d.reason
    # Rounded up, never down: 41 slots need 11 workers.
    assert decide(load(630, 10.0, 2.0, slots=4), 60).desired_workers == 11


def test_backlog_only_and_arrivals_only() -> None:
    # No arrivals: 100 jobs of 3 s within 30 s = 10 slots.
    assert decide(load(100, 0.0, 3.0), 30).desired_workers == 10
    # Arrivals only (nothing waiting): 5/s x 0.5 s = 2.5 slots -> 3 workers of one slot.
    assert decide(load(0, 5.0, 0.5), 30).desired_workers == 3
    # A shorter target asks for more workers for the same backlog.
    assert decide(load(100, 0.0, 3.0), 10).desired_workers == 30


def test_idle_is_zero_and_work_is_at_least_one() -> None:
    assert decide(load()).desired_workers == 0
    assert decide(load(0, 0.0, 1.0)).desired_workers == 0
    assert "idle" in decide(load(0, None, None)).reason
    # A single short job queued: far under one slot, still one worker.
    assert decide(load(1, 0.0, 0.01), 60).desired_workers == 1
    # Nothing queued or arriving but jobs still running: keep one worker (not scaled to 0
    # under its running jobs).
    assert decide(load(0, 0.0, 5.0, workers=1, busy=1)).desired_workers == 1


def test_zero_runtime() -> None:
    # Jobs that take ~no time: any backlog needs one worker, never zero.
    d = decide(load(10_000, 100.0, 0.0))
    assert d.desired_workers == 1 and "runtime is ~0" in d.reason


def test_no_runtime_data_keeps_the_workers_there() -> None:
    # Nothing ran yet: no service rate is known. No worker: one to start measuring.
    d = decide(load(50, None, None))
    assert d.desired_workers == 1 and "no runtime measured" in d.reason
    # Workers already there are kept.
    assert decide(load(50, 1.0, None, workers=4)).desired_workers == 4


def test_unmeasured_arrivals_count_as_none_and_say_so() -> None:
    d = decide(load(120, None, 1.0), 60)
    assert d.desired_workers == 2 and "arrival rate not measured" in d.reason
    assert d.arrival_per_s is None


def test_bad_target() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            decide(load(1, 1.0, 1.0), bad)
    assert DEFAULT_TARGET_S == 60.0


def test_slots_from_the_registry() -> None:
    ws = [
        WorkerSlots(("a", "b"), 4, 3),
        WorkerSlots(("a",), 8, 8),
        WorkerSlots(("c",), 2, 0),
    ]
    assert queue_slots("a", ws) == (2, 11, 1, 6)
    assert queue_slots("b", ws) == (1, 3, 1, 4)
    assert queue_slots("zz", ws) == (0, 0, 0, None)
    assert slots_per_worker("a", ws) == 6
    # No worker serves the queue: a new one would be like the others (mean over all).
    assert slots_per_worker("zz", ws) == 5
    # No workers at all: one slot per worker.
    assert slots_per_worker("zz", []) == 1
    # Garbage in the registry (negative counts) never yields negative slots.
    assert queue_slots("x", [WorkerSlots(("x",), -1, -5)]) == (1, 0, 0, None)
    assert slots_per_worker("x", [WorkerSlots(("x",), 0, 0)]) == 1


def test_load_of_and_decide_together() -> None:
    ws = [WorkerSlots(("a",), 4, 4)]
    lo = load_of("a", 200, 2.0, 1.5, ws)
    assert (lo.workers, lo.busy, lo.free, lo.slots_per_worker) == (1, 4, 0, 4)
    # 2/s x 1.5 s = 3 slots + 200 x 1.5 / 60 = 5 slots -> 8 slots = 2 workers of 4.
    d = decide(lo, 60)
    assert (d.desired_workers, d.workers, d.busy, d.free) == (2, 1, 4, 0)
    # No workers at all: the same figures at one slot per worker.
    assert decide(load_of("a", 200, 2.0, 1.5, []), 60).desired_workers == 8
    # A negative backlog (a corrupt counter) reads as none.
    assert load_of("a", -5, None, None, []).backlog == 0
