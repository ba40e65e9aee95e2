"""Reporting finished attempts: the worker's outcomes go to the broker in pipelined batches.

`Worker.run()` runs `run` on its reporter thread (and a pool thread may `record` a lone outcome
itself, saving a hand-off on the latency path); `Worker.step()` runs `collect`, which records
what is queued by now and never waits. On a broker outage the batch is kept and retried (at once
when the heartbeat sees the server answer again; a stepped worker leaves it queued for its next
step), so no outcome is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Protocol

from ..codes import Fail, Refusal
from ..errors import BrokerUnavailable
from ..model import Outcome
from ..outage import Outage
from ..store import PartialReport, Store
from . import transitions
from .clock import Clock
from .leases import LeaseKeeper

if TYPE_CHECKING:
    from ..client import App

log = logging.getLogger("jobq.worker")

#: Attempts at an outcome the broker refuses for a reason other than an outage (then alone).
REPORT_TRIES = 5
#: The code `Reporter.report_with_retry` gives an outcome it gave up on (not a script's: below every
#: `codes.Refusal`).
REPORT_REFUSED = -100
#: Why the log says an outcome was discarded, by its negative code.
_DISCARDED_AS: dict[int, str] = {
    Refusal.NOT_FOUND: "job not found",
    REPORT_REFUSED: "the broker refused it",
}
#: How the log names what became of a failed attempt, by its `codes.Fail` reply.
_FAILED_AS: dict[int, str] = {
    Fail.RETRY_SCHEDULED: " (will retry)",
    Fail.CANCELLED: " (cancelled, as asked)",
}


class Host(Protocol):
    """What the reporter needs of its worker."""

    name: str
    store: Store
    clock: Clock
    leases: LeaseKeeper
    cond: threading.Condition
    processed: int
    succeeded: int
    failed: int
    threaded: bool
    app: App


class Reporter:
    """The worker's queue of finished outcomes and the one way they are recorded."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.outcomes: queue.Queue[Outcome | None] = queue.Queue()
        self.busy = threading.Lock()  # held while a batch is being recorded
        # Back-off, and a log line per episode of broker trouble (outage.py).
        self.report_outage = Outage(
            log, f"worker {host.name}: reporting outcomes", clock=host.clock.monotonic
        )

    def collect(self) -> int:
        """`step()`'s report duty: record every outcome queued by now, in batches, without
        waiting for more. Returns how many were recorded (or discarded as refused)."""
        n = 0
        while True:
            batch: list[Outcome] = []
            self.take_queued(batch, keep_stop=False)
            if not batch:
                return n
            with self.busy:
                settled = self.record(batch)
            n += settled
            if len(batch) < 1000 or not settled:  # (none settled: the server is away)
                return n

    def run(self) -> None:
        """`run()`'s report duty: a thread that records outcomes as they come, batching what
        queued up meanwhile, until the stop sentinel."""
        while True:
            first = self.outcomes.get()
            if first is None:
                # Outcomes re-queued behind the stop (PartialReport): recorded before leaving.
                rest: list[Outcome] = []
                self.take_queued(rest, keep_stop=False)
                if not rest:
                    return
                with self.busy:
                    self.record(rest)
                self.outcomes.put(None)
                continue
            batch = [first]
            while len(batch) < 1000:
                try:
                    nxt = self.outcomes.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.outcomes.put(None)  # re-post the sentinel for after this batch
                    break
                batch.append(nxt)
            with self.busy:
                self.record(batch)

    def take_queued(self, batch: list[Outcome], keep_stop: bool = True) -> None:
        """Add the outcomes queued meanwhile to a batch about to be sent again (`keep_stop`:
        a stop sentinel found stays queued for the report loop, else it is dropped)."""
        while len(batch) < 1000:
            try:
                nxt = self.outcomes.get_nowait()
            except queue.Empty:
                return
            if nxt is None:
                if keep_stop:
                    self.outcomes.put(None)
                    return
                continue
            batch.append(nxt)

    def record(self, batch: list[Outcome]) -> int:
        """Report outcomes (retrying through outages), log failures, free their slots; returns
        how many it settled (the others were queued again for a later report)."""
        tracing = self.host.app.tracing
        began = transitions.now_ns() if tracing is not None else 0
        codes = self.report_with_retry(batch)
        batch = [o for o in batch if o.claimed.id in codes]  # (the others were re-queued)
        if tracing is not None:
            tracing.completed(batch, codes, began)
        transitions.reported(batch, codes, self.host.name)
        for o in batch:
            code = codes.get(o.claimed.id, 0)
            if code < 0:  # a refusal (codes.Refusal), or REPORT_REFUSED
                log.warning(
                    "outcome of job %s (attempt %d) discarded: %s",
                    o.claimed.id,
                    o.claimed.attempt,
                    _DISCARDED_AS.get(code, "a newer attempt owns it"),
                )
            elif not o.ok:
                e = o.error
                log.warning(
                    "job %s (%s) attempt %d failed: %s: %s%s",
                    o.claimed.id,
                    o.claimed.task,
                    o.claimed.attempt,
                    e.get("type"),
                    e.get("message"),
                    _FAILED_AS.get(code, " (dead-lettered)"),
                )
        # This worker's own history (its registry entry, the dashboard's worker view): the
        # attempts it recorded as succeeded, and as failed (retried or dead-lettered).
        ok = sum(1 for o in batch if o.ok and codes.get(o.claimed.id) == 1)
        bad = sum(1 for o in batch if not o.ok and codes.get(o.claimed.id) in (1, 2))
        with self.host.cond:
            for o in batch:
                self.host.leases.forget(o.claimed)
            self.host.processed += len(batch)
            self.host.succeeded += ok
            self.host.failed += bad
            self.host.cond.notify_all()
        return len(batch)

    def report_with_retry(self, batch: list[Outcome]) -> dict[str, int]:
        """Codes per job; retries through outages (a full server included) without dropping
        an outcome. An outcome refused for another reason (or a bug) is retried a few times,
        then alone, then given up: its lease expires and the job runs again."""
        refused = 0
        while True:
            try:
                codes = self.host.store.report(batch)
            except PartialReport as exc:  # some partitions took theirs: those are done
                for o in batch:  # the rest go again with the next outcomes, not alone
                    if o.claimed.id not in exc.recorded:
                        self.outcomes.put(o)
                self.report_outage.failed(exc)
                return exc.recorded
            except BrokerUnavailable as exc:  # the server will serve again: keep the batch
                # The heartbeat thread probes the server often during an outage and sets
                # `reachable` when it answers: report at once then, not after a long back-off
                # (a finished job must not sit here until the reaper takes its lease).
                pause = self.report_outage.failed(exc)
                if not self.host.threaded:  # a step never waits: a later step reports them
                    for o in batch:
                        self.outcomes.put(o)
                    return {}
                self.host.leases.reachable.clear()
                # New outcomes end the wait too: on a Cluster they may belong to partitions
                # that do answer (Store.report then records them: PartialReport).
                until = self.host.clock.monotonic() + pause
                while self.host.clock.monotonic() < until and self.outcomes.empty():
                    if self.host.clock.wait(self.host.leases.reachable, min(0.05, pause)):
                        break
                self.take_queued(batch)
                continue
            except Exception as exc:  # the reporter outlives any error
                refused += 1
                pause = self.report_outage.failed(exc)
                if refused < REPORT_TRIES:
                    if self.host.threaded:  # (a step never waits: it tries again at once)
                        self.host.clock.sleep(pause)
                    continue
                if len(batch) > 1:  # only some outcomes may be refused: try each alone
                    return {k: v for o in batch for k, v in self.report_with_retry([o]).items()}
                log.error(
                    "giving up the outcome of job %s (attempt %d): %s; its lease will expire "
                    "and it runs again",
                    batch[0].claimed.id,
                    batch[0].claimed.attempt,
                    exc,
                )
                return {batch[0].claimed.id: REPORT_REFUSED}
            self.report_outage.ok()
            return codes
