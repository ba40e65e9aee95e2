"""Crash and resilience tests: real Valkey servers, real `jobq worker` subprocesses, real signals.

What is killed, stopped or restarted here, and what must hold afterwards:
- a worker killed with SIGKILL mid-job: the job runs again elsewhere, one outcome is recorded;
- a worker frozen with SIGSTOP past its lease: when it wakes up it cannot overwrite the result;
- the server killed and restarted (AOF): no job lost, workers reconnect by themselves;
- SIGTERM / SIGINT: graceful shutdown, grace period, second Ctrl-C;
- hard timeouts in the process, thread and async pools;
- a job that kills its own worker every time: dead-lettered after JOBQ_MAX_LOST losses;
- the broker unreachable: a clear error naming the URL; a worker waits for the server;
- and the reaper stepped deterministically with an explicit clock (STYLE habit 7).

Workers run `crash_tasks:app` (tests/crash_tasks.py); its tasks record every step in a Redis list,
which is what the tests wait on. Waits are bounded polls or blocking reads with generous timeouts,
so the file stays reliable on a loaded machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from conftest import ValkeyProcess, free_port, jobq_cmd, subprocess_env
from crash_tasks import runs_key
from procs import JobqProcess, kill_all, wait_until

from jobq import App, BrokerUnavailable, JobState
from jobq.keys import Keys
from jobq.maintenance import tick
from jobq.model import JobRecord, Outcome
from jobq.states import TERMINAL
from jobq.worker.pools import ProcessPool

T = TypeVar("T")

# Short leases so expiry-driven recovery happens within seconds; the heartbeat stays well inside
# the lease so a healthy (if slow) worker keeps its jobs.
SHORT_LEASES = {
    "JOBQ_LEASE_MS": "2000",
    "JOBQ_HEARTBEAT_MS": "250",
    "JOBQ_TICK_MS": "100",
    "JOBQ_LEADER_MS": "1000",
}


# -- helpers ---------------------------------------------------------------------------------


WorkerProcess = JobqProcess


class Workers:
    """Starts `jobq worker crash_tasks:app` subprocesses; kills whatever is left at teardown."""

    def __init__(self, tmp_path: Path, url: str, prefix: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.prefix = prefix
        self.started: list[WorkerProcess] = []

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        url: str | None = None,
        ready: bool = True,
    ) -> WorkerProcess:
        """Start a worker with extra CLI `args`; wait until it serves unless `ready` is False."""
        log_path = self.tmp_path / f"worker-{len(self.started)}.log"
        env_ = subprocess_env(url or self.url, self.prefix, **(env or {}))
        argv = jobq_cmd("worker", "crash_tasks:app", *args)
        w = WorkerProcess.spawn(f"worker-{len(self.started)}", argv, log_path, env_)
        self.started.append(w)
        if ready:
            w.wait_log(" serving ", timeout=60)
        return w

    def by_pid(self, pid: int) -> WorkerProcess:
        return next(w for w in self.started if w.pid == pid)

    def close(self) -> None:
        kill_all(self.started)


@pytest.fixture
def workers(tmp_path: Path, url: str, prefix: str) -> Iterator[Workers]:
    ws = Workers(tmp_path, url, prefix)
    yield ws
    ws.close()


@pytest.fixture
def aof_server() -> Iterator[ValkeyProcess]:
    """A server of its own (AOF, fsync always) that a test may kill and restart."""
    server = ValkeyProcess(appendonly=True)
    server.start()
    yield server
    server.cleanup()


def runs(r: redis.Redis, prefix: str, tag: str) -> list[dict[str, Any]]:
    """Every step recorded by tasks called with `tag`, oldest first."""
    return [json.loads(x) for x in r.lrange(runs_key(prefix, tag), 0, -1)]


def starts(r: redis.Redis, prefix: str, tag: str) -> list[dict[str, Any]]:
    return [e for e in runs(r, prefix, tag) if e["step"] == "start"]


def events(r: redis.Redis, prefix: str, job_id: str) -> list[tuple[str, str]]:
    """(state, info) of every event of one job in the stream, oldest first."""
    out = []
    for _id, fields in r.xrange(Keys(prefix).events):
        if fields[b"job"].decode() == job_id:
            out.append((fields[b"state"].decode(), fields.get(b"info", b"").decode()))
    return out


def terminal(app: App, job_id: str, timeout: float) -> JobRecord:
    """Block (no polling) until the job reaches a terminal state; return its record."""
    rec = app.store.wait(job_id, timeout)
    assert rec is not None, f"job {job_id} vanished"
    assert rec.state in TERMINAL, f"job {job_id} still {rec.state} after {timeout}s"
    return rec


def result_of(app: App, rec: JobRecord) -> Any:
    assert rec.result is not None
    return app.serializer.decode_result(rec.result)


def assert_one_outcome(r: redis.Redis, prefix: str, job_id: str, state: str) -> None:
    """The stream holds exactly one terminal event for the job, and it is `state`."""
    ends = [s for s, _ in events(r, prefix, job_id) if s in {t.value for t in TERMINAL}]
    assert ends == [state], f"terminal events of {job_id}: {ends}"


# -- 1. kill -9 mid-job ----------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_sigkill_mid_job_reruns_elsewhere_and_records_one_outcome(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    pair = [workers.start("-c", "1", env=SHORT_LEASES) for _ in range(2)]
    # Attempt 1 hangs (it is killed long before it ends); later attempts are quick.
    job = app.submit("record_and_sleep", ["k9", [60, 0.1]], retries=2)
    first = wait_until(lambda: starts(rclient, prefix, "k9"), 30, "the job to start")[0]
    victim = workers.by_pid(first["pid"])
    survivor = next(w for w in pair if w is not victim)
    assert first["attempt"] == 1

    victim.signal(signal.SIGKILL)
    assert victim.wait_exit(10) == -signal.SIGKILL

    rec = terminal(app, job.id, 60)
    assert rec.state == JobState.SUCCEEDED
    out = result_of(app, rec)
    assert out["pid"] == survivor.pid
    # A lost worker is not a counted attempt: the rerun is attempt 1 again, with a new token.
    assert out["attempt"] == rec.attempt == 1 and out["run"] == 2
    assert int(out["token"]) == rec.token > int(first["token"])
    # The killed attempt never finished; only the survivor's attempt ran to the end.
    ends = [e for e in runs(rclient, prefix, "k9") if e["step"] == "end"]
    assert [(e["pid"], e["run"]) for e in ends] == [(survivor.pid, 2)]
    evs = events(rclient, prefix, job.id)
    assert any(s == "queued" and i.startswith("lease expired: worker") for s, i in evs)
    assert_one_outcome(rclient, prefix, job.id, "succeeded")
    assert rclient.zscore(Keys(prefix).leases, job.id) is None
    (q,) = app.queue_info()
    assert (q.running, q.succeeded, q.failed) == (0, 1, 0)
    assert survivor.alive()


# -- 2. SIGSTOP past the lease: fencing ------------------------------------------------------


@pytest.mark.timeout(90)
def test_stalled_worker_resumed_after_its_lease_cannot_overwrite_the_result(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    pair = [workers.start("-c", "1", env=SHORT_LEASES) for _ in range(2)]
    # Attempt 1 sleeps 5 s: the stalled worker finishes it after resuming and tries to report.
    job = app.submit("record_and_sleep", ["stop", [5, 0.1]], retries=2)
    first = wait_until(lambda: starts(rclient, prefix, "stop"), 30, "the job to start")[0]
    stalled = workers.by_pid(first["pid"])
    other = next(w for w in pair if w is not stalled)
    stalled.signal(signal.SIGSTOP)
    try:
        rec = terminal(app, job.id, 60)
    finally:
        stalled.signal(signal.SIGCONT)
    assert rec.state == JobState.SUCCEEDED
    second = result_of(app, rec)
    assert second["pid"] == other.pid and second["run"] == 2 and second["attempt"] == rec.attempt

    # The zombie attempt runs to its end, reports, and is refused by its stale token.
    wait_until(
        lambda: any(
            e["step"] == "end" and e["pid"] == stalled.pid for e in runs(rclient, prefix, "stop")
        ),
        30,
        "the stalled attempt to finish",
    )
    # Either its heartbeat learnt first that the lease is gone (the thread pool cannot stop the
    # attempt, so it discards the outcome) or its report was refused by the stale token.
    wait_until(
        lambda: "a newer attempt owns it" in stalled.log() or "fenced" in stalled.log(),
        30,
        "the stalled worker to drop its outcome",
    )
    after = app.store.get_job(job.id)
    assert after is not None
    assert after.state == JobState.SUCCEEDED
    assert (after.result, after.attempt, after.token) == (rec.result, rec.attempt, rec.token)
    assert_one_outcome(rclient, prefix, job.id, "succeeded")
    assert stalled.alive() and other.alive()


# -- 3. server restart with AOF --------------------------------------------------------------


@pytest.mark.timeout(120)
def test_server_killed_and_restarted_with_aof_loses_no_job(
    aof_server: ValkeyProcess, prefix: str, workers: Workers
) -> None:
    env = {**SHORT_LEASES, "JOBQ_LEASE_MS": "4000", "JOBQ_HEARTBEAT_MS": "500"}
    pair = [workers.start("-c", "2", env=env, url=aof_server.url) for _ in range(2)]
    n = 40
    with App(aof_server.url, prefix=prefix) as app, redis.Redis.from_url(aof_server.url) as r:
        # Retries: an attempt cut off by the outage (its own Redis write fails) is retried.
        jobs = app.submit_many(
            "record_and_sleep", [(("aof", 0.2), {}) for _ in range(n)], retries=5, backoff=0.2
        )
        done_before = wait_until(
            lambda: (
                sum(e["step"] == "end" for e in runs(r, prefix, "aof")) >= 8
                and len({e["job"] for e in runs(r, prefix, "aof") if e["step"] == "end"})
            ),
            60,
            "some jobs to finish",
        )
        aof_server.stop(kill=True)
        assert done_before < n  # the outage hits the run in its middle
        for w in pair:  # every worker notices the outage before the server comes back
            w.wait_log("cannot reach Valkey", timeout=30)
        # Stay down longer than redis-py's own reconnect retries (well under a second), so
        # jobq's paths are what recover: running tasks' writes fail, reports wait and retry.
        time.sleep(2)
        aof_server.start()

        recs = [terminal(app, j.id, 90) for j in jobs]
        assert [rec.state for rec in recs] == [JobState.SUCCEEDED] * n
        for j in jobs:
            assert_one_outcome(r, prefix, j.id, "succeeded")
        ran = {e["job"] for e in runs(r, prefix, "aof") if e["step"] == "end"}
        assert ran == {j.id for j in jobs}

        # The workers reconnected by themselves and keep serving.
        more = app.submit_many("echo", [((i,), {}) for i in range(10)])
        assert [m.result(timeout=60) for m in more] == list(range(10))
        assert r.zcard(Keys(prefix).leases) == 0
        assert all(w.alive() for w in pair)


# -- 4. graceful shutdown --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sigterm_finishes_the_running_job_and_leaves_queued_jobs_queued(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "1")
    running = app.submit("record_and_sleep", ["term", 3])
    wait_until(lambda: starts(rclient, prefix, "term"), 30, "the job to start")
    # Queued behind it; with the default prefetch the worker may already hold one of them.
    waiting = [app.submit("record_and_sleep", ["term-later", 0]) for _ in range(3)]
    w.signal(signal.SIGTERM)
    assert w.wait_exit(30) == 0

    rec = app.store.get_job(running.id)
    assert rec is not None and rec.state == JobState.SUCCEEDED and rec.attempt == 1
    for j in waiting:
        rec = app.store.get_job(j.id)
        assert rec is not None and (rec.state, rec.attempt) == (JobState.QUEUED, 0)
        assert rclient.zscore(Keys(prefix).queue("default"), j.id) is not None
    assert runs(rclient, prefix, "term-later") == []
    assert rclient.zcard(Keys(prefix).leases) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_job_running_past_the_grace_period_is_requeued_without_counting_the_attempt(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers, pool: str
) -> None:
    w = workers.start("-c", "1", "--pool", pool, "--grace", "1")
    job = app.submit("record_and_sleep", ["grace", 60], retries=2)
    wait_until(lambda: starts(rclient, prefix, "grace"), 30, "the job to start")
    w.signal(signal.SIGTERM)
    assert w.wait_exit(30) == 0
    _assert_requeued_at_shutdown(app, rclient, prefix, job.id)


@pytest.mark.timeout(60)
def test_second_sigint_requeues_the_running_job_at_once(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "1", "--grace", "600")
    job = app.submit("record_and_sleep", ["int", 60], retries=2)
    wait_until(lambda: starts(rclient, prefix, "int"), 30, "the job to start")
    w.signal(signal.SIGINT)
    w.wait_log("Ctrl-C again")
    assert w.alive() and app.job(job.id).status() == JobState.RUNNING  # still within grace
    w.signal(signal.SIGINT)
    assert w.wait_exit(30) == 0  # far less than the 600 s grace
    _assert_requeued_at_shutdown(app, rclient, prefix, job.id)


@pytest.mark.timeout(60)
def test_process_pool_killed_at_shutdown_reports_no_outcome(
    app: App, rclient: redis.Redis, url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker requeues what the pool kills at shutdown; the pool must not also report the
    killed attempt as failed (the failure would race the requeue and count the attempt)."""
    monkeypatch.setenv("JOBQ_URL", url)  # for the spawned child's App()
    monkeypatch.setenv("JOBQ_PREFIX", prefix)
    app.submit("record_and_sleep", ["pkill", 60])
    (claimed,) = app.store.claim("pool-test", ["default"], 1, 60_000)
    outcomes: list[Outcome] = []
    pool = ProcessPool(app, 1, outcomes.append, "crash_tasks:app")
    pool.start()
    try:
        pool.submit(claimed)
        wait_until(lambda: starts(rclient, prefix, "pkill"), 30, "the job to start")
        child = pool.slots[0].proc
        pool.kill()
        assert not child.is_alive()
        # Let the slot thread handle its dead child, then end it, so nothing is still to come.
        pool.stop()
        for t in threading.enumerate():
            if t.name.startswith("jobq-slot-"):
                t.join(30)
        assert outcomes == []
        assert pool.slots[0].proc is child  # no new child spawned while shutting down
    finally:
        pool.kill()


