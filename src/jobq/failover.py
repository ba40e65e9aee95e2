"""How a producer's call rides out a failover: sent again with back-off while the broker cannot
serve, for a bounded time, then one error saying how long it waited and what to check.

Only for calls that are safe to repeat: a submit is (enqueue is idempotent per job id, so a
submit whose reply was lost returns the same job when sent again). `BrokerFull` is not waited
out (it is back-pressure the caller must see), nor is any other `BrokerError` (a refusal that
retrying will not fix). The loops of workers and masters do not use this: they back off on
their own (`outage.py`) and must not sit in one call for long.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from .errors import BrokerFull, BrokerUnavailable, gave_up_waiting
from .model import JobSpec
from .outage import Outage

T = TypeVar("T")

#: Back-off between attempts: short, so the stall ends soon after the new primary is named
#: (each attempt is a Sentinel query and a dial: cheap).
RETRY_FIRST_S, RETRY_CAP_S = 0.05, 0.5


def ride_out(
    attempt: Callable[[], T], bound_s: float, doing: str, outage: Outage, sentinel: bool
) -> T:
    """`attempt()`, repeated while it raises `BrokerUnavailable` (not `BrokerFull`) for up to
    `bound_s` s; then the last error, saying how long it waited. `outage` logs the episode
    once (shared by the threads of one store), and its end with the stall. `bound_s` <= 0:
    one attempt, its error unchanged."""
    started: float | None = None  # when the first failed attempt began
    pause = RETRY_FIRST_S
    while True:
        began = time.monotonic()
        try:
            out = attempt()
        except BrokerFull:
            raise
        except BrokerUnavailable as exc:
            if bound_s <= 0:
                raise
            # One attempt may take a while itself (the connection's own brief reconnects), so
            # the bound counts from the start of the first failed one.
            started = began if started is None else started
            waited = time.monotonic() - started
            if waited >= bound_s:
                raise gave_up_waiting(exc, waited, doing, sentinel) from exc
            outage.failed(exc)
            time.sleep(min(pause * random.uniform(0.8, 1.2), bound_s - waited))
            pause = min(pause * 2, RETRY_CAP_S)
            continue
        if outage.down:
            outage.ok()
        return out


class Resend:
    """An iterable of specs that can be gone through again from the start: what the source gave
    is kept, so a retried streamed submit sends every job again (enqueue is idempotent per id)
    and still builds the rest lazily."""

    def __init__(self, source: Iterable[JobSpec]) -> None:
        self._source = iter(source)
        self._seen: list[JobSpec] = []

    def __iter__(self) -> Iterator[JobSpec]:
        i = 0
        while i < len(self._seen):
            yield self._seen[i]
            i += 1
        for spec in self._source:
            self._seen.append(spec)
            yield spec
