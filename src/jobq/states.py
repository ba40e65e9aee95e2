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

# (from, to) -> every script that performs it (docs/design.md says when each does).
TRANSITIONS: dict[tuple[JobState | None, JobState], tuple[str, ...]] = {
    (None, JobState.QUEUED): ("enqueue",),
    (None, JobState.SCHEDULED): ("enqueue",),  # eta in the future, or waiting on parents
    (None, JobState.FAILED): ("enqueue",),  # a parent had already failed or been cancelled
    # Due; a last parent succeeded; a concurrency slot freed; a remote parent delivered.
    (JobState.SCHEDULED, JobState.QUEUED): ("promote", "complete", "deliver"),
    (JobState.QUEUED, JobState.RUNNING): ("claim",),
    (JobState.QUEUED, JobState.SCHEDULED): ("claim",),  # over a rate or concurrency limit: waits
    # A malformed job or queue at claim; its named worker gone, no fallback (orphans).
    (JobState.QUEUED, JobState.FAILED): ("claim", "orphans"),
    (JobState.QUEUED, JobState.QUEUED): ("orphans",),  # moved to its fallback queue
    (JobState.RUNNING, JobState.SUCCEEDED): ("complete",),
    # A retry after back-off; handed back by a worker lacking the task (attempt not counted).
    (JobState.RUNNING, JobState.SCHEDULED): ("fail", "handback"),
    # No attempts left; the last loss of its worker (reap); no live worker knows the task.
    (JobState.RUNNING, JobState.FAILED): ("fail", "reap", "handback"),
    (JobState.RUNNING, JobState.QUEUED): ("reap", "requeue"),  # lease expired; shutdown
    (JobState.QUEUED, JobState.CANCELLED): ("cancel", "purge"),
    (JobState.SCHEDULED, JobState.CANCELLED): ("cancel",),
    # A running job is only flagged by `cancel`; whatever outcome then comes (returned,
    # raised, stopped after the grace), `complete` or `fail` ends it cancelled.
    (JobState.RUNNING, JobState.CANCELLED): ("complete", "fail"),
    # Dependents settle when a parent ends (the `settle` helper in complete/fail/reap/cancel):
    # released to their queue when all parents succeeded, failed when one failed.
    (JobState.SCHEDULED, JobState.FAILED): ("fail", "reap", "cancel", "deliver"),
    (JobState.FAILED, JobState.QUEUED): ("rerun",),  # dead-letter re-run
}


def allowed(src: JobState | None, dst: JobState) -> bool:
    """True if the state machine permits moving from `src` to `dst`."""
    return (src, dst) in TRANSITIONS