def _assert_requeued_at_shutdown(app: App, r: redis.Redis, prefix: str, job_id: str) -> None:
    rec = app.store.get_job(job_id)
    assert rec is not None
    assert (rec.state, rec.attempt) == (JobState.QUEUED, 0)  # the attempt is not counted
    assert ("queued", "requeued at shutdown") in events(r, prefix, job_id)
    assert [s for s, _ in events(r, prefix, job_id)].count("scheduled") == 0  # not failed
    assert r.zscore(Keys(prefix).queue("default"), job_id) is not None
    assert r.zscore(Keys(prefix).leases, job_id) is None


# -- 5. hard timeouts ------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_process_pool_kills_the_child_at_the_timeout_and_retries(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "1", "--pool", "process")
    # (timeout 3 s, not 1: a replacement child must import the app first, which on a loaded
    # 2-core machine took longer than 1 s, so the attempt timed out before it started)
    job = app.submit("record_and_sleep", ["ptmo", 60], timeout=3, retries=1, backoff=0.1)
    rec = terminal(app, job.id, 60)
    assert (rec.state, rec.attempt) == (JobState.FAILED, 2)
    assert rec.error is not None and rec.error["type"] == "TimeoutError"
    attempts = starts(rclient, prefix, "ptmo")
    assert [e["attempt"] for e in attempts] == [1, 2]
    # Each attempt ran in a child that was killed (and reaped) at its deadline.
    assert len({e["pid"] for e in attempts}) == 2
    for e in attempts:
        assert e["pid"] != w.pid
        with pytest.raises(ProcessLookupError):
            os.kill(e["pid"], 0)
    assert [s for s, _ in events(rclient, prefix, job.id)].count("scheduled") == 1  # one retry
    assert_one_outcome(rclient, prefix, job.id, "failed")
    # The worker keeps running and serves the next job on a fresh child.
    assert app.submit("echo", ["next"]).result(timeout=60) == "next"
    assert w.alive()


