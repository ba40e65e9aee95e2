"""OpenTelemetry (tracing.py): the submitter's trace context travels in the job to a real worker
on a real Valkey; spans submit / wait / run / complete in one trace, linked across retries and
workflow steps; and with tracing off nothing of OpenTelemetry is imported and the job carries
no trace field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from inprocess import deployment
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobq import App
from jobq.canvas import chain
from jobq.errors import JobFailed
from jobq.worker import Worker

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(url: str, prefix: str, exporter: InMemorySpanExporter) -> Iterator[App]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    a = App(url, prefix=prefix, tracing=True, tracer_provider=provider)
    yield a
    a.close()
    provider.shutdown()


def spans_of(exporter: InMemorySpanExporter, want: int, timeout: float = 10) -> list[ReadableSpan]:
    """The finished spans once `want` of them are in (the completion span ends after the
    result is visible to the waiter)."""
    until = time.monotonic() + timeout
    while True:
        got = list(exporter.get_finished_spans())
        if len(got) >= want or time.monotonic() > until:
            return got
        time.sleep(0.02)


def named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def ctx(s: ReadableSpan) -> Any:
    assert s.context is not None
    return s.context


def parent_id(s: ReadableSpan) -> int | None:
    return s.parent.span_id if s.parent is not None else None


def test_spans_from_submit_to_completion_join_the_callers_trace(
    traced: App, exporter: InMemorySpanExporter, rclient: redis.Redis
) -> None:
    @traced.task(name="trace.add")
    def add(a: int, b: int) -> int:
        return a + b

    tracer = traced.tracing.tracer if traced.tracing else None
    assert tracer is not None
    with deployment(traced):
        with tracer.start_as_current_span("web request") as request:
            job = add.submit(2, 3)
        assert job.result(timeout=10) == 5
        spans = spans_of(exporter, 5)
    raw = rclient.hget(traced.keys.job(job.id), "trace")
    assert raw is not None and raw.decode().startswith("00-")
    (req,) = named(spans, "web request")
    (submit,) = named(spans, "submit trace.add")
    (wait,) = named(spans, "wait trace.add")
    (run,) = named(spans, "run trace.add")
    (done,) = named(spans, "complete trace.add")
    trace_id = ctx(request).trace_id
    for s in (req, submit, wait, run, done):
        assert ctx(s).trace_id == trace_id, s.name
    assert submit.kind is SpanKind.PRODUCER and parent_id(submit) == ctx(req).span_id
    assert run.kind is SpanKind.CONSUMER and parent_id(run) == ctx(submit).span_id
    assert parent_id(wait) == ctx(submit).span_id
    assert parent_id(done) == ctx(run).span_id
    assert wait.start_time is not None and wait.end_time is not None
    assert wait.start_time <= wait.end_time
    assert run.attributes is not None
    assert run.attributes["messaging.message.id"] == job.id
    assert run.attributes["jobq.attempt"] == 1
    assert run.status.status_code is not StatusCode.ERROR


def test_each_attempt_of_a_retried_job_links_to_the_submit(
    traced: App, exporter: InMemorySpanExporter
) -> None:
    calls: list[int] = []

    @traced.task(name="trace.flaky", retries=1, backoff=0.01)
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first attempt fails")
        return "ok"

    @traced.task(name="trace.broken")
    def broken() -> None:
        raise RuntimeError("always")

    with deployment(traced):
        job = flaky.submit()
        assert job.result(timeout=15) == "ok"
        bad = broken.submit()
        with pytest.raises(JobFailed):
            bad.result(timeout=10)
        spans = spans_of(exporter, 11)
    (submit,) = named(spans, "submit trace.flaky")
    runs = sorted(named(spans, "run trace.flaky"), key=lambda s: s.start_time or 0)
    assert len(runs) == 2
    for attempt, run in enumerate(runs, 1):
        assert ctx(run).trace_id == ctx(submit).trace_id
        assert parent_id(run) == ctx(submit).span_id
        assert [link.context.span_id for link in run.links] == [ctx(submit).span_id]
        assert run.attributes is not None and run.attributes["jobq.attempt"] == attempt
    assert runs[0].status.status_code is StatusCode.ERROR
    assert [e.name for e in runs[0].events] == ["exception"]
    assert runs[0].events[0].attributes is not None
    assert runs[0].events[0].attributes["exception.type"] == "ValueError"
    assert runs[1].status.status_code is not StatusCode.ERROR
    assert len(named(spans, "wait trace.flaky")) == 2
    (bad_run,) = named(spans, "run trace.broken")
    assert bad_run.status.status_code is StatusCode.ERROR
    (bad_done,) = named(spans, "complete trace.broken")
    assert bad_done.status.status_code is StatusCode.ERROR


def test_workflow_steps_join_the_trace(traced: App, exporter: InMemorySpanExporter) -> None:
    @traced.task(name="trace.leaf")
    def leaf(x: int) -> int:
        return x * 10

    @traced.task(name="trace.fanout")
    def fanout() -> str:
        return leaf.submit(1).id  # a child submitted from a running task

    @traced.task(name="trace.inc")
    def inc(x: int) -> int:
        return x + 1

    tracer = traced.tracing.tracer if traced.tracing else None
    assert tracer is not None
    with deployment(traced):
        with tracer.start_as_current_span("request a"):
            child_id = fanout.submit().result(timeout=10)
        assert traced.job(child_id).result(timeout=10) == 10
        with tracer.start_as_current_span("request b"):
            last = chain(inc.s(1), inc.s(), inc.s()).submit()
        assert last.result(timeout=10) == 4
        spans = spans_of(exporter, 20)
    (req_a,) = named(spans, "request a")
    (parent_run,) = named(spans, "run trace.fanout")
    (child_submit,) = named(spans, "submit trace.leaf")
    (child_run,) = named(spans, "run trace.leaf")
    assert ctx(child_submit).trace_id == ctx(req_a).trace_id
    assert parent_id(child_submit) == ctx(parent_run).span_id
    assert parent_id(child_run) == ctx(child_submit).span_id
    (req_b,) = named(spans, "request b")
    (chain_submit,) = named(spans, "submit trace.inc")
    runs = named(spans, "run trace.inc")
    assert len(runs) == 3
    assert {ctx(r).trace_id for r in runs} == {ctx(req_b).trace_id}
    assert {parent_id(r) for r in runs} == {ctx(chain_submit).span_id}


# OpenTelemetry made unimportable (as without the extra): redis-py imports it by itself when
# it is installed, so "not imported" is checked as "never needed" plus the static test below.
OFF_SCRIPT = """
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Blocked())
sys.path.insert(0, sys.argv[3])
from inprocess import deployment
from jobq import App

