"""The task catalog with real `jobq worker` subprocesses: a by-name submit from anywhere (a
producer without the task, the CLI, `POST /v1/jobs`, `POST /schedule`) takes the settings the
workers declared, explicit options win, a task no live worker has is queued with a warning, and
a worker hands back a job whose task it does not know, failing it only after the grace."""

from __future__ import annotations

import json
import logging
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import jobq_cmd, on_every_layout, subprocess_env
from live_master import LiveMaster
from procs import JobqProcess, kill_all, wait_until
from shard_keys import job_events

from jobq import App, JobFailed, JobState

pytestmark = [pytest.mark.timeout(180), on_every_layout]

WAIT = 60  # seconds a job may take: generous on a loaded machine
#: The grace of the worker without the tasks (JOBQ_UNKNOWN_TASK_MS): short, so a job of a task
#: nobody has fails within the test.
GRACE_MS = 300
HANDED_BACK = b"unknown task: handed back"


@dataclass
class Fleet:
    url: str
    prefix: str
    env: dict[str, str]
    tmp: Path
    knows: JobqProcess  # registry_tasks:app on queue `special`
    lacks: JobqProcess  # registry_other:app on queue `shared`, short grace


def spawn(fleet_env: dict[str, str], tmp: Path, name: str, *args: str) -> JobqProcess:
    proc = JobqProcess.spawn(name, jobq_cmd("worker", *args), tmp / f"{name}.log", fleet_env)
    proc.wait_log("serving", WAIT)  # (the catalog is published before the banner)
    return proc