@pytest.mark.timeout(60)
def test_thread_pool_fails_the_attempt_at_the_timeout_and_drops_the_late_outcome(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "1", "--pool", "thread")
    job = app.submit("record_and_sleep", ["ttmo", 3], timeout=1)
    rec = terminal(app, job.id, 60)
    assert (rec.state, rec.attempt) == (JobState.FAILED, 1)
    assert rec.error is not None and rec.error["type"] == "TimeoutError"
    # A fresh thread took the slot: the next job runs while the stuck one still sleeps.
    assert app.submit("echo", ["next"]).result(timeout=60) == "next"
    # The abandoned thread ends later; its outcome does not replace the recorded failure.
    wait_until(
        lambda: any(e["step"] == "end" for e in runs(rclient, prefix, "ttmo")),
        30,
        "the abandoned attempt to end",
    )
    assert app.submit("echo", ["after"]).result(timeout=60) == "after"
    after = app.store.get_job(job.id)
    assert after is not None and after.state == JobState.FAILED
    assert after.error == rec.error
    assert_one_outcome(rclient, prefix, job.id, "failed")
    assert w.alive()


@pytest.mark.timeout(60)
def test_async_pool_cancels_the_task_at_the_timeout(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "2", "--pool", "async")
    job = app.submit("async_record_and_sleep", ["atmo", 60], timeout=1, retries=1, backoff=0.1)
    rec = terminal(app, job.id, 60)
    assert (rec.state, rec.attempt) == (JobState.FAILED, 2)
    assert rec.error is not None and rec.error["type"] == "TimeoutError"
    steps = [(e["step"], e["attempt"]) for e in runs(rclient, prefix, "atmo")]
    assert steps == [("start", 1), ("cancelled", 1), ("start", 2), ("cancelled", 2)]
    assert_one_outcome(rclient, prefix, job.id, "failed")
    assert app.submit("echo", ["next"]).result(timeout=60) == "next"
    assert w.alive()