app = App(sys.argv[1], prefix=sys.argv[2])

@app.task(name="trace.off")
def off(x):
    return x

with deployment(app):
    job = off.submit(7)
    assert job.result(timeout=10) == 7
    many = app.submit_many("trace.off", [((1,), {}), ((2,), {})])
    for j in many:
        j.result(timeout=10)
    fields = sorted(k.decode() for k in app.store.r.hgetall(app.keys.job(job.id)))
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") or m == "jobq.tracing")
app.close()
print(json.dumps({"loaded": loaded, "fields": fields, "tracing": app.tracing is None}))
"""


def test_tracing_off_imports_nothing_and_leaves_no_field(url: str, prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOBQ_TRACING"}
    proc = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, url, prefix, str(TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["tracing"] is True
    assert "trace" not in out["fields"] and "state" in out["fields"]


def test_only_tracing_py_imports_opentelemetry_and_only_lazily() -> None:
    src = TESTS.parent / "src" / "jobq"
    for path in src.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(src).as_posix()
        if rel != "tracing.py":
            assert "import opentelemetry" not in text and "from opentelemetry" not in text, rel
        for line in text.splitlines():
            if "from .tracing import" in line or "from ..tracing import" in line:
                # (only inside a function or under TYPE_CHECKING: indented)
                assert line.startswith(" "), f"{rel}: {line}"


def test_a_traced_submit_outside_any_span_starts_a_trace(
    traced: App, exporter: InMemorySpanExporter, rclient: redis.Redis
) -> None:
    job = traced.submit("trace.nobody", (1,))
    (submit,) = named(spans_of(exporter, 1), "submit trace.nobody")
    raw = rclient.hget(traced.keys.job(job.id), "trace")
    assert raw is not None
    assert raw.decode().split("-")[1] == format(ctx(submit).trace_id, "032x")
    assert submit.parent is None


def test_the_async_pool_runs_tasks_in_their_run_span(
    traced: App, exporter: InMemorySpanExporter
) -> None:
    from opentelemetry import trace

    seen: list[int] = []

    @traced.task(name="trace.coro")
    async def coro() -> int:
        seen.append(trace.get_current_span().get_span_context().span_id)
        return 1

    w = Worker(traced, pool="async", concurrency=2, maintenance=False, grace_s=5)
    t = threading.Thread(target=w.run, name="test-async-worker", daemon=True)
    t.start()
    try:
        assert traced.submit("trace.coro").result(timeout=10) == 1
        spans = spans_of(exporter, 4)
    finally:
        w.stop()
        t.join(30)
    (run,) = named(spans, "run trace.coro")
    assert seen == [ctx(run).span_id]
    (done,) = named(spans, "complete trace.coro")
    assert parent_id(done) == ctx(run).span_id
