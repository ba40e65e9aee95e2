"""A worker driven by hand: `Worker.step(now)` on a `ManualClock`.

Each test runs an in-process worker (its pool's threads run the jobs) and moves the worker's
clock itself, so the timers under test (heartbeats and presence, the cancel grace, the
maintenance tick, the shutdown grace) fire exactly when the clock passes them and never before,
without sleeping on the real clock. The only real waiting is bounded: for a pool thread to
finish a job (`settle`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import on_every_layout
from shard_keys import job_shard

from jobq import App, JobState
from jobq.maintenance import tick
from jobq.worker import Worker
from jobq.worker.clock import ManualClock
from jobq.worker.timers import StepResult

pytestmark = [pytest.mark.timeout(60), on_every_layout]

WAIT = 20  # real seconds a pool thread may take to finish a job on a loaded machine
HEARTBEAT_S = 1.0


@pytest.fixture
def sapp(url: str, prefix: str) -> Iterator[App]:
    """An App with round timer settings (the worker's clock is manual anyway)."""
    a = App(url, prefix=prefix, lease_ms=30_000, heartbeat_ms=int(HEARTBEAT_S * 1000))
    yield a
    a.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_worker(sapp: App, clock: ManualClock) -> Iterator[Callable[..., Worker]]:
    """Stepped workers on the manual clock, shut down (immediately) at teardown."""
    made: list[Worker] = []

    def make(**kw: object) -> Worker:
        kw.setdefault("maintenance", False)
        w = Worker(sapp, clock=clock, **kw)  # type: ignore[arg-type]
        made.append(w)
        return w

    yield make
    for w in made:
        if w.started and not w.done.is_set():
            w.stop(immediate=True)
            w.step()


def settle(w: Worker, n: int = 1) -> int:
    """Step `w` without moving its clock until `n` outcomes were reported (a pool thread
    finishing a job is the one thing that takes real time); returns how many were."""
    deadline = time.monotonic() + WAIT
    reported = 0
    while reported < n:
        assert time.monotonic() < deadline, "the pool did not finish the job in time"
        reported += w.step().reported
        if reported < n:
            time.sleep(0.01)
    return reported


def lease_of(app: App, job_id: str) -> float | None:
    shard = job_shard(app, job_id)
    score = shard.r.zscore(shard.keys.leases, job_id)
    return None if score is None else float(score)


def test_a_step_claims_a_job_and_a_later_step_reports_it(
    sapp: App, make_worker: Callable[..., Worker]
) -> None:
    @sapp.task
    def add(x: int, y: int) -> int:
        return x + y

    w = make_worker()
    assert w.step() == StepResult()  # nothing queued: nothing done, and it did not block
    job = add.submit(2, 3)
    first = w.step()
    assert first.claimed == 1 and first.heartbeats == 0
    assert settle(w) == 1
    assert job.result(timeout=WAIT) == 5
    assert job.info().worker == w.name
    assert w.processed == 1 and not w.inflight
    w.stop()
    assert w.step().stopped


def test_the_heartbeat_runs_exactly_when_the_clock_passes_its_interval(
    sapp: App, clock: ManualClock, make_worker: Callable[..., Worker]
) -> None:
    release = threading.Event()

    @sapp.task
    def hold() -> str:
        release.wait(WAIT)
        return "held"

    w = make_worker(prefetch=0)
    t0 = clock.monotonic()
    job = hold.submit()
    assert w.step().claimed == 1
    claimed_lease = lease_of(sapp, job.id)
    assert claimed_lease is not None
    try:
        clock.set(t0 + HEARTBEAT_S - 0.001)
        assert w.step().heartbeats == 0  # not before its interval
        assert lease_of(sapp, job.id) == claimed_lease
        time.sleep(0.005)  # the server's clock moves on, so an extended lease shows (ms)
        clock.set(t0 + HEARTBEAT_S)
        assert w.step().heartbeats == 1  # exactly at it
        renewed = lease_of(sapp, job.id)
        assert renewed is not None and renewed > claimed_lease
        assert w.step().heartbeats == 0  # once per interval
        clock.advance(HEARTBEAT_S / 2)
        assert w.step().heartbeats == 0
        clock.advance(HEARTBEAT_S / 2)
        assert w.step().heartbeats == 1  # the next interval counts from the last heartbeat
    finally:
        release.set()
    settle(w)
    assert job.result(timeout=WAIT) == "held"


def test_presence_is_published_on_the_heartbeat_schedule(
    sapp: App, clock: ManualClock, make_worker: Callable[..., Worker]
) -> None:
    release = threading.Event()

    @sapp.task
    def hold() -> None:
        release.wait(WAIT)

    w = make_worker(name="stepped", prefetch=0)
    t0 = clock.monotonic()
    assert w.step() == StepResult()  # the first step announces the worker
    entry = sapp.store.keys.worker("stepped")
    r = sapp.store.r
    assert r.hget(entry, "inflight") == b"0"
    assert r.zscore(sapp.store.keys.workers, "stepped") is not None
    hold.submit()
    try:
        assert w.step().claimed == 1
        clock.set(t0 + HEARTBEAT_S - 0.001)
        w.step()
        assert r.hget(entry, "inflight") == b"0"  # what it published at start, still
        clock.set(t0 + HEARTBEAT_S)
        assert w.step().heartbeats == 1
        assert r.hget(entry, "inflight") == b"1"  # published with the heartbeat
        assert 0 < r.pttl(entry) <= sapp.settings.lease_ms * 3
        assert [wi.name for wi in sapp.store.list_workers()] == ["stepped"]
    finally:
        release.set()
    settle(w)
    w.stop()
    assert w.step().stopped
    assert not r.exists(entry)  # a worker that stopped leaves the list


def test_a_cancel_ignored_is_stopped_exactly_when_its_grace_runs_out(
    sapp: App, clock: ManualClock, make_worker: Callable[..., Worker]
) -> None:
    started = threading.Event()

    @sapp.task
    async def stubborn() -> None:
        started.set()
        await asyncio.sleep(WAIT)  # never looks at current_job().cancelled()

    grace = 3.0
    w = make_worker(pool="async", prefetch=0, cancel_grace_s=grace)
    t0 = clock.monotonic()
    job = stubborn.submit()
    assert w.step().claimed == 1
    assert started.wait(WAIT)
    job.cancel()
    clock.set(t0 + HEARTBEAT_S)
    seen = w.step()  # the heartbeat learns of the request: the grace starts now
    assert seen.heartbeats == 1 and seen.cancels_stopped == 0
    while clock.monotonic() + HEARTBEAT_S < t0 + HEARTBEAT_S + grace:
        clock.advance(HEARTBEAT_S)
        assert w.step().cancels_stopped == 0
    clock.set(t0 + HEARTBEAT_S + grace - 0.001)
    assert w.step().cancels_stopped == 0  # not before its grace
    assert job.status() is JobState.RUNNING
    clock.set(t0 + HEARTBEAT_S + grace)
    assert w.step().cancels_stopped == 1  # exactly at it
    settle(w)
    rec = job.info()
    assert rec.state is JobState.CANCELLED
    assert rec.error is not None and rec.error["type"] == "JobCancelled"
    clock.advance(HEARTBEAT_S)
    assert w.step().cancels_stopped == 0  # stopped once


def test_the_maintenance_tick_runs_on_its_period(url: str, prefix: str, clock: ManualClock) -> None:
    with App(url, prefix=prefix, tick_ms=1000) as app:
        w = Worker(app, clock=clock, name="ticker")
        t0 = clock.monotonic()
        try:
            first = w.step()
            assert first.ticked and first.tick is not None  # no master: the worker leads
            assert app.store.leader_holder() == "worker:ticker"
            clock.set(t0 + 0.999)
            assert not w.step().ticked
            clock.set(t0 + 1.0)
            assert w.step().ticked
            assert not w.step().ticked
            app.store.mark_master_alive("master-x", 60_000)
            clock.advance(1.0)
            handed = w.step()
            assert handed.ticked and handed.tick is None  # a master is alive: it leads now
            assert app.store.leader_holder() is None  # the worker gave the lease up
        finally:
            w.stop()
            assert w.step().stopped


def test_shutdown_waits_for_the_grace_then_requeues_what_still_runs(
    sapp: App, clock: ManualClock, make_worker: Callable[..., Worker]
) -> None:
    release = threading.Event()

    @sapp.task
    def hold() -> None:
        release.wait(WAIT)

    w = make_worker(prefetch=0, grace_s=5.0)
    job = hold.submit()
    assert w.step().claimed == 1
    queued = hold.submit()
    try:
        w.stop()
        t0 = clock.monotonic()
        assert not w.step().stopped  # the grace starts
        clock.set(t0 + 4.999)
        assert not w.step().stopped
        assert job.status() is JobState.RUNNING
        clock.set(t0 + 5.0)
        assert w.step().stopped
    finally:
        release.set()
    rec = job.info()
    assert (rec.state, rec.attempt) == (JobState.QUEUED, 0)  # requeued, not counted
    assert queued.status() is JobState.QUEUED  # never claimed while stopping
    assert w.step() == StepResult(stopped=True)


def test_step_and_run_do_not_mix(sapp: App, make_worker: Callable[..., Worker]) -> None:
    w = make_worker()
    w.step()
    with pytest.raises(RuntimeError, match="already started"):
        w.run()


def test_a_suspect_runs_alone_in_a_stepped_worker(
    sapp: App, make_worker: Callable[..., Worker]
) -> None:
    """A job whose worker died under it runs with nothing beside it: the step that claims it
    waits for the jobs before it, then for the suspect (real time, bounded by the pool)."""
    log: list[tuple[str, str]] = []
    lock = threading.Lock()

    @sapp.task
    def note(tag: str) -> str:
        with lock:
            log.append(("start", tag))
        time.sleep(0.02)  # long enough for a neighbour to overlap it if one were let in
        with lock:
            log.append(("end", tag))
        return tag

    suspect = note.submit("suspect")
    (ghost,) = sapp.store.claim("ghost", ["default"], 1, lease_ms=50, start=1)
    assert ghost.id == suspect.id
    assert tick(sapp.store, now=sapp.store.server_time_ms() + 1000).requeued == 1
    others = [note.submit(t) for t in ("a", "b", "c")]
    w = make_worker(concurrency=2, prefetch=2)
    first = w.step()
    assert first.claimed == 4
    reported = first.reported
    deadline = time.monotonic() + WAIT
    while reported < 4:
        assert time.monotonic() < deadline, "the jobs did not finish"
        reported += w.step().reported
        time.sleep(0.01)
    assert [j.result(timeout=WAIT) for j in (suspect, *others)] == ["suspect", "a", "b", "c"]
    at = log.index(("start", "suspect"))
    assert log[at + 1] == ("end", "suspect"), log  # nothing started or ended beside it
    with lock:
        running_before = {t for step, t in log[:at] if step == "start"}
        ended_before = {t for step, t in log[:at] if step == "end"}
    assert running_before == ended_before  # the jobs before it had finished


def test_run_keeps_its_timers_on_the_injected_clock(
    url: str, prefix: str, clock: ManualClock
) -> None:
    """`run()` (threads) reads the same clock: with a heartbeat and a shutdown grace longer than
    the test may last, only moving the manual clock makes the heartbeat publish and the
    shutdown go on."""
    long_ms = 100_000
    release = threading.Event()
    with App(
        url, prefix=prefix, heartbeat_ms=long_ms, lease_ms=2 * long_ms, worker_gone_ms=4 * long_ms
    ) as app:

        @app.task
        def hold() -> None:
            release.wait(WAIT)

        w = Worker(app, clock=clock, name="threaded", maintenance=False, grace_s=long_ms / 1000)
        t = threading.Thread(target=w.run, name="test-worker", daemon=True)
        entry = app.store.keys.worker("threaded")
        job = hold.submit()
        t.start()
        try:
            wait_for(lambda: job.status() is JobState.RUNNING, "the job to start")
            assert app.store.r.hget(entry, "inflight") == b"0"  # published at start
            clock.advance(long_ms / 1000)  # the heartbeat thread wakes on the manual clock
            wait_for(lambda: app.store.r.hget(entry, "inflight") == b"1", "a heartbeat")
            w.stop()
            wait_for(lambda: w.stop_at is not None, "the shutdown grace to start")
            clock.advance(long_ms / 1000)  # the grace runs out: the running job is requeued
            t.join(WAIT)
            assert not t.is_alive(), "the shutdown did not follow the clock"
        finally:
            release.set()
            w.stop(immediate=True)
            t.join(WAIT)
        rec = job.info()
        assert (rec.state, rec.attempt) == (JobState.QUEUED, 0)


def wait_for(cond: Callable[[], bool], what: str) -> None:
    """Wait (bounded, real time) for something another thread does."""
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
