"""Scheduling against a real Valkey with several `jobq worker` subprocesses.

Covered (each with several worker processes, apart from the tests that step a fake clock):
- dependencies: a diamond DAG whose fan-in gets both results in order; chain, chord, group, a
  job depending on a group; submit-time errors (unknown parent, itself, a cycle, a parent that
  already failed or was cancelled); a failing or cancelled parent failing its descendants;
- periodic jobs: exactly once per tick with two `jobq master` processes (and a leader killed
  mid-run), two masters firing the same due tick (stepped clock), missed-tick policies, cron
  stepped through time, a periodic job keeping its task's retries, `jobq periodic add/list/remove`;
- a rate limit measured under 4 worker processes (and, stepped, a job whose start slot came going
  before the backlog), a concurrency key checked by the tasks under 4 worker processes x 2 slots;
- targeted jobs (a named worker, a group, a worker that starts later, a gone worker with and
  without fallback); unique keys; cancel of queued, scheduled and running jobs (cooperative, and
  hard-stopped on the process and async pools); progress in the record and `jobq status`;
- batches and bulk: `Task.map`, `jobq submit --batch --wait`, `jobq wait`, `jobq purge`;
- `examples/analysis.py` end to end.

Workers run `sched_tasks:app` (tests/sched_tasks.py). Tasks record what they saw in Redis lists
(worker label, server time), which is what the tests read. Tests that only need "some workers"
share one module-wide fleet (its own prefix, a fresh tag per test); tests that need their own
settings start their own workers. Waits are blocking reads or bounded polls with generous
timeouts, never fixed sleeps.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import procs
import pytest
import redis
from conftest import (
    PARTITIONED,
    ROOT,
    jobq_cmd,
    on_every_layout,
    subprocess_env,
)
from procs import JobqProcess, kill_all
from sched_tasks import RATE_LIMIT, fact_key, make_app
from shard_keys import (
    all_events,
    hash_total,
    ids_in_partition,
    job_events,
    job_exists,
    job_shard,
    key_shard,
    total,
)

from jobq import App, JobCancelled, JobFailed, JobNotFound, JobState
from jobq.canvas import chain, chord, group
from jobq.errors import DependencyCycle, JobqError
from jobq.maintenance import Maintainer, fire_periodic
from jobq.model import JobRecord, JobSpec
from jobq.periodic import PeriodicSpec
from jobq.states import TERMINAL

# Every test runs on each layout (conftest `on_every_layout`): one partition, and several.
pytestmark = [pytest.mark.timeout(120), on_every_layout]

T = TypeVar("T")
WAIT = 60.0  # seconds: generous, the machine may be loaded by other suites


# -- helpers ---------------------------------------------------------------------------------------


def wait_until(check: Callable[[], T], timeout: float = WAIT, what: str = "a condition") -> T:
    return procs.wait_until(check, timeout, what)


def new_tag() -> str:
    return uuid.uuid4().hex[:8]


def facts(r: redis.Redis, prefix: str, tag: str, step: str | None = None) -> list[dict[str, Any]]:
    """What tasks called with `tag` recorded, oldest first (only `step` entries if given)."""
    out = [json.loads(x) for x in r.lrange(fact_key(prefix, tag), 0, -1)]
    return [e for e in out if step is None or e["step"] == step]


def open_gate(r: redis.Redis, prefix: str, tag: str, n: int = 1) -> None:
    """Let `n` jobs of `tag` waiting in `wait_gate` go on."""
    r.rpush(fact_key(prefix, tag) + ":gate", *(["1"] * n))


def terminal(app: App, job_id: str, timeout: float = WAIT) -> JobRecord:
    """Block (no polling) until the job is terminal; return its full record."""
    waited = app.store.wait(job_id, timeout)
    assert waited is not None, f"job {job_id} vanished"
    assert waited.state in TERMINAL, f"job {job_id} still {waited.state} after {timeout:g}s"
    rec = app.store.get_job(job_id)  # (what `wait` returns may carry only the outcome)
    assert rec is not None, f"job {job_id} vanished"
    return rec


def failure_of(app: App, job_id: str) -> JobFailed:
    """The JobFailed a job's result raises (fails the test if it does not fail)."""
    with pytest.raises(JobFailed) as info:
        app.job(job_id).result(timeout=WAIT)
    return info.value


Proc = JobqProcess


class Cluster:
    """Starts `jobq worker sched_tasks:app` / `jobq master` subprocesses on one prefix, and runs
    CLI commands; kills whatever is left at teardown and prints the logs."""

    def __init__(self, tmp: Path, url: str, prefix: str) -> None:
        self.tmp, self.url, self.prefix = tmp, url, prefix
        self.procs: list[Proc] = []

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None) -> Proc:
        log_path = self.tmp / f"{name}-{len(self.procs)}.log"
        env_ = subprocess_env(self.url, self.prefix, **(env or {}))
        p = Proc.spawn(name, argv, log_path, env_, cwd=ROOT, wait_s=WAIT)
        self.procs.append(p)
        return p

    def worker(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A worker called `name` (its tasks record that label); call `ready()` before use."""
        argv = jobq_cmd("worker", "sched_tasks:app", "--name", name, *args)
        return self._spawn(name, argv, {"SCHED_WORKER": name, **(env or {})})

    def master(self, name: str, env: dict[str, str] | None = None) -> Proc:
        return self._spawn(name, jobq_cmd("master", "--no-http"), env)

    def ready(self, *procs: Proc) -> None:
        """Wait until every given process (default: all) serves."""
        for p in procs or tuple(self.procs):
            p.wait_log(" serving " if not p.name.startswith("master") else "master ")

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = WAIT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            jobq_cmd(*args),
            env=subprocess_env(self.url, self.prefix),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def close(self) -> None:
        kill_all(self.procs, tail=3000)


@pytest.fixture
def cluster(tmp_path: Path, url: str, prefix: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, url, prefix)
    yield c
    c.close()


@pytest.fixture
def sapp(url: str, prefix: str) -> Iterator[App]:
    """An App of this test's prefix with the tasks of sched_tasks registered."""
    a = make_app(url, prefix)
    yield a
    a.close()


@dataclass
class Fleet:
    """Three workers (thread pool x4) shared by the tests that need nothing special."""

    app: App
    r: redis.Redis
    prefix: str
    cluster: Cluster

    def task(self, name: str) -> Any:
        return self.app.tasks[name]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, deployment_url: str) -> Iterator[Fleet]:
    prefix = "fleet" + uuid.uuid4().hex[:8]
    c = Cluster(tmp_path_factory.mktemp("fleet"), deployment_url, prefix)
    for i in (1, 2, 3):
        c.worker(f"fleet-{i}", "-c", "4")
    c.ready()
    app = make_app(deployment_url, prefix)
    # The control partition's client: the tasks' facts live there (sched_tasks.fact_key).
    yield Fleet(app, app.store.r, prefix, c)
    app.close()
    c.close()


