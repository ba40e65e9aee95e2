"""OpenTelemetry spans for jobs: submit, queue wait, run and completion, in the submitter's trace.

Optional (``pip install 'jobq[otel]'``) and off by default. Only an App built with
``tracing=True`` (or with ``JOBQ_TRACING=1`` in its environment, which ``jobq worker --tracing``
sets) imports this module, and with it ``opentelemetry``: with tracing off nothing of
OpenTelemetry is imported and a job carries no trace field, so it costs nothing.

The trace context travels in the job: the submit span's W3C ``traceparent`` (and the
``tracestate``, after a newline) goes into the job hash's ``trace`` field (enqueue.lua), comes
back in the claim reply (claim.lua), and the worker's spans are its children. So a web request
that submits a job sees the job's wait, run and completion in its own trace; a job submitted
from a running task (a workflow's next step, a canvas chain or chord) is submitted under that
task's run span, and joins the same trace. Each attempt of a retried job gets its own run span,
a child of the same submit span with a link to it, so the attempts line up in one trace.

Spans use the tracer provider given to the App (``tracer_provider=``), else the global one
(``opentelemetry.trace.set_tracer_provider``): exporting is the application's choice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .model import Claimed, JobSpec, Outcome

_PROPAGATOR = TraceContextTextMapPropagator()
#: The messaging system name of the semantic conventions.
SYSTEM = "jobq"


def encode(carrier: dict[str, str]) -> str:
    """A propagator's carrier as the job's ``trace`` field: traceparent, then a newline and
    the tracestate if any ('' without a traceparent)."""
    parent = carrier.get("traceparent", "")
    if not parent:
        return ""
    state = carrier.get("tracestate", "")
    return f"{parent}\n{state}" if state else parent


def decode(field: str) -> dict[str, str]:
    """The job's ``trace`` field as a propagator's carrier."""
    if not field:
        return {}
    parent, _, state = field.partition("\n")
    return {"traceparent": parent, "tracestate": state} if state else {"traceparent": parent}


def _ns(ms: int) -> int:
    return ms * 1_000_000


def _attributes(task: str, queue: str, job_id: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "jobq.task": task,
    }


class Tracing:
    """The spans of one App (client side: submit; worker side: queue wait, run, completion)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("jobq", tracer_provider=tracer_provider)

    # -- client side ------------------------------------------------------------------------

    @contextlib.contextmanager
    def submitting(self, task: str, queue: str, n: int = 1) -> Iterator[str]:
        """A producer span around a submit (of `n` jobs); yields the trace field the jobs
        carry (the span's context), so the worker's spans are its children."""
        attrs: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "jobq.task": task,
        }
        if n != 1:
            attrs["messaging.batch.message_count"] = n
        with self.tracer.start_as_current_span(
            f"submit {task}", kind=SpanKind.PRODUCER, attributes=attrs
        ):
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            yield encode(carrier)

    @staticmethod
    def with_trace(spec: JobSpec, field: str) -> JobSpec:
        """`spec` carrying `field` (kept if it already carries one: a prepared spec's own)."""
        if spec.trace or not field:
            return spec
        return replace(spec, trace=field)

    # -- worker side ------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, c: Claimed) -> Iterator[Callable[[Outcome], Outcome]]:
        """Record the queue wait (its start and end from the claim: server clock), then run
        the attempt in a consumer span, current while the task runs (so jobs it submits join
        the trace; also across an `await`). Yields `done`, which the runner calls with the
        outcome: a failed attempt sets the span's status to error with the exception's event,
        and `done` returns the outcome with the run span's traceparent (`Outcome.span`)."""
        parent: Context | None = _PROPAGATOR.extract(decode(c.trace)) if c.trace else None
        attrs = _attributes(c.task, c.queue, c.id)
        attrs["jobq.attempt"] = c.attempt
        if c.ready_ms and c.claimed_ms:
            wait = self.tracer.start_span(
                f"wait {c.task}",
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=attrs,
                start_time=_ns(c.ready_ms),
            )
            wait.end(end_time=_ns(max(c.claimed_ms, c.ready_ms)))
        links = []
        if parent is not None:
            sc = trace.get_current_span(parent).get_span_context()
            if sc.is_valid:
                links.append(Link(sc, {"jobq.attempt": c.attempt}))
        with self.tracer.start_as_current_span(
            f"run {c.task}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attrs,
            links=links,
        ) as span:

            def done(outcome: Outcome) -> Outcome:
                if not outcome.ok:
                    e = outcome.error
                    span.add_event(
                        "exception",
                        {
                            "exception.type": str(e.get("type", "")),
                            "exception.message": str(e.get("message", "")),
                            "exception.stacktrace": str(e.get("traceback", "")),
                        },
                    )
                    why = f"{e.get('type')}: {e.get('message')}"
                    span.set_status(Status(StatusCode.ERROR, why))
                    span.set_attribute("jobq.retry", outcome.retry_delay_ms >= 0)
                carrier: dict[str, str] = {}
                _PROPAGATOR.inject(carrier)
                return replace(outcome, span=encode(carrier))

            yield done

    def completed(self, outcomes: list[Outcome], codes: dict[str, int], began_ns: int) -> None:
        """One completion span per outcome (the report to the broker, from `began_ns`), a
        child of its run span (else of its submit span), with the broker's reply code."""
        end = time.time_ns()
        for o in outcomes:
            field = o.span or o.claimed.trace
            ctx = _PROPAGATOR.extract(decode(field)) if field else None
            c = o.claimed
            attrs = _attributes(c.task, c.queue, c.id)
            attrs["jobq.attempt"] = c.attempt
            attrs["jobq.outcome"] = "succeeded" if o.ok else "failed"
            attrs["jobq.reply"] = codes.get(c.id, 0)
            span = self.tracer.start_span(
                f"complete {c.task}",
                context=ctx,
                kind=SpanKind.CLIENT,
                attributes=attrs,
                start_time=began_ns,
            )
            if not o.ok:
                span.set_status(Status(StatusCode.ERROR, str(o.error.get("type", ""))))
            span.end(end_time=end)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span (hex), None outside a recording one."""
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        return None
    return format(sc.trace_id, "032x"), format(sc.span_id, "016x")
