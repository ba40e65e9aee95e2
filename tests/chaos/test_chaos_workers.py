"""Chaos scenarios that hit workers: SIGKILL storms, a SIGSTOP zombie, poison pills in each pool,
rolling SIGTERM (a process group included).

Each scenario is bounded in jobs and time and ends by itself; the checker (harness.check) then
asserts harness.py's criteria and the scenario leaves its row in docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from chaos.harness import (
    LEASE_S,
    check,
    children,
    now,
    started_on,
    submit_batch,
    submit_work,
    wait_for,
)
from chaos.scenario import Scenario
from jobq import App, JobState

pytestmark = pytest.mark.timeout(240)


def sigkill_storm(sc: Scenario, **options: object) -> None:
    sc.faults = "5 worker SIGKILLs, 1 s apart, each replaced"
    ws = [sc.workers.start("-c", "4") for _ in range(3)]
    with App(sc.url, prefix=sc.prefix) as app:
        submit_work(app, sc.rec, 800, 0.1, **options)
        rng = random.Random(9)
        for _ in range(5):
            wait_for(lambda: any(started_on(sc.rec, w.pid) for w in ws), 10)
            busy = [w for w in ws if w.alive() and started_on(sc.rec, w.pid)] or ws
            victim = rng.choice(busy)
            t = now()
            victim.proc.kill()
            victim.proc.wait(10)
            sc.rec.fault("SIGKILL worker", t, now(), [victim.pid])
            ws[ws.index(victim)] = sc.workers.start("-c", "4")
            time.sleep(1)
        sc.verdict = v = check(app, sc.rec)
    v.assert_ok()


@pytest.mark.chaos_ci
def test_sigkill_storm_default_options(scenario: Scenario) -> None:
    """A killed worker is not a failed attempt: with retries=0 every job still succeeds."""
    sigkill_storm(scenario)


@pytest.mark.chaos_ci
def test_sigkill_storm_with_retries(scenario: Scenario) -> None:
    sigkill_storm(scenario, retries=3)


@pytest.mark.chaos
def test_sigstop_zombie_worker(scenario: Scenario) -> None:
    """A worker frozen past its lease wakes up: its late results are refused, it starts none of
    the jobs it had claimed ahead, and every job has one committed outcome."""
    sc = scenario
    sc.faults = f"SIGSTOP one of 2 workers for {3 * LEASE_S:g} s (3 leases), then SIGCONT"
    ws = [sc.workers.start("-c", "2") for _ in range(2)]
    with App(sc.url, prefix=sc.prefix) as app:
        submit_work(app, sc.rec, 200, 0.2, retries=2)
        assert wait_for(lambda: started_on(sc.rec, ws[0].pid), 30), "worker 0 never started a job"
        t = now()
        ws[0].signal(signal.SIGSTOP)
        time.sleep(3 * LEASE_S)
        ws[0].signal(signal.SIGCONT)
        sc.rec.fault("SIGSTOP worker", t, now(), [ws[0].pid])
        sc.verdict = v = check(app, sc.rec)
    v.assert_ok()
    assert all(w.alive() for w in ws)


def poison_pill(sc: Scenario, pool: str, poison: str, work: str) -> None:
    sc.faults = f"1 poison pill (kills its process) among 60 jobs, {pool} pool, supervisor restarts"
    args = ("-c", "3", "--pool", pool)
    w = sc.workers.start(*args)
    deaths, bound = 0, 12
    with App(sc.url, prefix=sc.prefix) as app:
        (pill,) = submit_batch(app, sc.rec, poison, [[0.3]])
        healthy = submit_work(app, sc.rec, 60, 0.3, task=work)
        deadline = now() + 120
        while now() < deadline and deaths <= bound:
            states = app.store.get_states([pill, *healthy])
            if all(s in (JobState.SUCCEEDED, JobState.FAILED) for s in states):
                break
            if not w.alive():
                deaths += 1
                w = sc.workers.start(*args)
            time.sleep(0.1)
        for s in sc.rec.entries():  # each pill execution killed the process it ran in
            if s["k"] == "start" and s["job"] == pill:
                sc.rec.fault(f"poison pill kills pid {s['pid']}", s["t"], s["t"] + 1.0, [s["pid"]])
        sc.verdict = v = check(app, sc.rec, should_fail=[pill])
        v.notes.insert(0, f"worker restarts: {deaths}")
        rec = app.store.get_job(pill)
        assert rec is not None and rec.state == JobState.FAILED, f"poison pill ended {rec}"
        assert pill in app.dead_letters(), "the poison pill is not dead-lettered"
    v.assert_ok()
    assert deaths <= bound, f"the pill took its worker down {deaths} times (bound {bound})"


@pytest.mark.parametrize(
    "pool",
    [
        pytest.param("thread", marks=pytest.mark.chaos),
        pytest.param("process", marks=pytest.mark.chaos_ci),
        pytest.param("async", marks=pytest.mark.chaos),
    ],
)
def test_poison_pill(scenario: Scenario, pool: str) -> None:
    """Only the job that kills its worker ends dead-lettered; its neighbours all succeed."""
    if pool == "async":
        poison_pill(scenario, pool, "apoison", "awork")
    else:
        poison_pill(scenario, pool, "poison", "work")


@pytest.mark.chaos_ci
def test_rolling_sigterm(scenario: Scenario) -> None:
    """Every worker SIGTERMed in turn and replaced, the process-pool one through its process
    group (systemd's KillMode): running jobs finish within the grace, nothing is failed."""
    sc = scenario
    sc.faults = "SIGTERM 2 thread workers in turn, then SIGTERM a process-pool worker's group"
    thread_args = ("-c", "3", "--grace", "15")
    proc_args = ("-c", "2", "--pool", "process", "--grace", "15")
    ws = [sc.workers.start(*thread_args) for _ in range(2)]
    pw = sc.workers.start(*proc_args, new_session=True)
    with App(sc.url, prefix=sc.prefix) as app:
        submit_work(app, sc.rec, 300, 0.3)
        for i, w in enumerate(ws):
            wait_for(lambda w=w: started_on(sc.rec, w.pid), 30)  # type: ignore[misc]
            t = now()
            w.signal(signal.SIGTERM)
            code = w.wait_exit(60)
            sc.rec.fault("SIGTERM worker", t, now(), [w.pid])
            assert code == 0, f"worker exited {code} on SIGTERM"
            ws[i] = sc.workers.start(*thread_args)
        assert wait_for(lambda: started_on(sc.rec, pw.pid), 30), "process pool never ran a job"
        kids = children(pw.pid)
        t = now()
        os.killpg(os.getpgid(pw.pid), signal.SIGTERM)
        code = pw.wait_exit(60)
        sc.rec.fault("SIGTERM process group", t, now(), [pw.pid, *kids])
        sc.workers.start(*proc_args, new_session=True)
        sc.verdict = v = check(app, sc.rec)
    v.assert_ok()
    assert code == 0, f"process-pool worker exited {code} on a group SIGTERM"
