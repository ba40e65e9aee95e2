"""The process pool's batches (procpool.py): what holds for each job of a batch.

The pool is driven directly (no broker): a job sent to a child behind others, in one message,
still gets its own hard timeout, its own cancel and its own fate when the child dies, and
`drain_pending` takes it back while it has not started. `BATCH_RUNTIME_S` is raised so that
jobs of a tenth of a second count as short and are batched (by default only sub-millisecond
ones are), which makes the batches deterministic: the first job goes alone, at once, and the
ones submitted while it runs go to the child together when it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from procpool_tasks import app
from procs import wait_until

from jobq.model import Claimed, Outcome
from jobq.worker import procpool
from jobq.worker.pools import ProcessPool


def job(name: str, task: str, *args: object, timeout_ms: int | None = None) -> Claimed:
    payload = app.serializer.encode_args(list(args), {})
    return Claimed(name, "tok-" + name, 1, task, payload, 3, timeout_ms, "default", None)


class Outcomes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[str, list[Outcome]] = {}

    def add(self, o: Outcome) -> None:
        with self.lock:
            self.by_id.setdefault(o.claimed.id, []).append(o)

    def one(self, job_id: str) -> Outcome:
        wait_until(lambda: job_id in self.by_id, 30, f"the outcome of {job_id}")
        (o,) = self.by_id[job_id]
        return o


def pid(o: Outcome) -> int:
    assert o.ok, o.error
    value = app.serializer.decode_result(o.result)
    assert isinstance(value, int)
    return value


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ProcessPool, Outcomes]]:
    monkeypatch.setattr(procpool, "BATCH_RUNTIME_S", 10.0)
    outcomes = Outcomes()
    p = ProcessPool(app, 1, outcomes.add, "procpool_tasks:app")
    p.start()
    warm = job("warm", "nap", 0)
    p.submit(warm)
    outcomes.one("warm")  # the child is up, and its last batch was short
    try:
        yield p, outcomes
    finally:
        p.kill()


def submit_batch(p: ProcessPool, *jobs: Claimed) -> None:
    """The first job runs alone for 0.3s; the others go to the child after it, as one batch."""
    p.submit(job("lead", "nap", 0.3))
    for c in jobs:
        p.submit(c)


@pytest.mark.timeout(60)
def test_a_timeout_inside_a_batch_fails_that_job_only(pool: tuple[ProcessPool, Outcomes]) -> None:
    p, outcomes = pool
    first = p.slots[0].proc.pid
    submit_batch(p, job("slow", "nap", 30, timeout_ms=500), job("b", "nap", 0), job("c", "nap", 0))
    slow = outcomes.one("slow")
    assert not slow.ok and slow.error["type"] == "TimeoutError"
    assert slow.began_s is not None
    assert pid(outcomes.one("lead")) == first
    # The batch's jobs after the one that timed out ran, once each, in a fresh child.
    assert pid(outcomes.one("b")) == pid(outcomes.one("c")) != first
    assert p.slots[0].proc.pid != first


@pytest.mark.timeout(60)
def test_a_child_dying_inside_a_batch_fails_that_job_and_runs_the_rest(
    pool: tuple[ProcessPool, Outcomes],
) -> None:
    p, outcomes = pool
    first = p.slots[0].proc.pid
    submit_batch(p, job("a", "nap", 0), job("dies", "die"), job("b", "nap", 0))
    died = outcomes.one("dies")
    assert not died.ok and died.error["type"] == "RuntimeError"
    assert died.retry_delay_ms >= 0  # retried by the usual rules
    # "a" ended before "dies" killed the child, its outcome not sent yet: it runs again in the
    # fresh child (never failed for its batch-mate), as does "b", which had not started.
    assert pid(outcomes.one("a")) == pid(outcomes.one("b")) != first


@pytest.mark.timeout(60)
def test_cancel_withdraws_a_batched_job_before_it_starts(
    pool: tuple[ProcessPool, Outcomes],
) -> None:
    p, outcomes = pool
    submit_batch(p, job("long", "nap", 1.0), job("victim", "nap", 0), job("after", "nap", 0))
    outcomes.one("lead")
    time.sleep(0.2)  # "long" runs; "victim" waits behind it in the child
    assert p.cancel("victim")
    victim = outcomes.one("victim")
    assert not victim.ok and victim.error["type"] == "JobCancelled"
    assert "long" not in outcomes.by_id  # reported at once, not after the job before it
    pid(outcomes.one("long"))
    pid(outcomes.one("after"))
    time.sleep(0.2)
    assert len(outcomes.by_id["victim"]) == 1  # never ran


@pytest.mark.timeout(60)
def test_drain_pending_takes_back_batched_jobs_not_started(
    pool: tuple[ProcessPool, Outcomes],
) -> None:
    p, outcomes = pool
    submit_batch(p, job("long", "nap", 0.8), job("x", "nap", 0), job("y", "nap", 0))
    outcomes.one("lead")
    time.sleep(0.2)
    assert sorted(c.id for c in p.drain_pending()) == ["x", "y"]
    pid(outcomes.one("long"))
    time.sleep(0.3)
    assert "x" not in outcomes.by_id and "y" not in outcomes.by_id