# -- dependencies and workflows --------------------------------------------------------------------


def test_diamond_dag_fan_in_gets_both_results_in_order(fleet: Fleet) -> None:
    app, echo, append = fleet.app, fleet.task("echo"), fleet.task("append")
    collect = fleet.task("collect")
    a = echo.submit(["a"])
    # b is slow and c fast: the fan-in must still list b's result first (dependency order).
    b = append.submit("b", 1.0, depends_on=a, pass_results=True)
    c = append.submit("c", depends_on=a, pass_results=True)
    d = collect.submit(depends_on=[b, c], pass_results=True)
    assert d.status() in (JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING)
    assert d.result(timeout=WAIT) == [["a", "b"], ["a", "c"]]
    assert b.result(timeout=1) == ["a", "b"] and c.result(timeout=1) == ["a", "c"]
    rb, rc, rd = b.info(), c.info(), d.info()
    assert rc.finished_ms is not None and rb.finished_ms is not None
    assert rc.finished_ms <= rb.finished_ms  # c finished first, yet comes second
    assert rd.parents == (b.id, c.id)
    assert rd.started_ms is not None and rd.started_ms >= rb.finished_ms
    # d was released by the completion script, not a poll: its event says so.
    infos = [f.get(b"info", b"").decode() for f in job_events(app, d.id)]
    assert "dependencies met" in infos


def test_chain_passes_each_result_to_the_next(fleet: Fleet) -> None:
    append = fleet.task("append")
    last = chain(append.s(None, "x"), append.s("y", 0.1), append.s("z")).submit()
    assert last.result(timeout=WAIT) == ["x", "y", "z"]
    (mid,) = last.info().parents
    assert fleet.app.job(mid).result(timeout=1) == ["x", "y"]


