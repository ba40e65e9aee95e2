"""Transition logs (logs.transition, worker/transitions.py): one info line per job transition
with job id, task, queue, attempt, worker and duration; as text, and as JSON lines (with trace
ids when tracing is on) from a real `jobq worker --log-format json`; nothing at info on the
submit path."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import jobq_cmd, subprocess_env
from inprocess import deployment
from opentelemetry.sdk.trace import TracerProvider
from procs import JobqProcess, wait_until

from jobq import App
from jobq.errors import JobFailed
from jobq.keys import worker_queue
from jobq.logs import JsonFormatter, ids_of
from jobq.maintenance import tick
from jobq.model import JobSpec

FIELDS = ("event", "job_id", "task", "queue", "attempt", "worker", "duration_ms")


def lines(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "jobq.jobs" and getattr(r, "jobq", {}).get("job_id") == job_id
    ]


def events(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [r.jobq["event"] for r in lines(caplog, job_id)]  # type: ignore[attr-defined]


def test_one_line_per_transition_in_text(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobq")
    runs: list[int] = []

    @app.task(name="logs.ok")
    def ok(x: int) -> int:
        return x

    @app.task(name="logs.flaky", retries=1, backoff=0.01)
    def flaky() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("once")
        return "fine"

    @app.task(name="logs.bad")
    def bad() -> None:
        raise RuntimeError("no")

    with deployment(app) as (worker, _m):
        good = ok.submit(1)
        assert good.result(timeout=10) == 1
        retried = flaky.submit()
        assert retried.result(timeout=15) == "fine"
        failed = bad.submit()
        with pytest.raises(JobFailed):
            failed.result(timeout=10)
        wait_until(lambda: len(events(caplog, failed.id)) >= 2, 10, "the failure's line")
        wait_until(lambda: len(events(caplog, retried.id)) >= 4, 10, "the retry's lines")
    assert events(caplog, good.id) == ["started", "succeeded"]
    assert events(caplog, retried.id) == ["started", "retrying", "started", "succeeded"]
    assert events(caplog, failed.id) == ["started", "failed"]
    for r in lines(caplog, good.id):
        assert r.levelno == logging.INFO
        f = r.jobq  # type: ignore[attr-defined]
        assert (f["task"], f["queue"], f["attempt"], f["worker"]) == (
            "logs.ok",
            "default",
            1,
            worker.name,
        )
        assert isinstance(f["duration_ms"], int) and f["duration_ms"] >= 0
        text = r.getMessage()
        assert text.startswith(f"job {good.id} {f['event']}: task=logs.ok queue=default")
        assert f"attempt=1 worker={worker.name} duration_ms=" in text
        assert "\n" not in text
    attempts = [r.jobq["attempt"] for r in lines(caplog, retried.id)]  # type: ignore[attr-defined]
    assert attempts == [1, 1, 2, 2]
    # The client's submit path says nothing at info.
    assert not [
        r for r in caplog.records if r.levelno >= logging.INFO and "submit" in r.getMessage()
    ]


def test_json_formatter_has_every_field_and_escapes(app: App) -> None:
    record = logging.LogRecord("jobq.jobs", logging.INFO, __file__, 1, "job %s", ("a\nb",), None)
    tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    record.jobq = {  # type: ignore[attr-defined]
        "event": "succeeded",
        "job_id": "a\nb",
        "task": "t",
        "queue": "q",
        "attempt": 2,
        "worker": "w",
        "duration_ms": 5,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
    }
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "job a\nb" and out["level"] == "INFO"
    assert out["time"].endswith("Z")
    for k in (*FIELDS, "trace_id", "span_id"):
        assert k in out
    assert ids_of(tp) == ("ab" * 16, "cd" * 8)
    assert ids_of("") is None and ids_of("garbage") is None


TASKS = """
from jobq import App

app = App()


@app.task(name="jsonlog.add")
def add(x, y):
    return x + y
