"""The worker's side of its leases: heartbeats, begin marks, and self-fencing.

Why begin marks: when a worker dies, the reaper must tell the jobs it was running (a lost worker:
counted, so a poison pill ends dead-lettered) from the ones it had only claimed ahead (released,
not counted). The cheapest reliable way to tell the server which jobs began:
- jobs that go into idle slots at once are marked by the claim script itself (no extra call: the
  common case of an idle worker and of a job that kills its worker the instant it starts);
- a prefetched job that starts later is marked by a heartbeat call nudged the moment it starts.
  The nudge carries every start since the previous one, and mark calls are at most one per
  10 ms, so under load one call marks many jobs and the hot path (claim, run, report) gains no
  round trip; it runs on the heartbeat thread, never on the path of a job.
- a mark lost in flight (the job killed its worker before the nudge landed) is caught by the
  reaper's bound on releases of one job.

Self-fencing: a heartbeat that learns a lease is gone stops the attempt where the pool can
(process: kill the child; async: cancel the task; thread: cannot, so its outcome is discarded),
and a prefetched job whose lease is gone never starts. Heartbeats run on connections of their
own with a short socket timeout, so a partition is noticed and logged within a lease; while they
fail past the lease, no prefetched job starts (its lease is surely gone), and the log says so.

Cancels: while jobs run, the heartbeat duty asks every `CANCEL_POLL_S` whether a cancel was
requested for the jobs it holds (the heartbeat script with no lease to extend: reads only),
besides the full heartbeat every `heartbeat_ms`. A running job whose cancel it sees gets
`cancel_grace_s` to stop by itself (the task sees `current_job().cancelled()`); then the pool
stops it (`Pool.cancel`, `Worker._stop_overdue` on the `CancelWatch` deadlines), so the grace is
honoured to within about `CANCEL_POLL_S`. A prefetched job whose cancel comes before it starts
never starts: it is reported cancelled at once. Either way the outcome scripts end the job
`cancelled`, whatever the attempt returned (complete.lua).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import BrokerError, JobCancelled
from ..model import Claimed, Outcome
from .clock import Clock
from .runner import NO_RETRY, failure
from .timers import CancelWatch

if TYPE_CHECKING:
    from ..config import Settings
    from ..store import Store
    from .pools import Pool

log = logging.getLogger("jobq.worker")

#: How soon a failed heartbeat is tried again (an outage is noticed, and its end, quickly).
RETRY_S = 0.25
#: Begin marks go out at once, but at most one call per this interval: under load each call
#: carries every start since the last (measured: marking each start on its own call cost about
#: 40% of the processing rate of no-op jobs).
MARK_INTERVAL_S = 0.01
#: How often, while jobs run, the worker asks whether a cancel was requested for the jobs it
#: holds: the precision of the cancel grace (one read-only script call, O(jobs held), each).
CANCEL_POLL_S = 0.5


class Host(Protocol):
    """What the lease keeper needs of its worker."""

    name: str
    settings: Settings
    store: Store
    pool: Pool
    cond: threading.Condition
    inflight: dict[str, Claimed]
    stopping: threading.Event
    done: threading.Event
    clock: Clock
    cancels: CancelWatch

    def _info(self) -> dict[str, str]: ...
    def _on_done(self, outcome: Outcome) -> None: ...
    def _stop_overdue(self, now: float) -> int: ...
    def _wait_settled(self, timeout_s: float) -> None: ...
    def _requeue(self, jobs: list[Claimed], why: str) -> None: ...


def heartbeat_timeout_s(settings: Settings) -> float:
    """Socket timeout of heartbeat calls: short against the lease (a call that hangs must fail,
    and be retried, well before the lease runs out), but not so short that a busy server fails
    healthy heartbeats."""
    return max(0.1, min(2.0, settings.lease_ms / 20_000))


Attempt = tuple[str, str]  # (job id, token): one claim of a job (a job may be claimed again)


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat call did: `full` (leases extended, presence published, cancels
    learnt) or begin marks only; `ok` = the server answered; `lost` = attempts fenced."""

    full: bool
    ok: bool
    marks: int = 0
    lost: int = 0