def test_chord_body_gets_every_result_in_order(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    echo, collect, total = fleet.task("echo"), fleet.task("collect"), fleet.task("total")
    # Earlier members sleep longer, so they finish last.
    body = chord([echo.s(i, (8 - i) * 0.05) for i in range(8)], collect.s()).submit()
    assert body.result(timeout=WAIT) == list(range(8))
    assert chord(group([echo.s(i) for i in range(10)]), total.s()).submit().result(WAIT) == 45
    # One member failing fails the body, naming that member.
    bad = fleet.task("boom").s("member broke")
    header = [echo.s(1), bad, echo.s(3)]
    failed_body = chord(header, collect.s()).submit()
    exc = failure_of(fleet.app, failed_body.id)
    assert exc.exc_type == "DependencyFailed"
    (_, bad_id, _) = failed_body.info().parents
    assert bad_id in exc.message


def test_group_and_a_job_depending_on_a_group(fleet: Fleet, request: pytest.FixtureRequest) -> None:
    echo, total = fleet.task("echo"), fleet.task("total")
    submitted = group(*[echo.s(i, (6 - i) * 0.03) for i in range(6)]).submit()
    assert len(submitted) == 6
    fan_in = total.submit(depends_on=submitted)  # a group's results come as one list
    assert submitted.results(timeout=WAIT) == list(range(6))
    assert fan_in.result(timeout=WAIT) == 15


def test_depends_on_errors_at_submit(fleet: Fleet) -> None:
    app, add, boom = fleet.app, fleet.task("add"), fleet.task("boom")

    with pytest.raises(JobNotFound, match="no-such-parent"):
        add.submit(1, 2, depends_on=["no-such-parent"], job_id="orphan-child")
    assert not job_exists(app, "orphan-child")  # nothing written

    with pytest.raises(DependencyCycle):
        add.submit(1, 2, job_id="self-loop", depends_on=["self-loop"])
    assert not job_exists(app, "self-loop")

    # A cycle inside one batch (x waits on y, y on x) is refused as a whole.
    x = app.spec("add", (1, 2), {}, {"job_id": "cyc-x", "depends_on": ["cyc-y"]})
    y = app.spec("add", (1, 2), {}, {"job_id": "cyc-y", "depends_on": ["cyc-x"]})
    with pytest.raises(JobqError):
        app.submit_specs([x, y])
    assert not job_exists(app, "cyc-x") and not job_exists(app, "cyc-y")

    # A parent that already failed: the child fails at once, naming it.
    parent = boom.submit("early")
    assert terminal(app, parent.id).state is JobState.FAILED
    child = add.submit(1, 2, depends_on=parent)
    rec = child.info()
    assert rec.state is JobState.FAILED
    assert rec.error and rec.error["type"] == "DependencyFailed"
    assert parent.id in rec.error["message"] and "failed" in rec.error["message"]

    # A parent that was cancelled: the same.
    gone = add.submit(1, 2, delay=3600)
    assert gone.cancel() is True
    child2 = add.submit(1, 2, depends_on=[gone])
    err = child2.info().error
    assert child2.status() is JobState.FAILED and err is not None
    assert gone.id in err["message"] and "cancelled" in err["message"]

    # A parent that already succeeded: the child is queued at once and runs.
    ok = add.submit(2, 2)
    assert ok.result(timeout=WAIT) == 4
    assert add.submit(1, depends_on=ok, pass_results=True).result(timeout=WAIT) == 5


def test_failing_parent_fails_its_descendants_naming_the_parent(fleet: Fleet) -> None:
    app, boom, whoami = fleet.app, fleet.task("boom"), fleet.task("whoami")
    tag = new_tag()
    # The parent waits a moment (scheduled), so its dependents are recorded before it fails.
    parent = boom.submit("parent broke", delay=0.5)
    child = whoami.submit(tag, depends_on=parent)
    grandchild = whoami.submit(tag, depends_on=child)
    sibling_ok = whoami.submit(tag)

    assert failure_of(app, parent.id).exc_type == "ValueError"
    for job, named in ((child, parent), (grandchild, child)):
        exc = failure_of(app, job.id)
        assert exc.exc_type == "DependencyFailed"
        assert named.id in exc.message and "failed" in exc.message
    assert app.job(sibling_ok.id).result(timeout=WAIT)
    # None of the failed descendants ever ran; they are dead-lettered, not waiting.
    ran = {e["job"] for e in facts(fleet.r, fleet.prefix, tag)}
    assert ran == {sibling_ok.id}
    dead = set(app.dead_letters(1000))
    assert {parent.id, child.id, grandchild.id} <= dead


def test_one_failing_parent_of_two_fails_the_child(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    app, boom, whoami = fleet.app, fleet.task("boom"), fleet.task("whoami")
    tag = new_tag()
    parent = boom.submit("parent broke", delay=0.5)
    sibling_ok = whoami.submit(tag)
    both = whoami.submit(tag, depends_on=[sibling_ok, parent])  # one good parent is not enough
    exc = failure_of(app, both.id)
    assert exc.exc_type == "DependencyFailed"
    assert parent.id in exc.message and "failed" in exc.message
    assert app.job(sibling_ok.id).result(timeout=WAIT)
    assert {e["job"] for e in facts(fleet.r, fleet.prefix, tag)} == {sibling_ok.id}
    assert {parent.id, both.id} <= set(app.dead_letters(1000))


def test_cancelled_parent_fails_its_descendants(fleet: Fleet) -> None:
    app, whoami, cooperative = fleet.app, fleet.task("whoami"), fleet.task("cooperative")
    tag = new_tag()
    scheduled = whoami.submit(tag, delay=3600)
    child = whoami.submit(tag, depends_on=scheduled)
    grandchild = whoami.submit(tag, depends_on=child)
    assert scheduled.cancel() is True
    for job, named in ((child, scheduled), (grandchild, child)):
        exc = failure_of(app, job.id)
        assert exc.exc_type == "DependencyFailed" and named.id in exc.message
    assert "cancelled" in failure_of(app, child.id).message

    # A running parent that is cancelled (and stops): its child fails too.
    running = cooperative.submit(tag)
    kid = whoami.submit(tag, depends_on=running)
    wait_until(lambda: facts(fleet.r, fleet.prefix, tag, "start"), what="the parent to start")
    assert running.cancel() is False  # running: asked to stop
    assert terminal(app, running.id).state is JobState.CANCELLED
    exc = failure_of(app, kid.id)
    assert exc.exc_type == "DependencyFailed" and running.id in exc.message
    assert not facts(fleet.r, fleet.prefix, tag, "ran")


# -- control: unique keys, cancel, progress --------------------------------------------------------


def test_unique_key_returns_the_pending_job_then_allows_a_new_one(fleet: Fleet) -> None:
    gated, r, prefix = fleet.task("gated"), fleet.r, fleet.prefix
    tag, key = new_tag(), "report:" + new_tag()
    first = gated.submit(tag, unique_key=key)
    again = gated.submit(tag, unique_key=key)  # queued or running: still pending
    assert again.id == first.id
    wait_until(lambda: facts(r, prefix, tag, "start"), what="the first job to start")
    assert first.status() is JobState.RUNNING
    assert gated.submit(tag, unique_key=key).id == first.id
    # Batches dedupe too.
    assert [j.id for j in gated.map([tag, tag], unique_key=key)] == [first.id, first.id]

    open_gate(r, prefix, tag)
    assert first.result(timeout=WAIT) == first.id
    third = gated.submit(tag, unique_key=key)  # the first finished: a new job
    assert third.id != first.id
    open_gate(r, prefix, tag)
    assert third.result(timeout=WAIT) == third.id
    assert len(facts(r, prefix, tag, "start")) == 2

    # A scheduled job holds its key too; once cancelled, the key is free.
    later = gated.submit(tag, unique_key=key + ":later", delay=3600)
    assert gated.submit(tag, unique_key=key + ":later").id == later.id
    assert later.cancel() is True
    assert gated.submit(tag, unique_key=key + ":later", delay=3600).id != later.id


def test_cancel_queued_and_scheduled_jobs_at_once(fleet: Fleet) -> None:
    app, add = fleet.app, fleet.task("add")
    nobody = "unserved-" + new_tag()  # no worker serves this queue: the job stays queued
    queued = add.submit(1, 2, queue=nobody)
    scheduled = add.submit(1, 2, delay=3600)
    assert queued.status() is JobState.QUEUED and scheduled.status() is JobState.SCHEDULED
    assert queued.cancel() is True and scheduled.cancel() is True
    for job in (queued, scheduled):
        assert job.status() is JobState.CANCELLED
        with pytest.raises(JobCancelled):
            job.result(timeout=1)
    qs, ss = job_shard(app, queued.id), job_shard(app, scheduled.id)
    assert qs.r.zscore(qs.keys.queue(nobody), queued.id) is None
    assert ss.r.zscore(ss.keys.scheduled, scheduled.id) is None
    done = add.submit(1, 1)
    assert done.result(timeout=WAIT) == 2
    assert done.cancel() is False and done.status() is JobState.SUCCEEDED
    with pytest.raises(JobNotFound):
        app.job("never-was").cancel()


def test_running_task_sees_the_cancel_and_stops(fleet: Fleet) -> None:
    app, cooperative, r, prefix = fleet.app, fleet.task("cooperative"), fleet.r, fleet.prefix
    tag = new_tag()
    job = cooperative.submit(tag)
    wait_until(lambda: facts(r, prefix, tag, "start"), what="the job to start")
    assert job.cancel() is False  # running: the task is told, not stopped
    assert job.info().cancel_requested
    rec = terminal(app, job.id)
    assert rec.state is JobState.CANCELLED
    assert rec.error is not None and rec.error["type"] == "JobCancelled"
    with pytest.raises(JobCancelled):
        job.result(timeout=1)
    steps = [e["step"] for e in facts(r, prefix, tag)]
    assert steps == ["start", "saw-cancel"]
    assert rec.attempt == 1  # raising on a cancel ends the job; it is not retried


def test_progress_is_visible_in_the_record_and_jobq_status(fleet: Fleet) -> None:
    r, prefix = fleet.r, fleet.prefix
    tag = new_tag()
    job = fleet.task("with_progress").submit(tag)
    wait_until(lambda: facts(r, prefix, tag, "reported"), what="the progress report")
    rec = job.info()
    assert rec.state is JobState.RUNNING
    assert (rec.progress, rec.progress_message) == (0.4, "parsed 4000 rows")

    shown = fleet.cluster.cli("status", job.id)
    assert shown.returncode == 0, shown.stderr
    assert "progress: 40% parsed 4000 rows" in shown.stdout  # a percentage, for people
    as_json = fleet.cluster.cli("status", job.id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["state"] == "running"
    assert view["progress"] == 0.4 and view["progress_message"] == "parsed 4000 rows"

    open_gate(r, prefix, tag)
    assert job.result(timeout=WAIT) == "finished"
    assert job.info().progress == 1.0


# -- batches and bulk operations -------------------------------------------------------------------


def test_map_submits_a_batch_and_results_come_back_in_order(fleet: Fleet) -> None:
    add = fleet.task("add")
    jobs = add.map([(i, i) for i in range(60)])
    assert [j.result(timeout=WAIT) for j in jobs] == [2 * i for i in range(60)]
    echo_jobs = fleet.task("echo").map(["a", "b", "c"])  # a scalar item is one argument
    assert [j.result(timeout=WAIT) for j in echo_jobs] == ["a", "b", "c"]


def test_cli_submit_batch_wait_and_jobq_wait(fleet: Fleet, tmp_path: Path) -> None:
    app, cli = fleet.app, fleet.cluster.cli
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(f"[{i}, 100]\n" for i in range(20)) + "\n")  # a blank line is skipped
    out = cli("submit", "add", "--batch", str(batch), "--wait", "--wait-timeout", str(WAIT))
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]  # one JSON line per job
    ids = [r["id"] for r in results]
    assert len(ids) == 20 and out.stderr.splitlines()[-1] == "20 succeeded"
    assert [r["result"] for r in results] == [100 + i for i in range(20)]
    assert [app.job(i).result(timeout=1) for i in ids] == [100 + i for i in range(20)]

    failing = tmp_path / "failing.jsonl"
    failing.write_text('"one"\n"two"\n')  # one JSON value per line = one argument
    out = cli("submit", "boom", "--batch", str(failing), "--wait")
    assert out.returncode == 1
    failed = [json.loads(line) for line in out.stdout.splitlines()]
    bad_ids = [r["id"] for r in failed]
    assert [(r["state"], r["error"]["message"]) for r in failed] == [
        ("failed", "one"),
        ("failed", "two"),
    ]
    assert out.stderr.splitlines()[-1] == "2 failed"
    assert failure_of(app, bad_ids[0]).message == "one"

    # Without --wait: ids only, then `jobq wait` follows them with a summary.
    out = cli("submit", "echo", "--batch", str(failing))
    assert out.returncode == 0, out.stderr
    later = out.stdout.split()
    assert len(later) == 2
    waited = cli("wait", *later, ids[0], "--timeout", str(WAIT))
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "3 succeeded"
    mixed = cli("wait", later[0], bad_ids[1], "missing-job", "--timeout", str(WAIT))
    assert mixed.returncode == 1
    assert mixed.stdout.strip() == "1 failed, 1 not found, 1 succeeded"


def test_cli_purge_cancels_a_queue_after_confirmation(fleet: Fleet) -> None:
    app, add, cli = fleet.app, fleet.task("add"), fleet.cluster.cli
    parked = "parked-" + new_tag()  # no worker serves it
    jobs = add.map([(i, 1) for i in range(30)], queue=parked)
    dependent = add.submit(1, 2, depends_on=jobs[0])
    elsewhere = add.submit(5, 5)

    refused = cli("purge", parked, stdin="n\n")
    assert refused.returncode != 0 and "30 queued" in refused.stdout
    assert all(j.status() is JobState.QUEUED for j in jobs)

    done = cli("purge", parked, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cancelled 30 job(s)"
    assert {j.status() for j in jobs} == {JobState.CANCELLED}
    exc = failure_of(app, dependent.id)
    assert exc.exc_type == "DependencyFailed" and jobs[0].id in exc.message
    assert elsewhere.result(timeout=WAIT) == 10  # other queues untouched
    info = {q.name: q for q in app.queue_info()}[parked]
    assert (info.queued, info.cancelled) == (0, 30)


# -- targeted dispatch -----------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_targeted_jobs_land_only_on_their_worker_or_group(cluster: Cluster, sapp: App) -> None:
    whoami, tag = sapp.tasks["whoami"], new_tag()
    cluster.worker("node-1", "--group", "cpu", "-c", "2")
    cluster.worker("node-2", "--group", "gpu", "-c", "2")
    cluster.worker("node-3", "--group", "gpu", "-c", "2")
    # Jobs for a worker that has not started yet wait for it (durable, unlike pub/sub).
    early = whoami.map([(tag, 0)] * 3, worker="node-4")
    cluster.ready()

    named = whoami.map([(tag, 0.05)] * 12, worker="node-3")
    grouped = whoami.map([(tag, 0.05)] * 12, worker_group="gpu")
    anyone = whoami.map([(tag, 0.05)] * 12)
    assert {j.result(timeout=WAIT) for j in named} == {"node-3"}
    assert {j.result(timeout=WAIT) for j in grouped} <= {"node-2", "node-3"}
    assert {j.result(timeout=WAIT) for j in anyone} <= {"node-1", "node-2", "node-3"}
    # The claim agrees with what the tasks saw.
    assert {j.info().worker for j in named} == {"node-3"}
    assert {j.info().queue for j in named} == {"@worker:node-3"}

    assert {j.status() for j in early} == {JobState.QUEUED}  # still waiting for node-4
    cluster.ready(cluster.worker("node-4"))
    assert {j.result(timeout=WAIT) for j in early} == {"node-4"}
    ran_by = Counter(e["worker"] for e in facts(sapp.store.r, sapp.settings.prefix, tag))
    assert ran_by["node-4"] == 3 and ran_by["node-3"] >= 12


@pytest.mark.timeout(150)
def test_job_for_a_gone_worker_fails_or_falls_back(cluster: Cluster, sapp: App) -> None:
    whoami, gated, r = sapp.tasks["whoami"], sapp.tasks["gated"], sapp.store.r
    tag, gate = new_tag(), new_tag()
    gone_ms = 1500
    env = {"JOBQ_WORKER_GONE_MS": str(gone_ms), "JOBQ_HEARTBEAT_MS": "200", "JOBQ_TICK_MS": "100"}
    cluster.worker("live-a", "-c", "1", "--prefetch", "0", env=env)  # claims no job ahead
    cluster.worker("live-b", "-c", "1", env=env)
    leaving = cluster.worker("leaving", env=env)
    cluster.ready()
    assert leaving.stop() == 0  # a clean shutdown: it is gone from now on

    # live-a is busy for longer than gone_ms: a job for it waits, it does not fail.
    busy = gated.submit(gate, worker="live-a")
    wait_until(lambda: facts(r, sapp.settings.prefix, gate, "start"), what="live-a to be busy")
    behind = whoami.submit(tag, worker="live-a")

    fails = whoami.submit(tag, worker="leaving")
    falls = whoami.submit(tag, worker="leaving", fallback=True)
    ghost = whoami.submit(tag, worker="never-existed")
    for job, name in ((fails, "leaving"), (ghost, "never-existed")):
        exc = failure_of(sapp, job.id)
        assert exc.exc_type == "WorkerGone" and name in exc.message
        rec = job.info()
        assert rec.finished_ms is not None and rec.finished_ms - rec.created_ms >= gone_ms
    assert falls.result(timeout=WAIT) in {"live-a", "live-b"}
    assert falls.info().queue == "default"

    assert behind.status() is JobState.QUEUED
    open_gate(r, sapp.settings.prefix, gate)
    assert busy.result(timeout=WAIT) == busy.id
    assert behind.result(timeout=WAIT) == "live-a"
    ran = {e["job"] for e in facts(r, sapp.settings.prefix, tag)}
    assert ran == {falls.id, behind.id}


# -- limits ----------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_rate_limit_holds_across_four_worker_processes(cluster: Cluster, sapp: App) -> None:
    from jobq.tasks import parse_rate

    tag, r = new_tag(), sapp.store.r
    count, period_ms = parse_rate(RATE_LIMIT)
    per_s = count * 1000 / period_ms
    for i in range(4):
        cluster.worker(f"rl-{i}", "-c", "4", env={"JOBQ_TICK_MS": "50"})
    cluster.ready()
    n = 100
    jobs = sapp.tasks["limited"].map([tag] * n)
    for j in jobs:
        j.result(timeout=WAIT)
    starts = sorted(e["t"] for e in facts(r, sapp.settings.prefix, tag, "start"))
    assert len(starts) == n
    rate = (n - 1) / ((starts[-1] - starts[0]) / 1e6)
    # Several partitions: each enforces limit/P over its own share of the jobs (store.py
    # `set_rate_limits`), so the backlog drains at the pace of the partition holding the most
    # of it: the limit is never exceeded, and the rate reached is what that share allows.
    store, p = sapp.store, sapp.store.partitions
    share = Counter(store.partition_of(j.id) for j in jobs)
    expected = per_s if p == 1 else (n - 1) / ((max(share.values()) - 1) * p / per_s)
    spread = sorted(share.values())
    print(f"rate limit {per_s}/s, {p} partition(s) holding {spread} jobs: measured {rate:.2f}/s")
    assert expected * 0.9 <= rate <= min(per_s, expected) * 1.1, (
        f"measured {rate:.2f}/s for a limit of {per_s}/s (expected {expected:.2f}/s)"
    )
    # No burst: no one-second window holds many more starts than the limit (a late maintenance
    # tick on a loaded machine may bunch a few).
    window = [sum(1 for u in starts[i:] if u - t < 1_000_000) for i, t in enumerate(starts)]
    assert max(window) <= per_s * 1.2 + 2, f"{max(window)} starts within one second"
    # The limit was shared: the jobs ran on several of the worker processes.
    workers = Counter(e["worker"] for e in facts(r, sapp.settings.prefix, tag))
    assert len(workers) >= 2, workers


def test_a_rate_limited_job_whose_slot_came_starts_before_the_backlog(sapp: App) -> None:
    """Stepped: a job parked for its start slot is promoted to the front of its queue, so it
    starts on time instead of behind jobs not yet looked at (which made bursts)."""
    store = sapp.store
    store.set_rate_limits({"limited": "1:1000"})  # one start per second
    # One partition's slots (each partition enforces its share of the limit, so one start
    # per partitions x 1 s there): ids whose home is partition 0.
    period = 1000 * store.partitions
    ids = ids_in_partition(sapp, 0, 5)
    jobs = [sapp.tasks["limited"].submit("stepped", job_id=i) for i in ids]
    now = store.server_time_ms()
    started = store.claim("w", ["default"], 2, 30_000, now=now)
    assert [c.id for c in started] == [jobs[0].id]  # the second waits for its slot
    assert jobs[1].status() is JobState.SCHEDULED
    assert store.promote(100, now + period - 1) == 0
    assert store.promote(100, now + period) == 1
    (c,) = store.claim("w", ["default"], 1, 30_000, now=now + period)
    assert c.id == jobs[1].id  # ahead of jobs[2:], which were queued before it came back


@pytest.mark.timeout(150)
def test_concurrency_key_never_exceeds_its_limit(cluster: Cluster, sapp: App) -> None:
    guarded, r = sapp.tasks["guarded"], sapp.store.r
    for i in range(4):
        cluster.worker(f"ck-{i}", "-c", "2")
    cluster.ready()
    tag_a, tag_b, tag_free = new_tag(), new_tag(), new_tag()
    key_a, key_b = "customer-a-" + tag_a, "customer-b-" + tag_b
    jobs = guarded.map([(tag_a, 0.15)] * 16, concurrency_key=key_a, concurrency_limit=2)
    jobs += guarded.map([(tag_b, 0.15)] * 16, concurrency_key=key_b, concurrency_limit=3)
    jobs += guarded.map([(tag_free, 0.15)] * 8)  # no key: only the slots limit them
    for j in jobs:
        j.result(timeout=WAIT)

    prefix = sapp.settings.prefix
    for tag, limit in ((tag_a, 2), (tag_b, 3)):
        seen = [e["running"] for e in facts(r, prefix, tag, "start")]
        assert len(seen) == 16
        assert max(seen) <= limit, f"{max(seen)} jobs of one key ran at once (limit {limit})"
        assert max(seen) >= 2  # the key still lets jobs run in parallel
        assert len({e["worker"] for e in facts(r, prefix, tag)}) >= 2
    assert max(e["running"] for e in facts(r, prefix, tag_a, "start")) == 2
    # Jobs over the limit waited (parked), none was dropped, and every slot was given back.
    parked = [f for _id, f in all_events(sapp) if f.get(b"info") == b"concurrency limit"]
    assert parked
    for key in (key_a, key_b):
        shard = key_shard(sapp, key)
        assert int(shard.r.get(shard.keys.conc(key)) or 0) == 0


# -- periodic jobs ---------------------------------------------------------------------------------


def due_of(job_id: str) -> int:
    """The due time (ms) in a periodic job's id, ``periodic:<name>:<due ms>``."""
    return int(job_id.rsplit(":", 1)[1])


@pytest.mark.timeout(150)
def test_periodic_fires_exactly_once_per_tick_with_two_masters(cluster: Cluster, sapp: App) -> None:
    tag, r, keys = new_tag(), sapp.store.r, sapp.keys
    prefix = sapp.settings.prefix
    # Workers declare `@app.periodic(every=1)` (SCHED_PERIODIC) and publish it at start.
    env = {"JOBQ_TICK_MS": "50", "JOBQ_LEADER_MS": "1000", "SCHED_PERIODIC": f"{tag}:1"}
    masters = [cluster.master(f"master-{i}", env=env) for i in (1, 2)]
    for i in (1, 2):
        cluster.worker(f"pw-{i}", "-c", "2", env=env)
    cluster.ready()

    def ticks() -> list[str]:
        return [e["job"] for e in facts(r, prefix, tag, "tick")]

    wait_until(lambda: len(ticks()) >= 4, 30, "four ticks with two masters")
    leader = wait_until(lambda: r.get(keys.leader), 10, "a leader").decode()
    assert leader.startswith("master:")  # workers defer to a live master
    victim = next(m for m in masters if leader.endswith(f":{m.pid}"))
    survivor = next(m for m in masters if m is not victim)
    victim.proc.kill()
    victim.proc.wait(10)
    killed_at = sapp.store.server_time_ms()
    wait_until(
        lambda: (r.get(keys.leader) or b"").decode().endswith(f":{survivor.pid}"),
        30,
        "the other master to take over",
    )
    wait_until(
        lambda: sum(due_of(i) > killed_at for i in ticks()) >= 3, 30, "ticks after the failover"
    )

    ids = ticks()
    assert all(i.startswith(f"periodic:tick-{tag}:") for i in ids)
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    assert not repeated, f"ticks that ran twice: {repeated}"
    dues = sorted(due_of(i) for i in ids)
    assert all(d % 1000 == 0 for d in dues)
    before = [d for d in dues if d <= killed_at]
    assert len(before) >= 4
    assert {b - a for a, b in itertools.pairwise(before)} == {1000}, before
    # Every periodic job in the store is one of the ticks (no second job under another id).
    stored = {k.decode().removeprefix(keys.job("")) for k in r.scan_iter(keys.job("periodic:*"))}
    assert set(ids) <= stored
    assert len({due_of(i) for i in stored}) == len(stored)


def test_two_masters_firing_the_same_tick_make_one_job(url: str, prefix: str) -> None:
    with make_app(url, prefix) as one, make_app(url, prefix) as two:
        r, keys = one.store.r, one.keys
        spec = PeriodicSpec("every-10s", "add", every_s=10, args=[1, 2])
        t0 = one.store.server_time_ms() // 10_000 * 10_000
        one.store.upsert_periodic(spec, now=t0)
        due = t0 + 10_000
        assert one.store.list_periodic() == [(spec, due)]
        assert fire_periodic(one.store, due - 1) == 0  # not due yet

        # One master fires the tick; a second one (its clock, or its loop, a little behind)
        # fires the same tick: no second job.
        assert fire_periodic(one.store, due + 3) == 1
        assert fire_periodic(two.store, due + 3) == 0

        # Both at the same moment, for the next tick.
        due2 = due + 10_000
        barrier = threading.Barrier(2)

        def fire(store: Any) -> int:
            barrier.wait()
            return fire_periodic(store, due2 + 1)

        with ThreadPoolExecutor(2) as ex:
            assert sorted(ex.map(fire, [one.store, two.store])) == [0, 1]

        # A master that died between its two steps (job submitted, due time not moved on):
        # its successor fires the same tick again and makes no second job.
        due3 = due2 + 10_000
        payload = one.serializer.encode_args([1, 2], {})
        one.store.submit([JobSpec(spec.job_id(due3), "add", "default", payload)], now=due3)
        assert fire_periodic(two.store, due3 + 1) == 0
        assert one.store.list_periodic() == [(spec, due3 + 10_000)]

        # Two Maintainers with different names, both masters: only the lease holder ticks.
        m1 = Maintainer(one.store, tick_ms=50, leader_ms=5000, is_master=True, name="m-one")
        m2 = Maintainer(two.store, tick_ms=50, leader_ms=5000, is_master=True, name="m-two")
        due4 = due3 + 10_000
        first, second = m1.step(due4 + 1), m2.step(due4 + 1)
        m1.stop()
        m2.stop()
        assert first is not None and first.periodic_fired == 1
        assert second is None

        stored = sorted(k.decode() for k in r.scan_iter(keys.job("periodic:every-10s:*")))
        assert stored == [keys.job(spec.job_id(d)) for d in (due, due2, due3, due4)]


def test_missed_ticks_follow_the_skip_or_once_policy(sapp: App) -> None:
    store, r, keys = sapp.store, sapp.store.r, sapp.keys
    t0 = store.server_time_ms() // 10_000 * 10_000
    skip = PeriodicSpec("skipper", "add", every_s=10, args=[1, 1], missed="skip")
    once = PeriodicSpec("catch-up", "add", every_s=10, args=[1, 1], missed="once")
    for spec in (skip, once):
        store.upsert_periodic(spec, now=t0)

    # No master ran for 55 s: the ticks due at t0+10 s ... t0+50 s were missed.
    late = t0 + 55_000
    assert fire_periodic(store, late) == 1  # "once": one job for all of them; "skip": none
    assert r.exists(keys.job(once.job_id(t0 + 10_000)))
    assert not list(r.scan_iter(keys.job("periodic:skipper:*")))
    assert dict((s.name, d) for s, d in store.list_periodic()) == {
        "skipper": t0 + 60_000,
        "catch-up": t0 + 60_000,
    }
    assert fire_periodic(store, late) == 0  # nothing more for the same moment

    # Back on time: both fire; a tick a little late (less than a period) fires under "skip".
    assert fire_periodic(store, t0 + 60_000 + 200) == 2
    assert fire_periodic(store, t0 + 70_000 + 9_000) == 2
    assert r.exists(keys.job(skip.job_id(t0 + 70_000)))


def test_cron_fires_on_its_schedule_stepped(sapp: App) -> None:
    store, r, keys = sapp.store, sapp.store.r, sapp.keys
    spec = PeriodicSpec("five-minutes", "add", cron="*/5 * * * *", args=[2, 3])
    start = int(dt.datetime(2031, 1, 1, 12, 1, tzinfo=dt.UTC).timestamp() * 1000)
    store.upsert_periodic(spec, now=start)
    fired = 0
    for minute in range(21):  # 12:01 ... 12:21, one step a minute (plus a little)
        fired += fire_periodic(store, start + minute * 60_000 + 500)
    assert fired == 4
    expected = [
        int(dt.datetime(2031, 1, 1, 12, m, tzinfo=dt.UTC).timestamp() * 1000)
        for m in (5, 10, 15, 20)
    ]
    stored = sorted(due_of(k.decode()) for k in r.scan_iter(keys.job("periodic:five-minutes:*")))
    assert stored == expected
    assert store.list_periodic()[0][1] == expected[-1] + 5 * 60_000


def test_a_periodic_job_keeps_its_task_options(url: str, prefix: str) -> None:
    with App(url, prefix=prefix) as a:

        @a.periodic(every=10, retries=2, priority=5)
        def nightly_report() -> None: ...

        spec = a.periodics["nightly_report"]
        t0 = a.store.server_time_ms() // 10_000 * 10_000
        a.store.upsert_periodic(spec, now=t0)
        assert fire_periodic(a.store, t0 + 10_001) == 1
        rec = a.store.get_job(spec.job_id(t0 + 10_000))
        assert rec is not None
        assert (rec.max_attempts, rec.priority) == (3, 5)  # retried like any job of the task


@pytest.mark.timeout(150)
def test_periodic_cli_add_list_remove(cluster: Cluster, sapp: App) -> None:
    tag, r, keys = new_tag(), sapp.store.r, sapp.keys
    for i in (1, 2):
        cluster.worker(f"pc-{i}", env={"JOBQ_TICK_MS": "50"})
    cluster.ready()
    cli = cluster.cli
    added = cli("periodic", "add", "cli-tick", "periodic_tick", "--every", "0.5",
                "--args", json.dumps([tag]), "--missed", "once")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "periodic cli-tick added"
    nightly = cli("periodic", "add", "nightly", "add", "--cron", "0 3 * * *", "--args", "[1, 2]")
    assert nightly.returncode == 0, nightly.stderr

    listed = cli("periodic", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert set(rows) == {"cli-tick", "nightly"}
    assert "periodic_tick" in rows["cli-tick"] and "every 0.5s" in rows["cli-tick"]
    assert "(once)" in rows["cli-tick"]
    assert "0 3 * * *" in rows["nightly"] and "T03:00:00" in rows["nightly"]

    # The workers (no master running) fire it: distinct ticks, each run once.
    wait_until(lambda: len(facts(r, sapp.settings.prefix, tag, "tick")) >= 3, 30, "three ticks")
    ids = [e["job"] for e in facts(r, sapp.settings.prefix, tag, "tick")]
    assert len(set(ids)) == len(ids)
    assert all(due_of(i) % 500 == 0 for i in ids)

    removed = cli("periodic", "remove", "cli-tick")
    assert removed.returncode == 0, removed.stderr
    assert r.hget(keys.periodic, "cli-tick") is None
    assert r.zscore(keys.periodic_next, "cli-tick") is None
    listed = cli("periodic", "list")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["nightly"]
    assert cli("periodic", "remove", "cli-tick").returncode == 4  # not found
    bad = cli("periodic", "add", "broken", "add", "--cron", "not a cron")
    assert bad.returncode != 0 and "invalid cron expression" in bad.stderr


# -- cancel: hard stop -----------------------------------------------------------------------------


@pytest.mark.timeout(150)
@pytest.mark.parametrize(("pool", "task"), [("process", "stubborn"), ("async", "stubborn_async")])
def test_task_ignoring_a_cancel_is_hard_stopped_after_the_grace_period(
    cluster: Cluster, sapp: App, pool: str, task: str
) -> None:
    tag, r, prefix = new_tag(), sapp.store.r, sapp.settings.prefix
    grace = 1.5
    for i in (1, 2):
        cluster.worker(f"{pool}-{i}", "--pool", pool, "-c", "1", "--cancel-grace", str(grace),
                       env={"JOBQ_HEARTBEAT_MS": "200"})  # fmt: skip
    cluster.ready()
    job = sapp.tasks[task].submit(tag, 120)
    (start,) = wait_until(lambda: facts(r, prefix, tag, "start"), what="the job to start")
    asked = time.monotonic()
    assert job.cancel() is False  # running: asked to stop; it will not
    rec = terminal(sapp, job.id)
    took = time.monotonic() - asked
    assert rec.state is JobState.CANCELLED
    assert rec.error is not None and rec.error["type"] == "JobCancelled"
    assert took >= grace * 0.9, f"stopped after {took:.2f}s, before its grace period"
    assert not facts(r, prefix, tag, "end")  # killed, not finished
    ran = next(p for p in cluster.procs if p.name == start["worker"])
    ran.wait_log(f"job {job.id} ({task}) attempt 1 failed: JobCancelled")
    assert "(cancelled, as asked)" in ran.log() and "(dead-lettered)" not in ran.log()
    # The worker replaced the killed child and keeps serving.
    again = sapp.tasks["whoami"].submit(tag, worker=start["worker"])
    assert again.result(timeout=WAIT) == start["worker"]
    assert all(p.alive() for p in cluster.procs)


# -- the example -----------------------------------------------------------------------------------


def run_example(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "analysis.py"), *args],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=cwd,
        env=env,
    )


@pytest.mark.timeout(180)
def test_analysis_example_runs_against_the_test_server(
    url: str, prefix: str, app: App, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = run_example(
        "--url", url, "--prefix", prefix, "--docs", "3000", "--chunks", "6",
        cwd=tmp_path, env=subprocess_env(url, prefix),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started 2 worker processes" in out.stdout
    assert "documents 3,000" in out.stdout and "distributed:" in out.stdout
    assert "verified: the merged result equals the single-process computation" in out.stdout
    stats = hash_total(app, lambda k: k.stats("analysis"))  # `app`: the same deployment
    assert stats.get("succeeded") == 7  # six chunks and the fan-in
    assert total(app, "zcard", lambda k: k.workers) == 0  # the workers it started were stopped


@pytest.mark.timeout(180)
def test_analysis_example_runs_on_the_embedded_default(
    tmp_path: Path, layout_kind: str, request: pytest.FixtureRequest
) -> None:
    if layout_kind == "cluster":
        pytest.skip("runs on its own embedded server: the 'three' layout covers its partitions")
    env = {k: v for k, v in subprocess_env("", "").items() if k not in ("JOBQ_URL", "JOBQ_PREFIX")}
    if layout_kind == "three":  # the embedded server's new deployment, split the same way
        env["JOBQ_PARTITIONS"] = str(PARTITIONED)
    out = run_example("--docs", "2000", "--chunks", "4", cwd=tmp_path, env=env)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "verified" in out.stdout and ".jobq" in out.stdout
    finally:  # the example stops the server it started; make sure of it
        subprocess.run(
            jobq_cmd("server", "stop", "--data-dir", str(tmp_path / ".jobq")),
            capture_output=True,
            timeout=60,
            env=env,
        )
    status = subprocess.run(
        jobq_cmd("server", "status", "--data-dir", str(tmp_path / ".jobq")),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "not running" in status.stdout
