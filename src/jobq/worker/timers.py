"""The worker's timer-driven duties that are not heartbeats (those are `leases.LeaseKeeper.beat`):
the cancel grace and the maintenance tick, each a small state machine asked "what is due at
`now`?" on the worker's clock. `Worker.step(now)` runs them once; `Worker.run()` runs the same
methods from its threads (`LeaseKeeper.run` for cancels, `MaintenanceTimer.run` for the tick).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ..maintenance import Maintainer, TickReport
from .clock import Clock

log = logging.getLogger("jobq.worker")

NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one `Worker.step` did (counts), so a test asserts on it instead of on timing."""

    claimed: int = 0
    """Jobs claimed and handed to the pool."""
    reported: int = 0
    """Outcomes recorded on the server (or discarded as refused)."""
    heartbeats: int = 0
    """Full heartbeats: leases extended, presence published, cancel requests read."""
    marks: int = 0
    """Begin marks sent for prefetched jobs that started."""
    fenced: int = 0
    """Attempts whose lease the heartbeat found gone."""
    cancels_stopped: int = 0
    """Attempts hard-stopped because their cancel grace ran out."""
    ticked: bool = False
    """Whether the maintenance tick ran (it runs only while no master is alive)."""
    tick: TickReport | None = None
    """What the tick did, when this worker led maintenance."""
    stopped: bool = False
    """The worker has shut down (after `stop()`: nothing left in flight, or the grace ran out)."""


class CancelWatch:
    """The cancel grace: a job asked to cancel gets `grace_s` (from when a heartbeat first
    reported the request) to stop by itself (`current_job().cancelled()`); then it is stopped
    where the pool can. A pool that cannot stop it now is asked again every `retry_s`."""

    def __init__(self, grace_s: float, retry_s: float) -> None:
        self.grace_s = grace_s
        self.retry_s = retry_s
        self.lock = threading.Lock()
        self.deadlines: dict[str, float] = {}  # job id -> when to stop it (NEVER: stopped)

    def note(self, requested: set[str], now: float) -> None:
        """A full heartbeat's cancel requests among the jobs in flight: new ones start their
        grace at `now`; requests no longer reported (the job ended) are forgotten."""
        with self.lock:
            for job_id in list(self.deadlines):
                if job_id not in requested:
                    del self.deadlines[job_id]
            for job_id in requested:
                self.deadlines.setdefault(job_id, now + self.grace_s)

    def next_due(self) -> float:
        """When the next grace runs out (NEVER if none is running)."""
        with self.lock:
            return min(self.deadlines.values(), default=NEVER)

    def overdue(self, now: float) -> list[str]:
        """Jobs whose grace has run out at `now` (the caller stops them, then calls `tried`)."""
        with self.lock:
            return [j for j, at in self.deadlines.items() if at <= now]

    def tried(self, job_id: str, stopped: bool, now: float) -> None:
        """Record a hard stop: done (never again), or the pool could not: ask it again later."""
        with self.lock:
            if job_id in self.deadlines:
                self.deadlines[job_id] = NEVER if stopped else now + self.retry_s


class MaintenanceTimer:
    """Paces a worker's `Maintainer`: one `step` every `tick_ms` (longer while the broker
    fails, with the maintainer's back-off). The maintainer itself leads only while no master
    is alive."""

    def __init__(self, maintainer: Maintainer, clock: Clock) -> None:
        self.maintainer = maintainer
        self.clock = clock
        self.next_at = -NEVER  # due at once
        self.stop_event = maintainer.stop_event

    def run_due(self, now: float) -> tuple[bool, TickReport | None]:
        """Step the maintainer if its tick is due at `now`: (ran, its report). Never raises."""
        if now < self.next_at:
            return False, None
        m = self.maintainer
        report: TickReport | None = None
        try:
            report = m.step()
        except Exception as exc:  # the tick must outlive anything (see Maintainer.run)
            pause = max(m.tick_ms / 1000, m.outage.failed(exc))
        else:
            m.outage.ok()
            pause = m.tick_ms / 1000
        self.next_at = now + pause
        return True, report

    def run(self) -> None:
        """The maintenance thread of `Worker.run`: tick when due until stopped, then give
        the leader lease up."""
        try:
            while not self.stop_event.is_set():
                now = self.clock.monotonic()
                self.run_due(now)
                self.clock.wait(self.stop_event, self.next_at - now)
        finally:
            self.maintainer.release()

    def start_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="jobq-maintenance", daemon=True)
        t.start()
        self.maintainer.thread = t
        return t
