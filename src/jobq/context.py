"""The running job's context: `current_job()` inside a task gives its id, attempt and fencing
token, and the calls by which it reports back (progress, has a cancel been asked?).

The worker sets it around each call (`set_current` / `reset_current`); a contextvar, so each
thread and each asyncio task sees its own job.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from .job import JobHost
from .values import fraction as check_fraction


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running task may know about its own attempt, and how it reports back."""

    id: str
    attempt: int
    token: str
    """Fencing token: strictly increasing per attempt; pass it to side effects (e.g. a
    conditional database write) so a stale attempt cannot overwrite a newer one."""
    queue: str
    app: JobHost | None = None

    def cancelled(self) -> bool:
        """True once someone asked to cancel this job: stop early and return or raise."""
        return self.app is not None and self.app.store.cancel_requested(self.id)

    def progress(self, fraction: float, message: str = "") -> bool:
        """Report progress (0..1 and a note), shown by `jobq status`; False if this attempt
        no longer owns the job (its lease was lost), a hint to stop. A fraction outside
        [0, 1], NaN or an infinity raises `InvalidOption`."""
        fraction = check_fraction(fraction)
        if self.app is None:
            return False
        return self.app.store.progress(self.id, self.token, fraction, message)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "jobq_current", default=None
)


def current_job() -> JobContext | None:
    """The job the calling task is running as, or None outside a worker."""
    return _current.get()


def set_current(ctx: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(ctx)


def reset_current(token: contextvars.Token[JobContext | None]) -> None:
    _current.reset(token)
