"""How a background loop lives through broker trouble: back off, log once per episode, resume.

Every loop that talks to the broker (a worker's claim loop, reporter and heartbeat, the
maintenance loop, the master's event reader and rate sampler) keeps one `Outage`. A failed
attempt calls `failed(exc)` and sleeps the pause it returns; a successful one calls `ok()`.
The log then reads "lost Valkey ... (reason); retrying" once when an episode starts (again only
if the reason changes, e.g. connection refused, then LOADING), and "Valkey back after 4.2 s"
when it ends, however many retries there were. Unexpected exceptions (a bug, not the broker)
are logged with their traceback, once per episode too, and the loop carries on: no background
thread dies of an error.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from .errors import BrokerError


class Outage:
    """One loop's current episode of failures, and its back-off."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        first_s: float = 0.1,
        cap_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.first_s = first_s
        self.cap_s = cap_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next = first_s
        self.since: float | None = None
        """Monotonic time the current episode started (None while all is well)."""
        self.reason = ""
        self.failures = 0
        self.last_error = ""

    @property
    def down(self) -> bool:
        return self.since is not None

    def down_for(self) -> float:
        """Seconds since the current episode started (0 while all is well)."""
        since = self.since
        return 0.0 if since is None else self._clock() - since

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt; returns the pause before the next one (exponential, with
        jitter so many workers do not retry in step)."""
        reason = _reason(exc)
        with self._lock:
            first = self.since is None
            if first:
                self.since = self._clock()
                self._next = self.first_s
            changed = not first and reason != self.reason
            self.reason = reason
            self.failures += 1
            self.last_error = str(exc)
            pause = self._next
            self._next = min(self._next * 2, self.cap_s)
        if first or changed:
            lead = "lost Valkey" if first else "still failing, now"
            if isinstance(exc, BrokerError):
                self.log.error("%s: %s: %s; retrying", self.what, lead, exc)
            else:  # not the broker: a bug. Its traceback, once, and the loop carries on.
                self.log.error(
                    "%s: unexpected error (%s); retrying", self.what, reason, exc_info=exc
                )
        else:
            self.log.debug("%s: retry %d failed: %s", self.what, self.failures, exc)
        return pause * random.uniform(0.8, 1.2)

    def ok(self) -> None:
        """Record a successful attempt: ends the episode (and says so) if one was running."""
        if self.since is None:
            return
        with self._lock:
            since, self.since = self.since, None
            failures, self.failures = self.failures, 0
            self.reason = ""
        if since is not None:
            self.log.warning(
                "%s: Valkey back after %.1f s (%d failed attempt(s))",
                self.what,
                self._clock() - since,
                failures,
            )

    def state(self) -> dict[str, object]:
        """For /healthz: whether this loop is failing, since when, and why."""
        if self.since is None:
            return {"ok": True}
        return {"ok": False, "down_s": round(self.down_for(), 1), "error": self.last_error}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BrokerError):
        return exc.reason
    return type(exc).__name__
