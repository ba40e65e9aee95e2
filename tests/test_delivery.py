"""Delivery when workers are lost: a lost worker is not a failed attempt.

Deterministic half (leases written and the reaper stepped with an explicit `now`): jobs claimed
ahead that never began are released uncounted; jobs that began count toward `max_lost`, become
suspects that run alone, and only one that keeps losing its worker is dead-lettered
(`WorkerLost`); reaped and requeued jobs go back to the front of their priority; the reaper
holds off for a lease after an outage or a server restart.

Real half (`jobq worker` subprocesses, real signals, a real server stall): SIGKILL with default
options loses and fails nothing; a poison pill in the thread pool is dead-lettered while its
co-victims succeed; workers fence attempts whose lease is gone; a SIGTERM to a process-pool
worker's whole process group fails nothing; a server stalled past the lease records nothing as
expired that finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from conftest import ValkeyProcess, jobq_cmd, subprocess_env
from crash_tasks import runs_key
from procs import JobqProcess, kill_all, wait_until

from jobq import App, JobState
from jobq.keys import Keys
from jobq.maintenance import Maintainer, tick
from jobq.model import JobSpec, Outcome
from jobq.states import TERMINAL
from jobq.store import Store

T = 1_000_000_000  # a fake clock, in ms
LEASE = 10_000
EMPTY = b"[[],{}]"


@pytest.fixture
def store(app: App) -> Store:
    return app.store


def submit(store: Store, *ids: str, priority: int = 0, max_attempts: int = 1) -> None:
    specs = [JobSpec(i, "t", "default", EMPTY, priority, max_attempts) for i in ids]
    store.submit(specs, now=T)


def field(store: Store, job_id: str, name: str) -> str | None:
    v = store.r.hget(store.keys.job(job_id), name)
    return v.decode() if v is not None else None


def infos(store: Store, job_id: str) -> list[str]:
    """The `info` of every event of one job, oldest first."""
    out = []
    for _id, f in store.r.xrange(store.keys.events):
        if f[b"job"].decode() == job_id:
            out.append(f.get(b"info", b"").decode())
    return out


def queue_order(store: Store) -> list[str]:
    return [m.decode() for m in store.r.zrange(store.keys.queue("default"), 0, -1)]


# -- released, lost, suspects, dead-lettered ---------------------------------------------------


def test_jobs_that_never_began_are_released_uncounted_and_began_ones_count_as_lost(
    store: Store,
) -> None:
    submit(store, "run", "marked", "ahead", max_attempts=1)
    # "run" goes into an idle slot (marked by the claim); "marked" is prefetched and then
    # starts (the worker's heartbeat marks it); "ahead" never starts.
    cs = {c.id: c for c in store.claim("w1", ["default"], 3, LEASE, now=T, start=1)}
    assert field(store, "run", "began") == cs["run"].token
    assert field(store, "marked", "began") is None
    assert store.heartbeat([], LEASE, now=T + 1, began=[("marked", cs["marked"].token)]) == (
        set(),
        set(),
    )
    assert field(store, "marked", "began") == cs["marked"].token

    assert tick(store, now=T + LEASE + 1).requeued == 3  # the worker died: nothing fails
    for job_id in ("run", "marked", "ahead"):
        assert field(store, job_id, "state") == "queued"
        assert field(store, job_id, "att") == "0"  # no attempt counted, retries=0 or not
    assert (field(store, "run", "lost"), field(store, "marked", "lost")) == ("1", "1")
    assert field(store, "ahead", "lost") is None and field(store, "ahead", "rel") == "1"
    assert infos(store, "ahead")[-1] == "released: never started on lost worker w1"
    assert infos(store, "run")[-1] == "lease expired: worker w1 lost (1 of 3); retried alone"
    assert store.dead_letters() == []
    (q,) = store.queues()
    assert (q.queued, q.running, q.failed, q.retried) == (3, 0, 0, 2)


def test_only_the_job_that_keeps_killing_its_worker_is_dead_lettered(store: Store) -> None:
    """Three jobs lose their worker together; each is then run alone (the claim gives suspects
    no begin mark, the worker marks them itself). The two innocent ones succeed; the poison
    pill loses its worker alone twice more and is dead-lettered, saying so."""
    submit(store, "pill", "x", "y")
    store.claim("w1", ["default"], 3, LEASE, now=T, start=3)
    now = T + LEASE + 1
    assert tick(store, now=now).requeued == 3
    for round_ in (2, 3):
        got = store.claim(f"w{round_}", ["default"], 3, LEASE, now=now, start=3)
        assert [c.lost for c in got] == [round_ - 1] + [1] * (len(got) - 1)
        assert all(field(store, c.id, "began") is None for c in got)  # suspects: not marked
        by_id = {c.id: c for c in got}
        pill = by_id.pop("pill")
        # The worker runs the innocent ones alone, one after the other, and they succeed ...
        for c in by_id.values():
            store.heartbeat([], LEASE, now=now + 1, began=[(c.id, c.token)])
            assert store.report([Outcome(c, ok=True, result=b"1")], now=now + 2) == {c.id: 1}
        # ... and the pill, alone, kills this worker too.
        store.heartbeat([], LEASE, now=now + 3, began=[(pill.id, pill.token)])
        now += 2 * LEASE
        report = tick(store, now=now)
        assert (report.requeued, report.dead_lettered) == ((1, 0) if round_ == 2 else (0, 1))
    assert (field(store, "x", "state"), field(store, "y", "state")) == ("succeeded", "succeeded")
    assert field(store, "pill", "state") == "failed" and store.dead_letters() == ["pill"]
    err = orjson.loads(field(store, "pill", "error") or "")
    assert err["type"] == "WorkerLost"
    assert "3 time(s)" in err["message"] and "w3" in err["message"]
    assert "poison pill" in err["message"] and "JOBQ_MAX_LOST" in err["message"]
    # A re-run starts afresh: no longer a suspect.
    assert store.scripts.rerun(store.r, "pill", now=now) == 1
    (again,) = store.claim("w4", ["default"], 1, LEASE, now=now, start=1)
    assert (again.id, again.lost, again.attempt) == ("pill", 0, 1)


def test_max_lost_is_a_setting_apart_from_retries(store: Store) -> None:
    submit(store, "once", max_attempts=5)
    store.claim("w1", ["default"], 1, LEASE, now=T, start=1)
    report = tick(store, now=T + LEASE + 1, max_lost=1)
    assert report.dead_lettered == 1  # max_lost=1: the first loss ends it, retries or not
    assert orjson.loads(field(store, "once", "error") or "")["type"] == "WorkerLost"


def test_a_job_released_again_and_again_counts_as_lost_in_the_end(store: Store) -> None:
    """Safety net: a begin mark lost in flight (a job that kills its worker the instant it
    starts from prefetch) must not make the job loop forever uncounted."""
    submit(store, "sly")
    now = T
    for _ in range(5):
        store.claim("w", ["default"], 1, LEASE, now=now)  # never marked
        now += LEASE + 1
        tick(store, now=now)
        assert field(store, "sly", "lost") is None
    store.claim("w", ["default"], 1, LEASE, now=now)
    tick(store, now=now + LEASE + 1)
    assert field(store, "sly", "lost") == "1"


def test_a_suspect_is_claimed_without_a_begin_mark_and_stops_marking_after_it(
    store: Store,
) -> None:
    submit(store, "s", "a", "b")
    store.claim("w1", ["default"], 1, LEASE, now=T, start=1)  # takes "s"
    tick(store, now=T + LEASE + 1)  # "s" is a suspect, first in line
    got = store.claim("w2", ["default"], 3, LEASE, now=T + LEASE + 2, start=3)
    assert [(c.id, c.lost) for c in got] == [("s", 1), ("a", 0), ("b", 0)]
    assert [field(store, c.id, "began") for c in got] == [None, None, None]


# -- the front of the queue --------------------------------------------------------------------


def test_reaped_and_requeued_jobs_go_to_the_front_of_their_priority_in_order(
    store: Store,
) -> None:
    submit(store, "a", "b", "c", "d")
    got = store.claim("w1", ["default"], 2, LEASE, now=T)  # a, b
    submit(store, "hi", priority=5)
    submit(store, "lo", priority=-1)
    tick(store, now=T + LEASE + 1)
    assert queue_order(store) == ["hi", "a", "b", "c", "d", "lo"]
    got = store.claim("w2", ["default"], 4, LEASE, now=T + LEASE + 2)  # hi, a, b, c
    assert [c.id for c in got] == ["hi", "a", "b", "c"]
    store.requeue([(c.id, c.token) for c in got[1:]], now=T + LEASE + 3)
    assert queue_order(store) == ["a", "b", "c", "d", "lo"]


# -- heartbeats: begin marks and lost leases ---------------------------------------------------


def test_heartbeat_marks_only_jobs_it_still_owns(store: Store) -> None:
    submit(store, "mine", "gone")
    cs = {c.id: c for c in store.claim("w1", ["default"], 2, LEASE, now=T)}
    store.r.zadd(store.keys.leases, {"gone": T})
    tick(store, now=T + 1)  # "gone" was reaped (released: it never began)
    marks = [("mine", cs["mine"].token), ("gone", cs["gone"].token)]
    lost, _ = store.heartbeat([], LEASE, now=T + 2, began=marks)
    assert lost == {"gone"}
    assert field(store, "mine", "began") == cs["mine"].token
    assert field(store, "gone", "began") is None and field(store, "gone", "state") == "queued"


# -- the reaper's grace after an outage --------------------------------------------------------


def test_reaper_waits_one_lease_after_a_server_restart(prefix: str) -> None:
    server = ValkeyProcess(appendonly=True)
    server.start()
    try:
        with App(server.url, prefix=prefix) as app:
            store = app.store
            m = Maintainer(store, tick_ms=100, leader_ms=60_000, is_master=True, lease_ms=LEASE)
            t = store.server_time_ms()
            assert m.step(now=t) is not None  # notes the server's run id
            store.submit([JobSpec("j", "t", "default", EMPTY)], now=t)
            store.claim("w1", ["default"], 1, LEASE, now=t, start=1)
            server.stop(kill=True)
            server.start()  # a new run of the server (AOF kept the lease)
            t2 = t + LEASE + 1  # the lease looks expired ...
            report = m.step(now=t2)
            assert report is not None and report.requeued == 0  # ... but workers get a lease
            assert field(store, "j", "state") == "running"
            assert m.step(now=t2 + LEASE - 1) == report
            report = m.step(now=t2 + LEASE)
            assert report is not None and report.requeued == 1  # grace over: reaped
    finally:
        server.cleanup()


def test_reaper_grants_the_grace_after_a_stall(store: Store) -> None:
    m = Maintainer(store, tick_ms=100, leader_ms=60_000, is_master=True, lease_ms=2_000)
    submit(store, "j")
    assert m.step() is not None
    # A lease that ended a second ago (a 1 ms lease from now could still be running when a
    # fast machine reaches the reaper within the same millisecond).
    store.claim("w1", ["default"], 1, 1, now=store.server_time_ms() - 1_000, start=1)
    m.last_ok -= 10  # as if the last contact with the server was 10 s ago (an outage)
    report = m.step()
    assert report is not None and report.requeued == 0
    assert field(store, "j", "state") == "running"
    m.reap_after = 1  # the grace is over
    report = m.step()
    assert report is not None and report.requeued == 1


# -- real workers: SIGKILL, poison pills, fencing, group SIGTERM, a stalled server --------------

SHORT = {
    "JOBQ_LEASE_MS": "2000",
    "JOBQ_HEARTBEAT_MS": "250",
    "JOBQ_TICK_MS": "100",
    "JOBQ_LEADER_MS": "1000",
}


class Workers:
    """`jobq worker crash_tasks:app` subprocesses (optionally each in a session of its own, so
    a test can signal its whole process group); whatever is left is killed at teardown."""

    def __init__(self, tmp_path: Path, url: str, prefix: str) -> None:
        self.tmp_path, self.url, self.prefix = tmp_path, url, prefix
        self.started: list[JobqProcess] = []

    def start(
        self, *args: str, url: str | None = None, session: bool = False, ready: bool = True
    ) -> JobqProcess:
        name = f"worker-{len(self.started)}"
        log_path = self.tmp_path / f"{name}.log"
        env = subprocess_env(url or self.url, self.prefix, **SHORT)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                jobq_cmd("worker", "crash_tasks:app", *args),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=session,
            )
        w = JobqProcess(name, proc, log_path)
        self.started.append(w)
        if ready:
            w.wait_log(" serving ", timeout=60)
        return w

    def close(self) -> None:
        kill_all(self.started)


@pytest.fixture
def workers(tmp_path: Path, url: str, prefix: str) -> Iterator[Workers]:
    ws = Workers(tmp_path, url, prefix)
    yield ws
    ws.close()


def runs(r: redis.Redis, prefix: str, tag: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.lrange(runs_key(prefix, tag), 0, -1)]


def starts(r: redis.Redis, prefix: str, tag: str) -> list[dict[str, Any]]:
    return [e for e in runs(r, prefix, tag) if e["step"] == "start"]


def all_terminal(app: App, ids: list[str]) -> bool:
    return all(s in TERMINAL for s in app.store.get_states(ids))


@pytest.mark.timeout(90)
def test_sigkill_with_default_options_fails_no_job(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    """retries=0 (the default): the jobs the killed worker ran, and the ones it had claimed
    ahead, all run again elsewhere and succeed; none fails LeaseExpired."""
    victim = workers.start("-c", "2", "--prefetch", "4")
    jobs = app.submit_many("record_and_sleep", [(("k", 1.0), {}) for _ in range(12)])
    wait_until(lambda: len(starts(rclient, prefix, "k")) >= 2, 30, "two jobs to start")
    victim.signal(signal.SIGKILL)
    assert victim.wait_exit(10) == -signal.SIGKILL
    workers.start("-c", "4")
    ids = [j.id for j in jobs]
    wait_until(lambda: all_terminal(app, ids), 60, "every job to finish")
    recs = [app.store.get_job(i) for i in ids]
    assert [(r.state, r.attempt) for r in recs if r] == [(JobState.SUCCEEDED, 1)] * 12
    infos_ = [i for j in ids for i in infos(app.store, j)]
    assert any(i.startswith("released: never started") for i in infos_)  # claimed ahead
    assert any(i.startswith("lease expired: worker") for i in infos_)  # were running
    assert app.dead_letters() == []


@pytest.mark.timeout(120)
def test_poison_pill_in_the_thread_pool_is_dead_lettered_and_its_co_victims_succeed(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    healthy = app.submit_many("record_and_sleep", [(("h", 0.5), {}) for _ in range(3)])
    pill = app.submit("kill_own_process", ["pill", 1_000])
    healthy += app.submit_many("record_and_sleep", [(("h", 0.5), {}) for _ in range(7)])
    args = ("-c", "4", "--prefetch", "4")
    w = workers.start(*args, ready=False)
    deaths = 0
    ids = [j.id for j in healthy] + [pill.id]
    deadline = time.monotonic() + 100
    while not all_terminal(app, ids):  # a supervisor: restart the worker each time it dies
        assert time.monotonic() < deadline, "jobs still not finished"
        if not w.alive():
            assert w.proc.returncode == -signal.SIGKILL
            deaths += 1
            w = workers.start(*args, ready=False)
        time.sleep(0.05)
    for j in healthy:
        rec = app.store.get_job(j.id)
        assert rec is not None and rec.state == JobState.SUCCEEDED, rec
    rec = app.store.get_job(pill.id)
    assert rec is not None and rec.state == JobState.FAILED
    assert rec.error is not None and rec.error["type"] == "WorkerLost"
    assert deaths == 3 == len(starts(rclient, prefix, "pill"))
    assert app.dead_letters() == [pill.id]
    # After its first crash the pill ran alone: nothing else started while it ran.
    order = runs(rclient, prefix, "h") + runs(rclient, prefix, "pill")
    assert len([e for e in order if e["step"] == "start" and e["job"] != pill.id]) >= 10


@pytest.mark.timeout(60)
def test_process_pool_worker_stops_an_attempt_whose_lease_is_gone(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "1", "--pool", "process")
    job = app.submit("record_and_sleep", ["fence", [60, 0.2]])
    (first,) = wait_until(lambda: starts(rclient, prefix, "fence"), 30, "the job to start")
    rclient.zadd(Keys(prefix).leases, {job.id: 0})  # its lease runs out (as in a partition)
    assert tick(app.store).requeued == 1
    w.wait_log(f"lost the lease of job {job.id} (reaped or taken over): stopped it", timeout=30)
    rec = app.store.wait(job.id, 30)
    assert rec is not None and rec.state == JobState.SUCCEEDED
    assert [e["run"] for e in starts(rclient, prefix, "fence")] == [1, 2]
    assert [e["run"] for e in runs(rclient, prefix, "fence") if e["step"] == "end"] == [2]
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)  # the fenced attempt's child is gone
    assert w.alive()


@pytest.mark.timeout(60)
def test_thread_pool_worker_never_starts_a_prefetched_job_whose_lease_is_gone(
    app: App, rclient: redis.Redis, prefix: str, workers: Workers
) -> None:
    w = workers.start("-c", "1", "--prefetch", "1")
    running = app.submit("record_and_sleep", ["busy", 2])
    wait_until(lambda: starts(rclient, prefix, "busy"), 30, "the first job to start")
    ahead = app.submit("record_and_sleep", ["ahead", 0])
    wait_until(lambda: app.job(ahead.id).status() == JobState.RUNNING, 30, "the prefetch")
    old_token = app.store.get_job(ahead.id).token  # type: ignore[union-attr]
    rclient.zadd(Keys(prefix).leases, {ahead.id: 0})
    assert tick(app.store).requeued == 1  # released: it never began
    w.wait_log(f"lost the lease of job {ahead.id} before it started", timeout=30)
    rec = app.store.wait(ahead.id, 30)
    assert rec is not None and rec.state == JobState.SUCCEEDED and rec.attempt == 1
    (only,) = starts(rclient, prefix, "ahead")  # the stale claim never ran
    assert int(only["token"]) == rec.token != old_token
    assert app.job(running.id).result(timeout=30)["run"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("seconds", "grace", "final"), [(60, "1", "queued"), (1, "30", "done")])
def test_group_sigterm_to_a_process_pool_worker_fails_no_job(
    app: App,
    rclient: redis.Redis,
    prefix: str,
    workers: Workers,
    seconds: float,
    grace: str,
    final: str,
) -> None:
    """systemd's default KillMode sends SIGTERM to the whole group: the children ignore it, the
    parent finishes running attempts within --grace or requeues them, never fails them."""
    w = workers.start("-c", "2", "--pool", "process", "--grace", grace, session=True)
    jobs = [app.submit("record_and_sleep", ["grp", seconds], retries=2) for _ in range(2)]
    wait_until(lambda: len(starts(rclient, prefix, "grp")) == 2, 30, "both jobs to start")
    os.killpg(w.pid, signal.SIGTERM)
    assert w.wait_exit(30) == 0
    for j in jobs:
        rec = app.store.get_job(j.id)
        assert rec is not None
        if final == "queued":
            assert (rec.state, rec.attempt) == (JobState.QUEUED, 0)
            assert infos(app.store, j.id)[-1] == "requeued at shutdown"
        else:
            assert rec.state == JobState.SUCCEEDED
        states = [
            f[b"state"]
            for _i, f in rclient.xrange(Keys(prefix).events)
            if f[b"job"].decode() == j.id
        ]
        assert b"failed" not in states and b"scheduled" not in states
    assert "exit code" not in w.log()
    for e in starts(rclient, prefix, "grp"):
        with pytest.raises(ProcessLookupError):
            os.kill(e["pid"], 0)  # no child outlives the worker


@pytest.mark.timeout(90)
def test_server_stalled_past_the_lease_records_no_finished_job_as_expired(
    prefix: str, workers: Workers, tmp_path: Path
) -> None:
    """The server stops answering (SIGSTOP) for twice the lease while a job runs and finishes.
    The worker notices within a lease and says so; after the stall the reaper waits a lease,
    the heartbeat keeps the job, and the outcome is recorded: one run, succeeded."""
    server = ValkeyProcess()
    server.start()
    try:
        w = workers.start("-c", "1", url=server.url)
        with App(server.url, prefix=prefix) as app, redis.Redis.from_url(server.url) as r:
            job = app.submit("record_and_sleep", ["stall", 1.0])
            wait_until(lambda: starts(r, prefix, "stall"), 30, "the job to start")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                w.wait_log("heartbeat failed", timeout=2.0)  # within the 2 s lease
                w.wait_log("longer than the lease", timeout=10)
                time.sleep(1.0)
            finally:
                server.proc.send_signal(signal.SIGCONT)
            rec = app.store.wait(job.id, 30)
            assert rec is not None and rec.state == JobState.SUCCEEDED
            assert [e["run"] for e in starts(r, prefix, "stall")] == [1]
            assert not any(i.startswith("lease expired") for i in infos(app.store, job.id))
            w.wait_log("heartbeats answer again", timeout=10)
    finally:
        server.cleanup()
