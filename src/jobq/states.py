"""The job state machine: every state, and which transitions the Lua scripts may make.

The scripts are the only code that changes a job's state; this module is what they implement,
kept in Python so tests can check each script against it and callers can reason about states.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    SCHEDULED = "scheduled"  # waiting for its eta, a retry back-off, or its dependencies
    QUEUED = "queued"  # ready; in a queue's priority set
    RUNNING = "running"  # claimed by a worker under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # attempts exhausted, or failed without retry; sits in the dead-letter set
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE: frozenset[JobState] = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING})

# (from, to) -> the script that performs it.
TRANSITIONS: dict[tuple[JobState | None, JobState], str] = {
    (None, JobState.QUEUED): "enqueue",
    (None, JobState.SCHEDULED): "enqueue",  # eta in the future, or waiting on parents
    (None, JobState.FAILED): "enqueue",  # a parent had already failed or been cancelled
    (JobState.SCHEDULED, JobState.QUEUED): "promote",
    (JobState.QUEUED, JobState.RUNNING): "claim",
    (JobState.QUEUED, JobState.SCHEDULED): "claim",  # over a rate or concurrency limit: waits
    (JobState.RUNNING, JobState.SUCCEEDED): "complete",
    (JobState.RUNNING, JobState.SCHEDULED): "fail",  # retry after back-off
    (JobState.RUNNING, JobState.FAILED): "fail",
    (JobState.RUNNING, JobState.QUEUED): "reap",  # lease expired; also `requeue` at shutdown
    (JobState.QUEUED, JobState.CANCELLED): "cancel",
    (JobState.SCHEDULED, JobState.CANCELLED): "cancel",
    # A running job is only flagged by `cancel`; if it then stops with an error (or is
    # hard-stopped after the grace period) `fail` records it as cancelled.
    (JobState.RUNNING, JobState.CANCELLED): "fail",
    # Dependents settle when a parent ends (the `settle` helper in complete/fail/reap/cancel):
    # released to their queue when all parents succeeded, failed when one failed.
    (JobState.SCHEDULED, JobState.FAILED): "fail",  # also reap, cancel, enqueue
    (JobState.FAILED, JobState.QUEUED): "rerun",  # dead-letter re-run
}


def allowed(src: JobState | None, dst: JobState) -> bool:
    """True if the state machine permits moving from `src` to `dst`."""
    return (src, dst) in TRANSITIONS
