"""What a worker promises about running jobs, checked on real `jobq worker` subprocesses:

- `-c N` is exact in every pool (thread, process, async with async and sync tasks): however
  many jobs are prefetched, N attempts run at once at most, and N are reached;
- `--cancel-grace S` is honoured to within a second for a task that ignores its cancel (the
  default heartbeat interval, far longer than the grace): the process and async pools stop it;
  the thread pool reports it cancelled while its thread runs on in its slot until it returns;
- a task that sees `current_job().cancelled()` and returns ends `cancelled` (its result
  discarded), and its dependent fails as one of a cancelled queued job does;
- `started` is when the attempt began running, `claimed` when it was claimed: a prefetched
  job has the second long before the first.

Workers run `semantics_tasks:app` (tests/semantics_tasks.py); tasks record facts in Redis
stamped with the server's clock (sched_tasks.record), which is what the tests read.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import procs
import pytest
import redis
from conftest import ROOT, jobq_cmd, on_every_layout, subprocess_env
from procs import JobqProcess, kill_all
from sched_tasks import fact_key
from semantics_tasks import make_app, seen_key

from jobq import App, JobCancelled, JobState
from jobq.codes import Cancel, Complete, Fail
from jobq.model import Claimed, JobRecord, JobSpec, Outcome
from jobq.states import TERMINAL

pytestmark = [pytest.mark.timeout(150), on_every_layout]

T = TypeVar("T")
WAIT = 60.0  # seconds: generous, the machine may be loaded by other suites
#: How late after its grace a cancel may stop a job (the promise: within a second).
GRACE_TOLERANCE_S = 1.0


def wait_until(check: Callable[[], T], timeout: float = WAIT, what: str = "a condition") -> T:
    return procs.wait_until(check, timeout, what)


class Workers:
    """`jobq worker semantics_tasks:app` subprocesses on one prefix, killed at teardown."""

    def __init__(self, tmp: Path, url: str, prefix: str) -> None:
        self.tmp, self.url, self.prefix = tmp, url, prefix
        self.procs: list[JobqProcess] = []

    def start(self, name: str, *args: str) -> JobqProcess:
        argv = jobq_cmd("worker", "semantics_tasks:app", "--name", name, *args)
        env = subprocess_env(self.url, self.prefix, SCHED_WORKER=name)
        log_path = self.tmp / f"{name}-{len(self.procs)}.log"
        p = JobqProcess.spawn(name, argv, log_path, env, cwd=ROOT, wait_s=WAIT)
        self.procs.append(p)
        p.wait_log(" serving ")
        return p

    def close(self) -> None:
        kill_all(self.procs, tail=3000)


@pytest.fixture
def workers(tmp_path: Path, url: str, prefix: str) -> Iterator[Workers]:
    w = Workers(tmp_path, url, prefix)
    yield w
    w.close()


@pytest.fixture
def sapp(url: str, prefix: str) -> Iterator[App]:
    a = make_app(url, prefix)
    yield a
    a.close()


def new_tag() -> str:
    return uuid.uuid4().hex[:8]


def facts(app: App, tag: str, step: str | None = None) -> list[dict[str, Any]]:
    """What the tasks called with `tag` recorded, oldest first (only `step` entries if given)."""
    r: redis.Redis = app.store.r
    out = [json.loads(x) for x in r.lrange(fact_key(app.settings.prefix, tag), 0, -1)]
    return [e for e in out if step is None or e["step"] == step]


def terminal(app: App, job_id: str, timeout: float = WAIT) -> JobRecord:
    """Block (no polling) until the job is terminal; return its full record."""
    waited = app.store.wait(job_id, timeout)
    assert waited is not None, f"job {job_id} vanished"
    assert waited.state in TERMINAL, f"job {job_id} still {waited.state} after {timeout:g}s"
    rec = app.store.get_job(job_id)
    assert rec is not None, f"job {job_id} vanished"
    return rec


def record(app: App, job_id: str) -> JobRecord:
    rec = app.store.get_job(job_id)
    assert rec is not None, f"job {job_id} vanished"
    return rec


# -- -c is exact -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "task"),
    [
        ("thread", "overlap"),
        ("process", "overlap"),
        ("async", "overlap_async"),
        ("async", "overlap"),  # a sync task in the async pool: on the loop's executor
    ],
)
def test_concurrency_is_exact_whatever_the_prefetch(
    workers: Workers, sapp: App, pool: str, task: str
) -> None:
    n, prefetch, jobs = 3, 5, 18
    workers.start(f"{pool}-c{n}", "--pool", pool, "-c", str(n), "--prefetch", str(prefetch))
    tag = new_tag()
    submitted = [sapp.tasks[task].submit(tag, 0.3) for _ in range(jobs)]
    for job in submitted:
        assert terminal(sapp, job.id).state is JobState.SUCCEEDED
    seen = [int(x) for x in sapp.store.r.lrange(seen_key(sapp.settings.prefix, tag), 0, -1)]
    assert len(seen) == jobs
    # n + prefetch jobs were held at once; never more than n of them ran, and n did.
    assert max(seen) == n, seen


# -- cancel: the grace -----------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "task"), [("process", "deaf"), ("async", "deaf_async")])
def test_a_task_ignoring_its_cancel_is_stopped_at_the_grace(
    workers: Workers, sapp: App, pool: str, task: str
) -> None:
    grace = 2.0
    # The default heartbeat interval (10 s), far longer than the grace.
    w = workers.start(f"{pool}-deaf", "--pool", pool, "-c", "1", "--cancel-grace", str(grace))
    tag = new_tag()
    job = sapp.tasks[task].submit(tag, 60)
    wait_until(lambda: facts(sapp, tag, "start"), what="the job to start")
    asked = time.monotonic()
    assert job.cancel() is False  # running: asked to stop
    rec = terminal(sapp, job.id)
    took = time.monotonic() - asked
    assert rec.state is JobState.CANCELLED
    assert rec.error is not None and rec.error["type"] == "JobCancelled"
    assert "cancelled while running" in rec.error["message"]
    assert grace - 0.1 <= took <= grace + GRACE_TOLERANCE_S, f"stopped {took:.2f}s after"
    assert not facts(sapp, tag, "end")  # stopped, not finished
    w.wait_log(f"job {job.id} ignored its cancel request")
    # The worker keeps serving in that slot.
    again = sapp.tasks[task].submit(tag, 0)
    assert terminal(sapp, again.id).state is JobState.SUCCEEDED


def test_thread_pool_reports_the_cancel_at_the_grace_and_keeps_the_slot_busy(
    workers: Workers, sapp: App
) -> None:
    grace, runs_s = 1.0, 4.0
    w = workers.start("thread-deaf", "-c", "1", "--cancel-grace", str(grace))
    tag = new_tag()
    job = sapp.tasks["deaf"].submit(tag, runs_s)
    wait_until(lambda: facts(sapp, tag, "start"), what="the job to start")
    asked = time.monotonic()
    job.cancel()
    rec = terminal(sapp, job.id)
    took = time.monotonic() - asked
    # Reported cancelled at the grace, though its thread cannot be stopped...
    assert rec.state is JobState.CANCELLED
    assert rec.error is not None and rec.error["type"] == "JobCancelled"
    assert grace - 0.1 <= took <= grace + GRACE_TOLERANCE_S, f"reported {took:.2f}s after"
    w.wait_log("this pool cannot stop a thread")
    # ...which runs on in its slot: the next job (-c 1) starts only once it has returned.
    nxt = sapp.tasks["deaf"].submit(tag, 0)
    assert terminal(sapp, nxt.id).state is JobState.SUCCEEDED
    ends = facts(sapp, tag, "end")
    starts = facts(sapp, tag, "start")
    first_end = next(e for e in ends if e["job"] == job.id)
    second_start = next(e for e in starts if e["job"] == nxt.id)
    assert second_start["t"] >= first_end["t"]
    assert record(sapp, job.id).state is JobState.CANCELLED  # its late outcome was dropped


# -- cancel: a job that stops because of it ends cancelled -------------------------------------


def test_a_task_that_returns_on_cancel_ends_cancelled_and_fails_its_dependent(
    workers: Workers, sapp: App
) -> None:
    workers.start("polite", "-c", "2", "--cancel-grace", "30")
    tag = new_tag()
    parent = sapp.tasks["polite"].submit(tag)
    kid = sapp.tasks["child"].submit(tag, depends_on=parent)
    wait_until(lambda: facts(sapp, tag, "start"), what="the job to start")
    parent.cancel()
    rec = terminal(sapp, parent.id)
    assert facts(sapp, tag, "saw-cancel")  # it stopped by itself, well within its grace
    assert rec.state is JobState.CANCELLED and rec.result is None
    assert rec.error is not None and "cancelled while running" in rec.error["message"]
    with pytest.raises(JobCancelled):
        parent.result(timeout=1)
    # Its dependent is settled as one of a cancelled queued job is.
    queued = sapp.tasks["child"].submit(tag, delay=3600)
    queued_kid = sapp.tasks["child"].submit(tag, depends_on=queued)
    assert queued.cancel() is True
    got, want = terminal(sapp, kid.id), terminal(sapp, queued_kid.id)
    assert (got.state, want.state) == (JobState.FAILED, JobState.FAILED)
    assert got.error is not None and want.error is not None
    assert got.error["type"] == want.error["type"] == "DependencyFailed"
    assert got.error["message"] == f"parent job {parent.id} cancelled"
    assert not facts(sapp, tag, "child")


# -- started vs claimed ----------------------------------------------------------------------


def test_started_is_when_the_attempt_began_not_when_it_was_claimed(
    workers: Workers, sapp: App
) -> None:
    workers.start("prefetching", "-c", "1", "--prefetch", "2")
    tag = new_tag()
    jobs = [sapp.tasks["gated"].submit(tag) for _ in range(3)]
    # All three are claimed (one runs, two wait in the worker's prefetch).
    wait_until(
        lambda: all(record(sapp, j.id).state is JobState.RUNNING for j in jobs),
        what="the three jobs to be claimed",
    )
    wait_until(lambda: facts(sapp, tag, "start"), what="the first job to start")
    recs = [record(sapp, j.id) for j in jobs]
    assert all(r.claimed_ms is not None for r in recs)
    begun = [r for r in recs if r.started_ms is not None]
    assert [r.id for r in begun] == [jobs[0].id], "only the job in the slot has begun"
    view = sapp.store.get_job(jobs[1].id)
    assert view is not None and view.started_ms is None and view.claimed_ms is not None
    sapp.store.r.rpush(fact_key(sapp.settings.prefix, tag) + ":gate", "1")
    # The second starts when the first returns: its begin mark sets `started` at once.
    wait_until(lambda: record(sapp, jobs[1].id).started_ms, what="the second job's start")
    sapp.store.r.rpush(fact_key(sapp.settings.prefix, tag) + ":gate", "1", "1")
    for j in jobs:
        assert terminal(sapp, j.id).state is JobState.SUCCEEDED
    ends = {e["job"]: e["t"] // 1000 for e in facts(sapp, tag, "end")}  # server ms
    starts = {e["job"]: e["t"] // 1000 for e in facts(sapp, tag, "start")}
    for prev, j in itertools.pairwise(jobs):
        r = record(sapp, j.id)
        assert r.claimed_ms is not None and r.started_ms is not None
        # Claimed before the job ahead of it returned, began after (one slot)...
        assert r.claimed_ms <= ends[prev.id] - 1 <= r.started_ms, (r, ends)
        # ...and about when its task began (the report: server clock minus its run time).
        assert r.started_ms <= starts[j.id] + 50, (r, starts)


# -- the scripts behind it, stepped time (no worker) -----------------------------------------

T0 = 1_000_000_000  # a fake server clock, in ms
LEASE = 10_000


def claim_all(app: App, ids: set[str], now: int, start: int = 0) -> dict[str, Claimed]:
    """Claim until every job of `ids` is claimed (partitions answer in turn)."""
    got: dict[str, Claimed] = {}
    for _ in range(20):
        for c in app.store.claim("w1", ["default"], len(ids) - len(got), LEASE, now, start):
            got[c.id] = c
        if set(got) == ids:
            return got
    raise AssertionError(f"claimed only {sorted(got)} of {sorted(ids)}")


def spec(job_id: str, **kw: Any) -> JobSpec:
    return JobSpec(job_id, "t", "default", b"[[],{}]", **kw)


def test_claim_mark_and_report_set_claimed_and_started(app: App) -> None:
    store = app.store
    store.submit([spec("a")], now=T0)
    a = claim_all(app, {"a"}, T0 + 5, start=1)["a"]  # into an idle slot: begins now
    assert (record(app, "a").claimed_ms, record(app, "a").started_ms) == (T0 + 5, T0 + 5)
    store.submit([spec("b"), spec("c"), spec("d", max_attempts=3)], now=T0)
    got = claim_all(app, {"b", "c", "d"}, T0 + 6)  # claimed ahead: not begun
    assert all(record(app, i).started_ms is None for i in "bcd")
    assert all(record(app, i).claimed_ms == T0 + 6 for i in "bcd")
    # The begin mark (a heartbeat as the job starts) sets it to the server's clock...
    store.heartbeat([], LEASE, now=T0 + 50, began=[(got["b"].id, got["b"].token)])
    assert record(app, "b").started_ms == T0 + 50
    # ...and the report to its clock minus how long the attempt ran, by the worker's measure.
    t = time.monotonic()
    ran = [
        Outcome(got["b"], ok=True, result=b"[1]", began_s=t - 4),
        Outcome(a, ok=True, result=b"[1]"),  # unknown: what the claim wrote stays
        Outcome(got["c"], ok=True, result=b"[1]", began_s=t - 3600),  # never before its claim
    ]
    store.report(ran, now=T0 + 10_000)  # (slack: the calls between `t` and the report)
    assert T0 + 5_500 <= (record(app, "b").started_ms or 0) <= T0 + 6_000
    assert record(app, "a").started_ms == T0 + 5
    assert record(app, "c").started_ms == T0 + 6
    err = {"type": "ValueError", "message": "boom", "traceback": ""}
    failed = Outcome(got["d"], ok=False, error=err, retry_delay_ms=0, began_s=time.monotonic())
    store.report([failed], T0 + 20_000)
    d = record(app, "d")
    assert d.state is JobState.SCHEDULED and T0 + 19_500 <= (d.started_ms or 0) <= T0 + 20_000


@pytest.mark.parametrize("ok", [True, False])
def test_an_outcome_after_a_cancel_request_ends_cancelled_and_fails_the_dependents(
    app: App, ok: bool
) -> None:
    store = app.store
    store.submit([spec("p", max_attempts=3)], now=T0)
    store.submit([spec("k", parents=("p",))], now=T0)
    p = claim_all(app, {"p"}, T0 + 1, start=1)["p"]
    assert store.cancel("p") == Cancel.REQUESTED
    err = {"type": "ValueError", "message": "boom", "traceback": ""}
    outcome = (
        Outcome(p, ok=True, result=b'["kept?"]')
        if ok
        else Outcome(p, ok=False, error=err, retry_delay_ms=0)  # attempts remain: no retry
    )
    codes = store.report([outcome], now=T0 + 2)
    assert codes == {"p": Complete.CANCELLED if ok else Fail.CANCELLED}
    rec = record(app, "p")
    assert rec.state is JobState.CANCELLED and rec.result is None and rec.finished_ms == T0 + 2
    assert rec.error is not None
    if ok:
        assert rec.error["type"] == "JobCancelled"
        assert "cancelled while running" in rec.error["message"]
    else:
        assert rec.error == err  # the attempt's own error is kept
    kid = record(app, "k")
    assert kid.state is JobState.FAILED and kid.error is not None
    assert kid.error["type"] == "DependencyFailed"
    assert kid.error["message"] == "parent job p cancelled"


def test_a_prefetched_job_cancelled_before_it_starts_never_starts(
    workers: Workers, sapp: App
) -> None:
    workers.start("prefetch-cancel", "-c", "1", "--prefetch", "1")
    tag = new_tag()
    first, second = (sapp.tasks["gated"].submit(tag) for _ in range(2))
    wait_until(lambda: record(sapp, second.id).state is JobState.RUNNING, what="the prefetch claim")
    asked = time.monotonic()
    assert second.cancel() is False  # claimed: `running` to the server, so only flagged
    rec = terminal(sapp, second.id)
    took = time.monotonic() - asked
    # Seen by the next poll (not the full heartbeat, 10 s away), and never started.
    assert took < 1 + GRACE_TOLERANCE_S, f"cancelled {took:.2f}s after"
    assert rec.state is JobState.CANCELLED and rec.started_ms is None
    assert rec.error is not None and "cancelled before it started" in rec.error["message"]
    sapp.store.r.rpush(fact_key(sapp.settings.prefix, tag) + ":gate", "1")
    assert terminal(sapp, first.id).state is JobState.SUCCEEDED
    assert [e["job"] for e in facts(sapp, tag, "start")] == [first.id]
