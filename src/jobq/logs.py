"""Logging set-up shared by every jobq entry point: untrusted text cannot forge a log line.

Job ids, task and queue names, worker names and error messages reach log records from users
and tasks. `EscapeControls` rewrites each record's message with its control characters escaped
(``\\n`` becomes the two characters ``\\`` ``n``), so one record is always one line; tracebacks
(``exc_info``) keep their own line breaks, which come from Python, not from the input.

Job transitions (started, succeeded, failed, retrying, cancelled, handed back, requeued) are
logged by `transition` on the ``jobq.jobs`` logger at info, one line each with the job id,
task, queue, attempt, worker and duration, for operators to follow a job; the client's submit
path logs nothing at info (a library must not flood its application's log). As text by
default; as JSON lines (`JsonFormatter`: every field its own key, with ``trace_id`` and
``span_id`` when the job is traced, so logs join traces) with ``JOBQ_LOG_FORMAT=json`` or
``--log-format json`` on ``jobq worker`` and ``jobq master``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from typing import Any

import orjson

from .names import escape_controls

#: The logger of job transitions (`transition`).
JOBS = logging.getLogger("jobq.jobs")
FORMATS = ("text", "json")


class EscapeControls(logging.Filter):
    """A handler filter that escapes control characters in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = escape_controls(message)
        if safe is not message:
            record.msg, record.args = safe, None
        return True


def install_escaping(logger: logging.Logger | None = None) -> None:
    """Add `EscapeControls` to every handler of `logger` (default: the root logger) that lacks
    it. Call after configuring handlers (e.g. after ``logging.basicConfig``)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, EscapeControls) for f in handler.filters):
            handler.addFilter(EscapeControls())


def configure(level: int, fmt: str | None = None, datefmt: str | None = None) -> None:
    """`logging.basicConfig` with control characters escaped in every message (JSON lines
    instead of `fmt` when JOBQ_LOG_FORMAT=json)."""
    if fmt is None:
        logging.basicConfig(level=level)
    else:
        logging.basicConfig(level=level, format=fmt, datefmt=datefmt)
    install_escaping()
    if os.environ.get("JOBQ_LOG_FORMAT", "").strip().lower() == "json":
        use_format("json")


def use_format(name: str) -> None:
    """Format every handler of the root logger as `name`: "json" (`JsonFormatter`) or "text"
    (left as configured)."""
    if name not in FORMATS:
        raise ValueError(f"unknown log format {name!r} (give one of {', '.join(FORMATS)})")
    if name == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())


def ids_of(trace: str) -> tuple[str, str] | None:
    """(trace id, span id) of a job's trace field or a traceparent (hex), None without one:
    string work only, so a log line joins its trace without importing OpenTelemetry."""
    parts = trace.partition("\n")[0].split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return parts[1], parts[2]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601 UTC), level, logger, message, the fields of
    a transition (`transition`), trace_id/span_id (of the job, else of the current span when
    tracing is on), and the traceback if any. JSON escapes control characters itself."""

    def format(self, record: logging.LogRecord) -> str:
        t = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "time": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "jobq", None)
        if isinstance(fields, dict):
            out.update(fields)
        if "trace_id" not in out:
            tracing = sys.modules.get("jobq.tracing")  # (loaded only when tracing is on)
            ids = tracing.current_ids() if tracing is not None else None
            if ids:
                out["trace_id"], out["span_id"] = ids
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def transition(
    event: str,
    job: str,
    task: str,
    queue: str,
    attempt: int,
    worker: str,
    duration_ms: int | None = None,
    trace: str = "",
) -> None:
    """Log one job transition on `JOBS` at info: ``job <id> <event>: task=... queue=...
    attempt=... worker=... duration_ms=...`` (``-`` when no duration applies), the fields also
    on the record (``record.jobq``) for `JsonFormatter`, with the trace ids of `trace`."""
    if not JOBS.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "event": event,
        "job_id": job,
        "task": task,
        "queue": queue,
        "attempt": attempt,
        "worker": worker,
        "duration_ms": duration_ms,
    }
    ids = ids_of(trace) if trace else None
    if ids:
        fields["trace_id"], fields["span_id"] = ids
    JOBS.info(
        "job %s %s: task=%s queue=%s attempt=%d worker=%s duration_ms=%s",
        job,
        event,
        task,
        queue,
        attempt,
        worker,
        "-" if duration_ms is None else duration_ms,
        extra={"jobq": fields},
    )
