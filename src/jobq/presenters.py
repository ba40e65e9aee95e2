"""Plain views of records for people and JSON (CLI today, HTTP later)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .model import JobRecord


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
