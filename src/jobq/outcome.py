"""What a finished wait means to its caller: the job's value, or the error the job ended with.

One definition for both flavours of waiting (`Job.result` and `Job.aresult`): whichever way the
record was obtained, the caller gets the same value or the same exception.
"""

from __future__ import annotations

from typing import Any

from .errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from .model import JobRecord
from .serde import Serializer
from .states import JobState


def settle(
    serializer: Serializer, job_id: str, rec: JobRecord | None, timeout: float | None
) -> Any:
    """The value of a job whose wait ended with `rec` (None: no such job); raises `JobFailed`,
    `JobCancelled`, `JobNotFound`, or `ResultTimeout` when it is still unfinished after
    `timeout` seconds."""
    if rec is None:
        raise JobNotFound(f"no job {job_id} (never submitted, or its result expired)")
    if rec.state == JobState.SUCCEEDED:
        return serializer.decode_result(rec.result or b"[null]")
    if rec.state == JobState.FAILED:
        e = rec.error or {}
        raise JobFailed(
            job_id, e.get("type", "Error"), e.get("message", ""), e.get("traceback", "")
        )
    if rec.state == JobState.CANCELLED:
        raise JobCancelled(f"job {job_id} was cancelled")
    raise ResultTimeout(f"job {job_id} still {rec.state} after {timeout}s")
