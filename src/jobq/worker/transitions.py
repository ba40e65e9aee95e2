"""The worker's job transition log lines (logs.transition): what each attempt became.

Its own module so that the worker's core and its reporter each add one call: started (the
gate let the attempt begin; duration = its queue wait), succeeded, failed, retrying,
cancelled (the broker's reply to the outcome; duration = the run), handed back (a task this
worker lacks) and requeued (not started: the worker stops).
"""

from __future__ import annotations

import logging
import time

from ..codes import Complete, Fail
from ..logs import JOBS, transition
from ..model import Claimed, Outcome


def claimed(event: str, c: Claimed, worker: str, duration_ms: int | None = None) -> None:
    """A transition of a claimed attempt that has no outcome (started, handed back,
    requeued)."""
    transition(event, c.id, c.task, c.queue, c.attempt, worker, duration_ms, c.trace)


def started(c: Claimed, worker: str) -> None:
    """The attempt begins: its queue wait as the duration (server clock: ready to claim),
    when the claim told both."""
    wait = c.claimed_ms - c.ready_ms if c.ready_ms and c.claimed_ms else None
    claimed("started", c, worker, None if wait is None else max(0, wait))


def _became(o: Outcome, code: int) -> str:
    if o.ok:
        return "cancelled" if code == Complete.CANCELLED else "succeeded"
    if code == Fail.RETRY_SCHEDULED:
        return "retrying"
    if code == Fail.CANCELLED or o.error.get("type") == "JobCancelled":
        return "cancelled"
    return "failed"


def reported(batch: list[Outcome], codes: dict[str, int], worker: str) -> None:
    """One line per recorded outcome (refused ones are logged as discarded by the reporter)."""
    if not JOBS.isEnabledFor(logging.INFO):
        return
    for o in batch:
        code = codes.get(o.claimed.id, 0)
        if code < 0:
            continue
        c = o.claimed
        ms = int(o.runtime_s * 1000)
        transition(
            _became(o, code), c.id, c.task, c.queue, c.attempt, worker, ms, o.span or c.trace
        )


def now_ns() -> int:
    """(the completion span's start: tracing.py)"""
    return time.time_ns()
