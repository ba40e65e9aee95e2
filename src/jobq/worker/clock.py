"""The worker's clock: every timer-driven duty of a worker (heartbeats and lease renewal, the
cancel grace, presence, the maintenance tick, the shutdown grace, report retry pauses) reads the
time and waits through one `Clock`, so a test can drive a worker with `ManualClock` and
`Worker.step(now)` instead of sleeping on the real clock.

Only the worker's own timers go through it. Times the server keeps (a lease's expiry, a delayed
job's due time, the leader lease) stay on the server's clock; a test that wants one of those to
pass gives `now=` (server milliseconds) to the store call that takes it.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

#: How often a thread waiting on a `ManualClock` looks at its event again (real seconds): the
#: event's setter cannot wake the clock's condition, so the wait polls it, boundedly.
MANUAL_POLL_S = 0.01


class Clock(Protocol):
    """The time a worker's timers read, and how its threads wait."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (the timers' reference)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for what is shown to people)."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until `event` is set (True) or `timeout` seconds of this clock passed (False)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of this clock pass."""
        ...


class SystemClock:
    """The real clocks: what a worker uses unless told otherwise."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


SYSTEM = SystemClock()


class ManualClock:
    """A clock that moves only when told (`advance`, `set`): tests step a worker with it. A
    thread waiting on it (a worker run with threads) wakes when the time passes its deadline or
    its event is set; a worker driven by `step(now)` never waits on it."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall - start
        self._cond = threading.Condition()

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def time(self) -> float:
        with self._cond:
            return self._now + self._wall_offset

    def advance(self, seconds: float) -> float:
        """Move the clock on by `seconds` (never back); returns the new time."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
            return self._now

    def set(self, now: float) -> float:
        """Move the clock on to `now` (never back); returns it."""
        with self._cond:
            if now < self._now:
                raise ValueError("a monotonic clock does not go back")
            self._now = now
            self._cond.notify_all()
            return now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        with self._cond:
            deadline = self._now + max(0.0, timeout)
            while not event.is_set():
                if self._now >= deadline:
                    return False
                self._cond.wait(MANUAL_POLL_S)
            return True

    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)