class LeaseKeeper:
    """Bookkeeping of the worker's attempts as the server sees them (under the worker's cond).
    Keyed by (id, token): after a lost lease the same job may come back to this worker under a
    new token while the old attempt still runs in a thread."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.marked: set[Attempt] = set()  # begin mark made (by the claim) or sent
        self.to_mark: list[Attempt] = []  # started, mark not sent yet
        self.started: set[Attempt] = set()  # running in the pool now
        self.finished: set[Attempt] = set()  # outcome produced, not reported yet
        self.fenced: set[Attempt] = set()  # lease gone: never start, discard the outcome
        self.skip: set[Attempt] = set()  # cancelled before it started: never start it
        self.wake = threading.Event()  # a nudge (a job started) or shutdown
        self.reachable = threading.Event()  # set by each heartbeat the server answers
        self.clock = host.clock
        self.ok_at = self.clock.monotonic()
        period = host.settings.heartbeat_ms / 1000
        self.next_full = self.ok_at + period  # (the worker announced itself at start)
        self.last_marks = -float("inf")
        self.next_poll = -float("inf")  # the next cancel poll, while jobs run
        self.failing_since: float | None = None  # first failed heartbeat of an outage
        self.warned_stale = False
        self.unlisted_logged: float | None = None  # last log of a refused worker-list refresh
        self.store = host.store.for_heartbeats(heartbeat_timeout_s(host.settings))

    def close(self) -> None:
        """Close the heartbeat connections (after the heartbeat thread ended)."""
        self.store.close()

    # -- called with host.cond held ----------------------------------------------------------

    def claimed(self, jobs: list[Claimed], start: int) -> None:
        """Note which of a claim's jobs the claim script marked begun (see claim.lua)."""
        for c in jobs:
            if c.lost or start <= 0:
                return
            self.marked.add((c.id, c.token))
            start -= 1

    def owns(self, c: Claimed) -> bool:
        """Whether `c` is the worker's current claim of its job."""
        mine = self.host.inflight.get(c.id)
        return mine is not None and mine.token == c.token

    def forget(self, c: Claimed) -> None:
        """Drop an attempt from the books (and from inflight, if it is the current claim)."""
        if self.owns(c):
            del self.host.inflight[c.id]
        a = (c.id, c.token)
        for s in (self.marked, self.started, self.finished, self.fenced, self.skip):
            s.discard(a)

    # -- called by the pools -------------------------------------------------------------------

    def may_start(self, c: Claimed) -> bool | None:
        """Whether a pool may start `c` now: True; False = never (its lease is gone); None =
        not yet (heartbeats have failed past the lease: ask again shortly)."""
        h = self.host
        a = (c.id, c.token)
        with h.cond:
            if a in self.skip:  # its cancel came first: reported cancelled (note_cancels)
                return False
            if a in self.fenced or not self.owns(c):
                if a in self.fenced:
                    log.warning("job %s not started: its lease is gone", c.id)
                self.forget(c)
                h.cond.notify_all()
                return False
        if self.stale():
            if h.stopping.is_set():
                h._requeue([c], "not started (stopping during an outage)")
                return False
            return None
        with h.cond:
            if a in self.skip:
                return False
            idle = not self.started  # the first running job starts the cancel polls
            self.started.add(a)
            if a in self.marked:
                first = False
            else:
                self.marked.add(a)
                self.to_mark.append(a)
                first = len(self.to_mark) == 1
        # Later starts ride on the same call: one wake-up per call, not per job. The first
        # running job wakes the thread for the cancel polls only if one is overdue: an idle
        # heartbeat thread keeps the next poll less than `CANCEL_POLL_S` away (`run`), so a
        # lone job does not wake it (a thread switch on the latency path) every time.
        if first or (idle and self.next_poll <= self.clock.monotonic()):
            self.wake.set()
        return True

    def discard(self, outcome: Outcome) -> bool:
        """True if the outcome belongs to a fenced attempt (dropped, never reported)."""
        c = outcome.claimed
        a = (c.id, c.token)
        with self.host.cond:
            self.started.discard(a)
            if a not in self.fenced:
                self.finished.add(a)
                return False
            self.forget(c)
            self.host.cond.notify_all()
        log.warning(
            "outcome of job %s (attempt %d) discarded: its lease was lost while it ran (fenced)",
            c.id,
            c.attempt,
        )
        return True

    def stale(self) -> bool:
        """Heartbeats have failed for longer than a lease: the server has taken our jobs."""
        return self.clock.monotonic() - self.ok_at > self.host.settings.lease_ms / 1000

    # -- suspects ------------------------------------------------------------------------------

    def run_alone(self, c: Claimed, after: list[Claimed]) -> bool:
        """Run a suspect with nothing else running beside it (so that if it kills this worker,
        the crash is blamed on it alone): wait for the others, mark it begun, run it, wait for
        its outcome. False if the worker is stopping (the caller requeues it and `after`).
        Blocks (real time) in a stepped worker too: the step records the others' outcomes
        meanwhile (`_wait_settled`), and the suspect's outcome is reported by a later step."""
        h = self.host
        held = {c.id, *(x.id for x in after)}
        log.warning("job %s lost its worker %d time(s) before; running it alone", c.id, c.lost)
        with h.cond:
            while not h.stopping.is_set() and set(h.inflight) - held:
                h._wait_settled(0.2)
        lost: set[str] = set()
        while not h.stopping.is_set():
            try:
                lost, _ = self.store.heartbeat([], h.settings.lease_ms, began=[(c.id, c.token)])
                break
            except BrokerError as exc:
                log.error("cannot mark suspect job %s begun (%s); retrying", c.id, exc)
                # (real time: this waits for the server, which no worker's clock moves)
                h.stopping.wait(RETRY_S)
        if h.stopping.is_set():
            return False
        a = (c.id, c.token)
        with h.cond:
            if c.id in lost:
                self.forget(c)
                log.warning("job %s not started: its lease is gone", c.id)
                return True
            self.marked.add(a)
        h.pool.submit(c)
        with h.cond:  # (on shutdown, stop waiting: the pool has it, the shutdown handles it)
            while (
                not h.stopping.is_set()
                and self.owns(c)
                and a not in self.finished
                and a not in self.fenced
            ):
                h._wait_settled(0.2)
        return True

    # -- the heartbeat duty --------------------------------------------------------------------

    def announced(self, now: float) -> None:
        """The worker announced itself at `now` (its start): the first full heartbeat is due
        one interval later."""
        self.next_full = now + self.host.settings.heartbeat_ms / 1000

    def next_due(self) -> float:
        """When (on the worker's clock) `beat` has something to send next: the full heartbeat,
        or sooner a batch of begin marks (at most one call per `MARK_INTERVAL_S`), or, while
        jobs run, the next cancel poll (every `CANCEL_POLL_S`)."""
        due = self.next_full
        if self.to_mark:  # (a racy peek is fine: a nudge follows every first mark)
            due = min(due, self.last_marks + MARK_INTERVAL_S)
        if self.started:  # (likewise: the first start nudges)
            due = min(due, self.next_poll)
        return due

    def beat(self, now: float) -> Beat | None:
        """One heartbeat round if one is due at `now` (None if not): the full one every
        `heartbeat_ms` extends every lease in flight, publishes the worker's presence and
        learns which jobs were asked to cancel; between them, a call carries only begin marks.
        Fences the attempts whose lease is gone. Never raises (a failure is retried after
        `RETRY_S`). What `Worker.step` and the heartbeat thread both run."""
        h = self.host
        if self.next_due() > now:
            return None
        full = now >= self.next_full
        with h.cond:
            poll = not full and bool(self.started) and now >= self.next_poll
            marks, self.to_mark = self.to_mark, []
            # (a poll asks about every job held, so a prefetched job's cancel is seen too)
            items = [(c.id, c.token) for c in h.inflight.values()] if full or poll else []
        sent = dict(items + marks)
        if not full and not poll and not marks:
            return None
        if full or poll:
            self.next_poll = now + CANCEL_POLL_S
        if marks:
            self.last_marks = now
        period = h.settings.heartbeat_ms / 1000
        try:
            # Only a full heartbeat extends leases: the others mark starts and read cancels.
            lost, cancel = self.store.heartbeat(
                items,
                h.settings.lease_ms if full else 0,
                worker=h.name if full else "",
                began=marks,
            )
        except Exception as exc:  # the heartbeat duty outlives any error
            with h.cond:
                self.to_mark[:0] = marks
            self._failed(exc, now)
            self.next_full = now + min(period, RETRY_S)
            return Beat(full=full, ok=False, marks=len(marks))
        # (the time after the call: a slow call must not make the next heartbeat due at once;
        # at least `now`: a step given a time ahead of the clock schedules from it)
        self.ok_at = max(now, self.clock.monotonic())
        self.reachable.set()
        if self.failing_since is not None:
            log.info("heartbeats answer again after %.1fs", self.ok_at - self.failing_since)
            self.failing_since, self.warned_stale = None, False
        if full:
            self.next_full = self.ok_at + period
            self._register()
        gone = {(i, sent[i]) for i in lost if i in sent}
        try:
            self.fence(gone)
            if full or poll:
                self.note_cancels(cancel, now)
        except Exception:  # a pool that failed to stop a job must not stop the heartbeats
            log.exception("heartbeat: could not fence or cancel jobs; carrying on")
        return Beat(full=full, ok=True, marks=len(marks), lost=len(gone))

    def note_cancels(self, requested: set[str], now: float) -> None:
        """The cancel requests among the jobs held: a running job's grace starts the first
        time its request is seen (`CancelWatch`); a job that has not started yet never will:
        it is reported cancelled at once (fail.lua ends it so)."""
        h = self.host
        running: set[str] = set()
        unstarted: list[Claimed] = []
        with h.cond:
            for job_id in requested:
                c = h.inflight.get(job_id)
                if c is None:
                    continue
                a = (c.id, c.token)
                if a in self.finished or a in self.fenced or a in self.skip:
                    continue  # its outcome is on its way (the script sees the cancel flag)
                if a in self.started:
                    running.add(job_id)
                else:
                    self.skip.add(a)
                    unstarted.append(c)
        h.cancels.note(running, now)
        for c in unstarted:
            log.info("job %s was cancelled before it started: it will not start", c.id)
            exc = JobCancelled(f"job {c.id} was cancelled before it started")
            h._on_done(failure(c, exc, NO_RETRY, tb=False))

    def _failed(self, exc: Exception, now: float) -> None:
        lease_s = self.host.settings.lease_ms / 1000
        if self.failing_since is None:
            self.failing_since = now
            log.error("heartbeat failed: %s; retrying every %.2fs", exc, RETRY_S)
        elif not self.warned_stale and now - self.failing_since > lease_s:
            self.warned_stale = True
            log.error(
                "heartbeats have failed for %.1fs, longer than the lease (%.1fs): the "
                "server will have taken this worker's jobs back; starting no prefetched "
                "job until it answers",
                now - self.failing_since,
                lease_s,
            )

    def run(self) -> None:
        """The heartbeat thread: `beat` when due (at once when nudged by a start), and stop
        the attempts whose cancel grace ran out, until the worker is done."""
        h = self.host
        while not h.done.is_set():
            now = self.clock.monotonic()
            if not self.started and self.next_poll <= now:  # (a racy peek: see may_start)
                self.next_poll = now + CANCEL_POLL_S
            due = min(self.next_due(), h.cancels.next_due(), self.next_poll)
            if due > now:
                self.clock.wait(self.wake, due - now)
                self.wake.clear()
                continue
            self.beat(now)
            h._stop_overdue(now)

    def _register(self) -> None:
        """Refresh the worker's entry in the worker list (`jobq workers`). Not part of the
        heartbeat proper: the leases were extended by the script before, which still runs on a
        server at maxmemory (allow-oom) where this plain HSET is refused. Counting that refusal
        as a failed heartbeat made a worker on a full server think its leases gone, so it
        stopped starting its prefetched jobs and fencing what it really had lost."""
        h = self.host
        try:
            self.store.register_worker(h.name, h._info(), h.settings.lease_ms * 3)
        except Exception as exc:  # the heartbeat thread outlives any error
            # (a full server refuses some writes and takes others: one line a minute at most)
            now = self.clock.monotonic()
            if self.unlisted_logged is None or now - self.unlisted_logged > 60:
                self.unlisted_logged = now
                log.warning(
                    "could not refresh this worker's entry in the worker list (its leases are "
                    "extended all the same): %s",
                    exc,
                )

    def fence(self, lost: set[Attempt]) -> None:
        """Stop (or at least never start, and discard) attempts whose lease is gone."""
        h = self.host
        for a in lost:
            job_id, token = a
            with h.cond:
                mine = h.inflight.get(job_id)
                if mine is None or mine.token != token or a in self.finished or a in self.fenced:
                    continue  # reported meanwhile (or already fenced): nothing to stop
                self.fenced.add(a)
                running = a in self.started
            if not running:
                log.warning("lost the lease of job %s before it started: it will not start", job_id)
            elif h.pool.cancel(job_id):
                log.warning("lost the lease of job %s (reaped or taken over): stopped it", job_id)
            else:
                log.warning(
                    "lost the lease of job %s (reaped or taken over); this pool cannot stop a "
                    "running thread, so its outcome will be discarded",
                    job_id,
                )
