"""Records as the API shows them: the CLI's `job_view`, with arguments and results decoded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DecodeError
from ..model import JobRecord
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
