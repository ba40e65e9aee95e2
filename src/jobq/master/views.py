"""Records as the API shows them: the CLI's `job_view`, with arguments and results decoded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from ..errors import DecodeError
from ..model import JobRecord, WorkerInfo
from ..presenters import job_view
from ..serde import Serializer
from ..states import JobState

SUMMARY_FIELDS = (
    "id", "task", "queue", "state", "priority", "attempt", "max_attempts", "worker",
    "created", "claimed", "started", "finished", "eta", "corrupt",
)  # fmt: skip


def job_summary(rec: JobRecord) -> dict[str, Any]:
    """A job in a list: no payload, result or error."""
    view = job_view(rec)
    return {k: view[k] for k in SUMMARY_FIELDS}


def job_detail(
    rec: JobRecord, serializer: Serializer, parent_states: Sequence[JobState | None] = ()
) -> dict[str, Any]:
    """A job with its arguments and result decoded (raw text kept if they cannot be), its
    parents (with `parent_states`, read by the caller, for the first of them) and progress."""
    out = job_summary(rec)
    out["timeout"] = rec.timeout_ms / 1000 if rec.timeout_ms else None
    out["cancel_requested"] = rec.cancel_requested
    out["args"] = out["kwargs"] = out["payload"] = None
    try:
        out["args"], out["kwargs"] = serializer.decode_args(rec.payload)
    except DecodeError:
        out["payload"] = rec.payload.decode("utf-8", "replace")
    out["result"] = decode_result(rec, serializer)
    out["error"] = rec.error
    out["parents"] = list(rec.parents)
    out["dependencies"] = [
        {"id": p, "state": st.value if st else None}
        for p, st in zip(rec.parents, parent_states, strict=False)
    ]
    out["progress"] = rec.progress
    out["progress_message"] = rec.progress_message or None
    out["unique_key"] = rec.unique_key
    return out


def decode_result(rec: JobRecord, serializer: Serializer) -> Any:
    """The job's result value (None if none yet), or its raw text if undecodable here."""
    if not rec.result:
        return None
    try:
        return serializer.decode_result(rec.result)
    except DecodeError:
        return rec.result.decode("utf-8", "replace")


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def worker_out(w: WorkerInfo) -> dict[str, Any]:
    """A worker as the API shows it (`WorkerOut`): liveness, its registry entry, its current
    jobs, and its history (start, uptime, attempts succeeded/failed, slots busy/free) read from
    the entry's fields; a field an older worker does not publish (or garbage) reads as null.
    Uptime is the server clock now (last seen + how long ago) minus its start."""
    info = w.info
    started = _int_or_none(info.get("started"))
    concurrency = _int_or_none(info.get("concurrency"))
    inflight = _int_or_none(info.get("inflight"))
    busy = None if inflight is None else max(inflight, 0)
    if busy is not None and concurrency is not None:
        busy = min(busy, concurrency)  # (in flight counts prefetched jobs: not a slot each)
    now_ms = w.last_seen_ms + w.seen_ago_ms
    return {
        "name": w.name,
        "alive": w.alive,
        "state": "alive" if w.alive else "gone",
        "seen_ago_s": round(w.seen_ago_ms / 1000, 3),
        "last_seen": _iso_ms(w.last_seen_ms) if w.last_seen_ms else None,
        "info": info,
        "jobs": w.jobs,
        "started": _iso_ms(started) if started else None,
        "uptime_s": round(max(now_ms - started, 0) / 1000, 3) if started and now_ms else None,
        "succeeded": _int_or_none(info.get("succeeded")),
        "failed": _int_or_none(info.get("failed")),
        "concurrency": concurrency,
        "busy": busy,
        "free": max(concurrency - busy, 0)
        if concurrency is not None and busy is not None
        else None,
    }