"""


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_real_worker_logs_json_lines_with_trace_ids(
    url: str, prefix: str, tmp_path: Path, how: str
) -> None:
    (tmp_path / "jsonlog_tasks.py").write_text(TASKS)
    extra: dict[str, str] = {"JOBQ_TRACING": "1"}
    argv = jobq_cmd("worker", "jsonlog_tasks:app", "-c", "2")
    if how == "flag":
        argv += ["--log-format", "json"]
    else:
        extra["JOBQ_LOG_FORMAT"] = "json"
    env = subprocess_env(url, prefix, **extra)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    proc = JobqProcess.spawn("worker", argv, tmp_path / "worker.log", env, cwd=tmp_path)
    try:
        proc.wait_log("serving")
        provider = TracerProvider()  # (a real SDK: the no-op default propagates no context)
        with App(url, prefix=prefix, tracing=True, tracer_provider=provider) as app:
            job = app.submit("jsonlog.add", (2, 3))
            assert job.result(timeout=15) == 5
            proc.wait_log('"event":"succeeded"')
            stored = app.store.r.hget(app.keys.job(job.id), "trace")
    finally:
        assert proc.stop() == 0
    assert stored is not None
    trace_id = stored.decode().split("-")[1]
    objs: list[dict[str, Any]] = [json.loads(x) for x in proc.log().splitlines() if x.strip()]
    mine = [o for o in objs if o.get("job_id") == job.id]
    assert [o["event"] for o in mine] == ["started", "succeeded"]
    for o in mine:
        assert o["logger"] == "jobq.jobs" and o["level"] == "INFO"
        assert o["task"] == "jsonlog.add" and o["queue"] == "default" and o["attempt"] == 1
        assert o["worker"] and isinstance(o["duration_ms"], int)
        assert o["trace_id"] == trace_id and len(o["span_id"]) == 16


def test_the_master_logs_json_lines_too(url: str, prefix: str, tmp_path: Path) -> None:
    argv = jobq_cmd("master", "--no-http", "--log-format", "json")
    proc = JobqProcess.spawn("master", argv, tmp_path / "master.log", subprocess_env(url, prefix))
    try:
        proc.wait_log('"message":"master ')
    finally:
        assert proc.stop() == 0
    objs = [json.loads(x) for x in proc.log().splitlines() if x.strip()]
    assert any(o["message"].startswith("master ") and o["level"] == "INFO" for o in objs)


# -- the master's lines: jobs the maintenance tick took back or settled ------------------------

T = 1_000_000_000  # a fake clock, in ms
LEASE = 10_000


def test_the_tick_logs_reaped_and_orphaned_jobs(app: App, caplog: pytest.LogCaptureFixture) -> None:
    """A lease that expires (stepped clock): released if it never began, requeued when its
    worker was lost, dead-lettered (WorkerLost) at max_lost; a job waiting for a gone worker
    falls back or is dead-lettered (WorkerGone): one master-side line each."""
    caplog.set_level(logging.INFO, logger="jobq.jobs")
    store = app.store
    store.submit(
        [JobSpec(i, "logs.reaped", "default", b"[[],{}]") for i in ("lost", "ahead")], now=T
    )
    cs = {c.id: c for c in store.claim("w1", ["default"], 2, LEASE, now=T, start=1)}
    assert store.r.hget(store.keys.job("lost"), "began") == cs["lost"].token.encode()
    assert tick(store, now=T + LEASE + 1, max_lost=2).requeued == 2
    assert events(caplog, "lost") == ["requeued (lease expired)"]
    assert events(caplog, "ahead") == ["released (never started, lease expired)"]
    (r,) = lines(caplog, "lost")
    assert (r.jobq["task"], r.jobq["queue"], r.jobq["attempt"], r.jobq["worker"]) == (  # type: ignore[attr-defined]
        "logs.reaped",
        "default",
        1,
        "w1",
    )
    assert r.jobq["duration_ms"] is None and r.levelno == logging.INFO  # type: ignore[attr-defined]
    assert r.getMessage().startswith("job lost requeued (lease expired): task=logs.reaped")

    t2 = T + 2 * LEASE
    (c,) = [c for c in store.claim("w2", ["default"], 2, LEASE, now=t2, start=1) if c.id == "lost"]
    store.heartbeat([], LEASE, now=t2 + 1, began=[(c.id, c.token)])
    assert tick(store, now=t2 + LEASE + 2, max_lost=2).dead_lettered == 1
    assert events(caplog, "lost")[-1] == "dead-lettered (WorkerLost)"
    assert lines(caplog, "lost")[-1].jobq["worker"] == "w2"  # type: ignore[attr-defined]

    gone_ms = 1_000
    mine = worker_queue("gone")
    store.submit(
        [
            JobSpec("fb", "logs.targeted", mine, b"[[],{}]", fallback_queue="spare"),
            JobSpec("gw", "logs.targeted", mine, b"[[],{}]"),
        ],
        now=T,
    )
    t3 = T + 10 * LEASE
    for _ in range(10):  # (the walk over the registry is bounded per tick)
        tick(store, now=t3, gone_ms=gone_ms)
        if events(caplog, "fb") and events(caplog, "gw"):
            break
    assert events(caplog, "fb") == ["fell back (worker gone)"]
    assert events(caplog, "gw") == ["dead-lettered (WorkerGone)"]
    fb = lines(caplog, "fb")[0].jobq  # type: ignore[attr-defined]
    assert (fb["task"], fb["queue"], fb["attempt"], fb["worker"]) == (
        "logs.targeted",
        "spare",
        0,
        "gone",
    )
    assert lines(caplog, "gw")[0].jobq["queue"] == mine  # type: ignore[attr-defined]