# -- 6. a job that kills its worker ----------------------------------------------------------


@pytest.mark.timeout(120)
def test_job_that_kills_its_worker_every_time_is_dead_lettered(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    """Thread pool: the job takes the whole worker down; only the lease reaper can end it. A
    lost worker is not a failed attempt: the job is dead-lettered after killing its worker
    JOBQ_MAX_LOST (3) times, whatever its retries, with an error that says so."""
    job = app.submit("kill_own_process", ["suicide", 1_000], retries=1)
    w = workers.start("-c", "1", env=SHORT_LEASES, ready=False)
    deaths = 0
    deadline = time.monotonic() + 90
    # A supervisor's job: restart the worker each time the job kills it.
    while app.job(job.id).status() not in TERMINAL:
        assert time.monotonic() < deadline, f"job still {app.job(job.id).status()}"
        if not w.alive():
            assert w.proc.returncode == -signal.SIGKILL
            deaths += 1
            w = workers.start("-c", "1", env=SHORT_LEASES, ready=False)
        time.sleep(0.05)
    rec = terminal(app, job.id, 10)
    assert (rec.state, rec.attempt) == (JobState.FAILED, 1)
    assert rec.error is not None and rec.error["type"] == "WorkerLost"
    assert "3 time(s)" in rec.error["message"] and "poison pill" in rec.error["message"]
    assert [e["run"] for e in starts(rclient, prefix, "suicide")] == [1, 2, 3]
    assert deaths == 3
    assert job.id in app.dead_letters()
    failed = [i for s, i in events(rclient, prefix, job.id) if s == "failed"]
    assert failed == ["worker lost 3 times"]
    assert_one_outcome(rclient, prefix, job.id, "failed")
    # The last worker was never hit (the job is dead) and serves other jobs.
    assert app.submit("echo", ["alive"]).result(timeout=60) == "alive"
    assert w.alive()


@pytest.mark.timeout(90)
def test_process_pool_survives_children_killed_by_their_job(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "1", "--pool", "process")
    always = app.submit("kill_own_process", ["always", 1_000], retries=2, backoff=0.1)
    once = app.submit("kill_own_process", ["once", 1], retries=1, backoff=0.1)

    rec = terminal(app, always.id, 60)
    assert (rec.state, rec.attempt) == (JobState.FAILED, 3)
    assert rec.error is not None and "child process died" in rec.error["message"]
    assert always.id in app.dead_letters()
    assert_one_outcome(rclient, prefix, always.id, "failed")

    rec = terminal(app, once.id, 60)
    assert (rec.state, rec.attempt) == (JobState.SUCCEEDED, 2)
    assert result_of(app, rec)["attempt"] == 2
    assert_one_outcome(rclient, prefix, once.id, "succeeded")
    assert w.alive()


# -- 7. broker unreachable -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_unreachable_broker_raises_an_error_naming_the_url(prefix: str) -> None:
    port = free_port()  # nothing listens here
    url = f"redis://127.0.0.1:{port}/0"
    with App(url, prefix=prefix) as app:
        with pytest.raises(BrokerUnavailable, match=f"cannot reach Valkey at {url}"):
            app.submit("echo", [1])
        with pytest.raises(BrokerUnavailable, match="JOBQ_URL"):
            app.job("nope").status()
    with App(f"redis://:s3cret@127.0.0.1:{port}/0", prefix=prefix) as app:
        with pytest.raises(BrokerUnavailable) as err:
            app.submit("echo", [1])
        assert f"redis://:***@127.0.0.1:{port}/0" in str(err.value)
        assert "s3cret" not in str(err.value)
    cli = subprocess.run(
        jobq_cmd("submit", "echo", "--args", "[1]"),
        env=subprocess_env(url, prefix),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 3, cli.stderr
    assert url in cli.stderr


@pytest.mark.timeout(90)
def test_worker_started_while_the_server_is_down_serves_once_it_is_up(
    prefix: str, workers: Workers
) -> None:
    server = ValkeyProcess()  # a port of its own, not started yet
    try:
        w = workers.start("-c", "1", url=server.url, ready=False)
        w.wait_log(f"cannot reach Valkey at {server.url}", timeout=60)
        time.sleep(0.5)  # long enough for a worker that gives up to exit
        assert w.alive()
        server.start()
        with App(server.url, prefix=prefix) as app:
            assert app.submit("echo", ["up"]).result(timeout=60) == "up"
        assert w.alive()
    finally:
        server.cleanup()


# -- 8. the reaper, stepped with an explicit clock -------------------------------------------


@pytest.mark.timeout(30)
def test_reaper_requeues_expired_leases_then_dead_letters(
    app: App, rclient: redis.Redis, prefix: str
) -> None:
    """A job that began and lost its lease is requeued without counting the attempt; after
    losing its worker `max_lost` times it is dead-lettered as WorkerLost (more cases, with
    releases of jobs that never started: tests/test_delivery.py)."""
    store = app.store
    lease = 1_000
    job = app.submit("echo", [1], retries=1)
    t = store.server_time_ms()

    (c1,) = store.claim("w1", ["default"], 1, lease, now=t, start=1)
    assert (c1.id, c1.attempt) == (job.id, 1)
    assert tick(store, now=t + lease - 1).requeued == 0  # lease still valid
    assert app.job(job.id).status() == JobState.RUNNING

    report = tick(store, now=t + lease + 1, max_lost=2)
    assert (report.requeued, report.dead_lettered) == (1, 0)
    rec = app.job(job.id).info()
    assert (rec.state, rec.attempt) == (JobState.QUEUED, 0)
    assert ("queued", "lease expired: worker w1 lost (1 of 2); retried alone") in events(
        rclient, prefix, job.id
    )
    assert rclient.zscore(Keys(prefix).leases, job.id) is None

    t2 = t + 10 * lease
    (c2,) = store.claim("w2", ["default"], 1, lease, now=t2, start=1)
    assert (c2.attempt, c2.lost) == (1, 1)  # a suspect: not marked begun by the claim
    assert int(c2.token) > int(c1.token)
    # Fencing: the first attempt's late outcome is refused.
    assert store.report([Outcome(c1, ok=True, result=b"[1]")], now=t2 + 1) == {job.id: -2}
    store.heartbeat([], lease, now=t2 + 1, began=[(c2.id, c2.token)])  # the worker marks it

    assert tick(store, now=t2 + lease - 1) == tick(store, now=t2)  # nothing to do yet
    report = tick(store, now=t2 + lease + 2, max_lost=2)
    assert (report.requeued, report.dead_lettered) == (0, 1)
    rec = app.job(job.id).info()
    assert (rec.state, rec.attempt) == (JobState.FAILED, 1)
    assert rec.error is not None and rec.error["type"] == "WorkerLost"
    assert "w2" in rec.error["message"] and "2 time(s)" in rec.error["message"]
    assert app.dead_letters() == [job.id]
    assert_one_outcome(rclient, prefix, job.id, "failed")
    # A dead job is not reaped again, and its stale claim cannot complete it.
    assert tick(store, now=t2 + 100 * lease).dead_lettered == 0
    assert store.report([Outcome(c2, ok=True, result=b"[1]")], now=t2 + 2) == {job.id: -2}
