"""Plain views of records for people and for JSON (the CLI, and the shapes the HTTP API shares):
what `operations.py` returns, turned into lines. No I/O here: the commands print."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from .model import JobRecord, QueueInfo
from .periodic import PeriodicSpec
from .reads import GONE_LISTED_MS

#: What an empty listing prints (to stderr, so stdout stays empty for scripts).
EMPTY = {
    "dead": "no dead-lettered jobs",
    "queues": "no queues yet (nothing was submitted under this prefix)",
    "workers": f"no workers seen in the last {GONE_LISTED_MS // 60_000} minutes",
    "periodic": "no periodic jobs",
}


def _ts(ms: int | None) -> str | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def job_view(rec: JobRecord) -> dict[str, Any]:
    """A JSON-ready dict of a job (payload and result left encoded as text)."""
    return {
        "id": rec.id,
        "task": rec.task,
        "queue": rec.queue,
        "state": rec.state.value,
        "priority": rec.priority,
        "attempt": rec.attempt,
        "max_attempts": rec.max_attempts,
        "worker": rec.worker,
        "created": _ts(rec.created_ms),
        "claimed": _ts(rec.claimed_ms),
        "started": _ts(rec.started_ms),
        "finished": _ts(rec.finished_ms),
        "eta": _ts(rec.eta_ms),
        "args": rec.payload.decode("utf-8", "replace"),
        "result": rec.result.decode("utf-8", "replace") if rec.result else None,
        "error": rec.error,
        "progress": rec.progress,
        "progress_message": rec.progress_message,
        "corrupt": rec.corrupt,
    }


def age(ms: int, now_ms: int) -> str:
    """How long ago (or, for a future time, in how long) `ms` is, for people: 4 s, 3 min, 2 h."""
    delta = (now_ms - ms) / 1000
    s = abs(delta)
    if s < 60:
        text = f"{s:.0f} s"
    elif s < 3600:
        text = f"{s / 60:.0f} min"
    elif s < 86400:
        text = f"{s / 3600:.1f} h"
    else:
        text = f"{s / 86400:.1f} d"
    return f"{text} ago" if delta >= 0 else f"in {text}"


def when(ms: int | None, now_ms: int) -> str | None:
    """ISO-8601 UTC with its age: ``2026-01-02T03:04:05.678Z (12 s ago)``."""
    if not ms:
        return None
    iso = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
    return f"{iso.replace('+00:00', 'Z')} ({age(ms, now_ms)})"


def status_lines(rec: JobRecord, now_ms: int | None = None) -> list[str]:
    """`jobq status ID` for people: aligned ``key: value`` lines, times in UTC with their
    age, the error's traceback as real lines, the progress as a percentage."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows: list[tuple[str, Any]] = [
        ("id", rec.id),
        ("task", rec.task),
        ("queue", rec.queue),
        ("state", rec.state.value),
        ("priority", rec.priority),
        ("attempt", f"{rec.attempt} of {rec.max_attempts}"),
        ("worker", rec.worker),
        ("created", when(rec.created_ms, now)),
        ("eta", when(rec.eta_ms, now)),
        ("started", when(rec.started_ms, now)),
        ("finished", when(rec.finished_ms, now)),
    ]
    if rec.progress is not None:
        msg = f" {rec.progress_message}" if rec.progress_message else ""
        rows.append(("progress", f"{rec.progress * 100:.0f}%{msg}"))
    rows.append(("args", rec.payload.decode("utf-8", "replace")))
    if rec.result:
        rows.append(("result", rec.result.decode("utf-8", "replace")))
    err = rec.error or {}
    if err:
        rows.append(("error", f"{err.get('type', 'Error')}: {err.get('message', '')}"))
    if rec.corrupt:
        rows.append(("corrupt", rec.corrupt))
    tb = str(err.get("traceback") or "").rstrip()
    width = max([len(k) for k, _ in rows] + ([len("traceback")] if tb else []))
    lines = [f"{k:>{width}}: {v}" for k, v in rows if v not in (None, "")]
    if tb:
        lines.append(f"{'traceback':>{width}}:")
        lines.extend("    " + line for line in tb.splitlines())
    return lines


def status_json(rec: JobRecord) -> str:
    return json.dumps(job_view(rec))


QUEUE_COLUMNS = (
    "queue",
    "queued",
    "scheduled",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "retried",
)


def queue_lines(rows: list[QueueInfo], dead: int) -> list[str]:
    """`jobq queues`: a header and one row per queue, then the dead-letter count."""
    width = max([10, *(len(q.name) for q in rows)])
    out = [" ".join(f"{c:>{width if i == 0 else 10}}" for i, c in enumerate(QUEUE_COLUMNS))]
    for q in rows:
        vals = [
            q.name,
            q.queued,
            q.scheduled,
            q.running,
            q.succeeded,
            q.failed,
            q.cancelled,
            q.retried,
        ]
        out.append(" ".join(f"{v!s:>{width if i == 0 else 10}}" for i, v in enumerate(vals)))
    out.append(f"dead-lettered: {dead}")
    return out


def dead_line(job_id: str, rec: JobRecord | None) -> str:
    err = (rec.error or {}) if rec else {}
    task = rec.task if rec else "?"
    return f"{job_id}  {task}  {err.get('type')}: {err.get('message')}"


def periodic_line(spec: PeriodicSpec, due_ms: int | None) -> str:
    when_text = (
        dt.datetime.fromtimestamp(due_ms / 1000, dt.UTC).isoformat(timespec="seconds")
        if due_ms
        else "-"
    )
    sched = spec.cron if spec.cron else f"every {spec.every_s:g}s"
    return f"{spec.name:<24} {spec.task:<20} {sched:<16} next {when_text}  ({spec.missed})"


#: What `jobq cancel` says for each `operations.CancelResult.outcome`.
CANCEL_TEXT = {
    "cancelled": "cancelled",
    "requested": "cancel requested (job is running; it stops at its next check or after the "
    "cancel grace)",
    "finished": "not cancelled: the job already finished",
}


def cancel_text(outcome: str, state: str) -> str:
    text = CANCEL_TEXT[outcome]
    return f"{text} ({state})" if outcome == "finished" and state else text


def summary(counts: dict[str, int]) -> str:
    """``3 succeeded, 1 failed``: how a set of followed jobs ended."""
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"