@pytest.fixture(scope="module")
def fleet(deployment_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    prefix = "treg" + uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("registry")
    env = subprocess_env(deployment_url, prefix)
    procs: list[JobqProcess] = []
    try:
        procs.append(spawn(env, tmp, "knows", "registry_tasks:app", "-q", "special"))
        lacks_env = {**env, "JOBQ_UNKNOWN_TASK_MS": str(GRACE_MS)}
        procs.append(spawn(lacks_env, tmp, "lacks", "registry_other:app", "-q", "shared"))
        yield Fleet(deployment_url, prefix, env, tmp, procs[0], procs[1])
    finally:
        for p in procs:
            p.stop()
        kill_all(procs)


@pytest.fixture
def producer(fleet: Fleet) -> Iterator[App]:
    """An App that imported no task: every submit is by name."""
    app = App(fleet.url, prefix=fleet.prefix)
    yield app
    app.close()


def jobq(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobq_cmd(*args), env=fleet.env, capture_output=True, text=True, timeout=90
    )


# -- by-name submits take the declared settings ------------------------------------------------


def test_a_producer_without_the_task_gets_its_declared_settings(
    producer: App, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="jobq"):
        job = producer.submit("double", (21,))
        assert job.result(timeout=WAIT) == 42
    rec = job.info()
    assert (rec.queue, rec.max_attempts, rec.priority) == ("special", 3, 7)
    assert rec.timeout_ms == 30_000
    assert not [r for r in caplog.records if "no live worker" in r.getMessage()]
    # The hot path (a template per task) keeps them too.
    again = producer.submit("double", (1,))
    assert again.result(timeout=WAIT) == 2 and again.info().queue == "special"
    batch = producer.submit_many("double", [((3,), {}), ((4,), {})])
    assert [j.result(timeout=WAIT) for j in batch] == [6, 8]
    assert {j.info().max_attempts for j in batch} == {3}


def test_explicit_options_override_the_declared_ones(producer: App) -> None:
    job = producer.submit("double", (5,), queue="elsewhere", retries=0, priority=1, delay=3600)
    rec = job.info()
    assert (rec.queue, rec.max_attempts, rec.priority) == ("elsewhere", 1, 1)
    assert job.cancel() is True


def test_a_task_no_live_worker_has_is_queued_with_one_warning(
    producer: App, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="jobq"):
        first = producer.submit("nobody_has_it", (1,), delay=3600)
        second = producer.submit("nobody_has_it", (2,), delay=3600)
    warned = [r.getMessage() for r in caplog.records if "no live worker" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "'nobody_has_it'" in warned[0]
    for job in (first, second):
        assert job.status() == JobState.SCHEDULED
        assert job.info().queue == "default"
        job.cancel()


def test_cli_submit_takes_the_declared_settings_and_warns_for_unknown_tasks(
    fleet: Fleet, producer: App
) -> None:
    done = jobq(fleet, "submit", "double", "--args", "[8]", "--wait", "--wait-timeout", "60")
    assert done.returncode == 0, done.stderr
    job_id, result = done.stdout.split()
    assert result == "16"
    assert producer.job(job_id).info().max_attempts == 3
    assert "no live worker" not in done.stderr
    # An explicit option wins.
    moved = jobq(fleet, "submit", "double", "--args", "[1]", "--queue", "q2", "--delay", "3600")
    assert moved.returncode == 0, moved.stderr
    rec = producer.job(moved.stdout.strip()).info()
    assert (rec.queue, rec.max_attempts) == ("q2", 3)
    producer.job(rec.id).cancel()
    # A task no live worker has: queued, exit 0, a warning on stderr.
    unknown = jobq(fleet, "submit", "no_such_task", "--delay", "3600")
    assert unknown.returncode == 0, unknown.stderr
    assert "no live worker has registered task 'no_such_task'" in unknown.stderr
    assert producer.job(unknown.stdout.strip()).status() == JobState.SCHEDULED
    producer.job(unknown.stdout.strip()).cancel()


@pytest.fixture
def http(producer: App) -> Iterator[httpx.Client]:
    master = LiveMaster(producer).start()
    try:
        with httpx.Client(base_url=master.url, timeout=30) as c:
            yield c
    finally:
        master.stop()


def test_http_submits_take_the_declared_settings_and_say_when_unregistered(
    http: httpx.Client, producer: App
) -> None:
    r = http.post("/v1/jobs", json={"task": "double", "args": [4]})
    assert r.status_code == 201 and set(r.json()) == {"id"}, r.text
    rec = producer.job(r.json()["id"]).info()
    assert (rec.queue, rec.max_attempts, rec.priority) == ("special", 3, 7)
    assert producer.job(rec.id).result(timeout=WAIT) == 8
    r = http.post("/v1/jobs", json={"task": "double", "args": [1], "retries": 0, "delay": 3600})
    assert producer.job(r.json()["id"]).info().max_attempts == 1
    producer.job(r.json()["id"]).cancel()
    r = http.post("/v1/jobs", json={"task": "ghost", "delay": 3600})
    assert r.status_code == 201
    assert r.json()["warning"] == "no live worker has registered task 'ghost'"
    producer.job(r.json()["id"]).cancel()
    r = http.post("/v1/jobs/batch", json={"task": "ghost", "calls": [{}], "delay": 3600})
    assert r.status_code == 201 and "ghost" in r.json()["warning"]
    producer.job(r.json()["ids"][0]).cancel()

    # The classic pair: the exact reply, and the job on the task's own queue.
    sid = "sched-" + uuid.uuid4().hex[:6]
    r = http.post("/schedule", json={"task_id": sid, "task_type": "double", "x": 6})
    assert r.content == json.dumps({"task_id": sid, "status": "scheduled"}).encode()
    assert producer.job(sid).result(timeout=WAIT) == 12
    assert producer.job(sid).info().queue == "special"
    gid = "ghost-" + uuid.uuid4().hex[:6]
    r = http.post("/schedule", json={"task_id": gid, "task_type": "ghost"})
    assert r.status_code == 200
    assert r.json() == {
        "task_id": gid,
        "status": "scheduled",
        "warning": "no live worker has registered task 'ghost'",
    }
    producer.job(gid).cancel()


def test_periodic_add_of_a_task_no_live_worker_has_is_refused_unless_forced(
    fleet: Fleet, producer: App
) -> None:
    refused = jobq(fleet, "periodic", "add", "p-ghost", "ghost", "--every", "3600")
    assert refused.returncode == 1
    assert "no live worker has registered task 'ghost'" in refused.stderr
    assert "known tasks:" in refused.stderr and "double" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "p-ghost" not in {s.name for s, _ in producer.store.list_periodic()}
    forced = jobq(fleet, "periodic", "add", "p-ghost", "ghost", "--every", "3600", "--force")
    assert forced.returncode == 0, forced.stderr
    added = jobq(fleet, "periodic", "add", "p-double", "double", "--every", "3600")
    assert added.returncode == 0, added.stderr
    specs = {s.name: s for s, _ in producer.store.list_periodic()}
    assert {"p-ghost", "p-double"} <= set(specs)
    assert (specs["p-double"].queue, specs["p-double"].retries) == ("special", 2)
    for name in ("p-ghost", "p-double"):
        producer.store.remove_periodic(name)


# -- a worker given a task it does not know ------------------------------------------------------


def test_an_unknown_task_is_handed_back_and_run_by_a_worker_that_knows_it(
    fleet: Fleet, producer: App
) -> None:
    # `double` goes to `shared`, which only the worker lacking it serves; a live worker knows
    # the task (on another queue), so the job is handed back again and again, never failed.
    job = producer.submit("double", (50,), queue="shared", retries=0)

    def handed_back() -> int:
        return sum(e.get(b"info") == HANDED_BACK for e in job_events(producer, job.id))

    wait_until(lambda: handed_back() >= 3, WAIT, "three hand-backs")
    assert job.status() in (JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING)
    fleet.lacks.wait_log("task 'double' is not registered here")
    second = spawn(fleet.env, fleet.tmp, "knows-shared", "registry_tasks:app", "-q", "shared")
    try:
        assert job.result(timeout=WAIT) == 100
    finally:
        second.stop()
    rec = job.info()
    assert rec.attempt == 1 and rec.max_attempts == 1  # hand-backs consumed no attempt


def test_a_task_no_live_worker_knows_fails_after_the_grace_naming_it(producer: App) -> None:
    job = producer.submit("nobody_knows", (1,), queue="shared", retries=3)
    with pytest.raises(JobFailed) as failed:
        job.result(timeout=WAIT)
    assert failed.value.exc_type == "UnknownTask"
    message = failed.value.message
    assert "unknown task 'nobody_knows'" in message
    assert f"{GRACE_MS / 1000:g}s" in message
    assert "known tasks:" in message and "double" in message and "other" in message
    assert job.info().attempt == 1  # not retried: no attempt could succeed


def test_a_handed_back_job_can_be_cancelled(producer: App) -> None:
    job = producer.submit("double", (7,), queue="shared")
    wait_until(
        lambda: any(e.get(b"info") == HANDED_BACK for e in job_events(producer, job.id)),
        WAIT,
        "a hand-back",
    )
    job.cancel()  # scheduled: cancelled at once; claimed meanwhile: the hand-back ends it
    wait_until(lambda: job.status() == JobState.CANCELLED, WAIT, "the job to end cancelled")
