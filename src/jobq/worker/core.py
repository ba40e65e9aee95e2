"""The worker process: claim -> run -> report, with heartbeats, reconnects and clean shutdown.

Threads and what they own:
- main: the claim loop. Claims up to the free capacity in one script call; when nothing is
  queued, blocks on the queues' wake lists (BLPOP), never polls.
- reporter: drains finished outcomes and records them in one pipelined round trip per batch;
  on a broker outage it keeps the batch and retries (at once when the server answers again),
  so no outcome is dropped.
- heartbeat (`leases.py`): extends the leases of every job in flight, marks jobs that began,
  and fences jobs whose lease is gone, on connections of its own with a short timeout.
- maintenance: the scheduler ticks, only while no `jobq master` is alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from ..codes import Fail, Refusal
from ..errors import AuthFailed, BrokerError, BrokerUnavailable
from ..keys import group_queue, worker_queue
from ..maintenance import Maintainer
from ..model import Claimed, Outcome
from ..outage import Outage
from ..store import PartialReport, redact
from ..tasks import parse_rate
from .leases import LeaseKeeper
from .pools import make_pool

if TYPE_CHECKING:
    from ..client import App

log = logging.getLogger("jobq.worker")

#: Adaptive prefetch keeps about this much work claimed ahead per slot (fast jobs: many per
#: round trip; slow jobs: one spare each, so idle workers elsewhere are not starved).
PREFETCH_WINDOW_S = 0.05
MAX_PREFETCH = 1000
#: Jobs per claim script call; bounds how long one call holds the server.
CLAIM_BATCH = 200
#: Attempts at an outcome the broker refuses for a reason other than an outage (then alone).
REPORT_TRIES = 5
#: The code `_report_with_retry` gives an outcome it gave up on (not a script's: below every
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


class Worker:
    """Runs jobs from `queues` (first listed is served first) until stopped."""

    def __init__(
        self,
        app: App,
        queues: list[str] | None = None,
        *,
        concurrency: int = 1,
        pool: str = "thread",
        name: str | None = None,
        prefetch: int | None = None,
        app_path: str | None = None,
        grace_s: float = 30.0,
        maintenance: bool = True,
        group: str | None = None,
        cancel_grace_s: float = 10.0,
    ) -> None:
        self.app = app
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.group = group
        # Targeted jobs first: this worker's own queue, then its group's, then the named queues.
        own = [worker_queue(self.name)] + ([group_queue(group)] if group else [])
        self.queues = own + (queues or ["default"])
        self.cancel_grace_s = cancel_grace_s
        self.cancel_seen: dict[str, float] = {}
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.avg_runtime_s = PREFETCH_WINDOW_S  # until measured: prefetch = concurrency
        self.grace_s = grace_s
        self.settings = app.settings
        self.store = app.store
        self.leases = LeaseKeeper(self)
        self.pool = make_pool(
            pool, app, concurrency, self._on_done, app_path, may_start=self.leases.may_start
        )
        self.pool_kind = pool
        self.inflight: dict[str, Claimed] = {}
        self.cond = threading.Condition()
        self.outcomes: queue.Queue[Outcome | None] = queue.Queue()
        self._reporting = threading.Lock()
        self.stopping = threading.Event()
        self.immediate = threading.Event()
        self.done = threading.Event()
        self.processed = 0
        self.maintainer = (
            Maintainer(
                self.store,
                tick_ms=self.settings.tick_ms,
                leader_ms=self.settings.leader_ms,
                is_master=False,
                name=f"worker:{self.name}",
                worker_gone_ms=self.settings.worker_gone_ms,
                lease_ms=self.settings.lease_ms,
                max_lost=self.settings.max_lost,
            )
            if maintenance
            else None
        )
        self._threads: list[threading.Thread] = []
        # One per loop: back-off, and a log line per episode of broker trouble (outage.py).
        self.claim_outage = Outage(log, f"worker {self.name}: claiming")
        self.report_outage = Outage(log, f"worker {self.name}: reporting outcomes")

    # -- public ------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`); returns after a clean shutdown."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.store.ping()
        except AuthFailed:  # a wrong or missing password: no retry fixes it, so end here
            raise
        except BrokerError as exc:
            # Not fatal: every loop below retries with back-off, so a worker started before
            # its server (or during an outage) serves as soon as the server is up.
            log.error("%s; retrying until it answers", exc)
        try:
            self._publish()
        except BrokerError as exc:
            log.error("could not publish rate limits / register: %s", exc)
        self.pool.start()
        self._start_thread(self._report_loop, "jobq-reporter")
        self._start_thread(self.leases.run, "jobq-heartbeat")
        if self.maintainer:
            self._threads.append(self.maintainer.start_thread())
        log.info(
            "worker %s serving %s | queues %s | %s pool x%d | tasks: %s",
            self.name,
            redact(self.store.url),
            ",".join(self.queues),
            self.pool_kind,
            self.concurrency,
            ", ".join(sorted(self.app.tasks)) or "(none)",
        )
        try:
            self._claim_loop()
        finally:
            self._shutdown()

    def _publish(self) -> None:
        """Announce this worker (server clock) and publish its tasks' rate limits."""
        self.store.heartbeat([], self.settings.lease_ms, worker=self.name)
        self.store.register_worker(self.name, self._info(), self.settings.lease_ms * 3)
        limits = {}
        for name, task in self.app.tasks.items():
            if task.options.rate_limit:
                count, period = parse_rate(task.options.rate_limit)
                limits[name] = f"{count}:{period}"
        self.store.set_rate_limits(limits)
        for spec in self.app.periodics.values():
            self.store.upsert_periodic(spec)

    def stop(self, immediate: bool = False) -> None:
        """Stop claiming; finish running jobs within the grace period (or requeue now)."""
        if immediate:
            self.immediate.set()
        self.stopping.set()
        self.leases.wake.set()
        with self.cond:
            self.cond.notify_all()
        # Interrupt the claim loop's blocking wait through this worker's own wake list (no
        # other worker listens there). From a thread: stop() may run in a signal handler.
        threading.Thread(target=self._interrupt_wait, daemon=True).start()

    def _interrupt_wait(self) -> None:
        # Best effort, from a thread of its own that may outlive the App (a caller that closes
        # it right after stop()): the claim loop's 1 s wait ends anyway, so no error matters.
        with contextlib.suppress(Exception):
            self.store.wake(worker_queue(self.name))

    # -- loops -------------------------------------------------------------------------------

    def _start_thread(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    @property
    def capacity(self) -> int:
        """Jobs this worker holds at most: its slots plus a prefetch sized to job runtimes."""
        if self.prefetch is not None:
            return self.concurrency + self.prefetch
        ahead = PREFETCH_WINDOW_S / max(self.avg_runtime_s, 1e-5) * self.concurrency
        return self.concurrency + int(min(MAX_PREFETCH, max(self.concurrency, ahead)))

    def _claim_loop(self) -> None:
        while not self.stopping.is_set():
            with self.cond:
                while len(self.inflight) >= self.capacity and not self.stopping.is_set():
                    self.cond.wait(1.0)
                free = min(self.capacity - len(self.inflight), CLAIM_BATCH)
                # Jobs that go into idle slots at once are marked begun by the claim itself
                # (the async pool starts everything it is given); the rest are claimed ahead.
                idle = free if self.pool_kind == "async" else self.concurrency - len(self.inflight)
                start = max(0, min(free, idle))
            if self.stopping.is_set():
                return
            try:
                jobs = self.store.claim(
                    self.name, self.queues, free, self.settings.lease_ms, start=start
                )
                self.claim_outage.ok()
                if not jobs:
                    self.store.wait_for_work(self.queues, 1.0)
                    continue
                drained = len(jobs) < free  # the queues are empty now: block, don't re-claim
            except AuthFailed:  # the password was changed under us: stop now, say why
                self.stop(immediate=True)
                raise
            except Exception as exc:  # the claim loop outlives any error
                self.stopping.wait(self.claim_outage.failed(exc))
                continue
            self._hand_over(jobs, start)
            if drained:
                with contextlib.suppress(BrokerError):  # the next claim reports it
                    self.store.wait_for_work(self.queues, 1.0)

    def _hand_over(self, jobs: list[Claimed], start: int) -> None:
        """Give claimed jobs to the pool in order; a suspect (its worker died under it before)
        runs alone, and the jobs claimed after it wait until it is done."""
        with self.cond:
            # A job handed to us again under a new token: our older attempt's lease is gone
            # (reaped before a heartbeat could tell us). Fence it before the new claim hides it.
            stale = {
                (c.id, old.token)
                for c in jobs
                if (old := self.inflight.get(c.id)) is not None and old.token != c.token
            }
        if stale:
            self.leases.fence(stale)
        with self.cond:
            for c in jobs:
                self.inflight[c.id] = c
            self.leases.claimed(jobs, start)
        for i, c in enumerate(jobs):
            if self.stopping.is_set() and any(x.lost for x in jobs[i:]):
                # (held back behind a suspect: not in the pool, so the shutdown would miss them)
                self._requeue(jobs[i:], "not started (stopping)")
                return
            if not c.lost:
                self.pool.submit(c)
            elif not self.leases.run_alone(c, jobs[i + 1 :]):
                self._requeue(jobs[i:], "not started (stopping)")
                return

    def _on_done(self, outcome: Outcome) -> None:
        if self.leases.discard(outcome):
            return
        # Exponential moving average; races between pool threads only blur it slightly.
        self.avg_runtime_s += (outcome.runtime_s - self.avg_runtime_s) * 0.05
        # The only job in flight and the reporter idle: record it from this thread, saving a
        # thread hand-off on the latency path. Under load outcomes queue up and go out in
        # batches. (Not on the event loop's thread: a round trip there would stall its tasks.)
        if (
            self.pool_kind != "async"
            and len(self.inflight) <= 1
            and self.outcomes.empty()
            and self._reporting.acquire(blocking=False)
        ):
            try:
                self._record([outcome])
            finally:
                self._reporting.release()
        else:
            self.outcomes.put(outcome)

    def _report_loop(self) -> None:
        while True:
            first = self.outcomes.get()
            if first is None:
                # Outcomes re-queued behind the stop (PartialReport): recorded before leaving.
                rest: list[Outcome] = []
                self._take_queued(rest, keep_stop=False)
                if not rest:
                    return
                with self._reporting:
                    self._record(rest)
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
            with self._reporting:
                self._record(batch)

    def _take_queued(self, batch: list[Outcome], keep_stop: bool = True) -> None:
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

    def _record(self, batch: list[Outcome]) -> None:
        """Report outcomes (retrying through outages), log failures, free their slots."""
        codes = self._report_with_retry(batch)
        batch = [o for o in batch if o.claimed.id in codes]  # (the others were re-queued)
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
        with self.cond:
            for o in batch:
                self.leases.forget(o.claimed)
            self.processed += len(batch)
            self.cond.notify_all()

    def _report_with_retry(self, batch: list[Outcome]) -> dict[str, int]:
        """Codes per job; retries through outages (a full server included) without dropping
        an outcome. An outcome refused for another reason (or a bug) is retried a few times,
        then alone, then given up: its lease expires and the job runs again."""
        refused = 0
        while True:
            try:
                codes = self.store.report(batch)
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
                self.leases.reachable.clear()
                # New outcomes end the wait too: on a Cluster they may belong to partitions
                # that do answer (Store.report then records them: PartialReport).
                until = time.monotonic() + pause
                while time.monotonic() < until and self.outcomes.empty():
                    if self.leases.reachable.wait(min(0.05, pause)):
                        break
                self._take_queued(batch)
                continue
            except Exception as exc:  # the reporter outlives any error
                refused += 1
                pause = self.report_outage.failed(exc)
                if refused < REPORT_TRIES:
                    time.sleep(pause)
                    continue
                if len(batch) > 1:  # only some outcomes may be refused: try each alone
                    return {k: v for o in batch for k, v in self._report_with_retry([o]).items()}
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

    def _enforce_cancels(self, requested: set[str]) -> None:
        """Hard-stop jobs still running `cancel_grace_s` after their cancel was requested
        (the task could see it with `current_job().cancelled()` meanwhile)."""
        now = time.monotonic()
        for job_id in list(self.cancel_seen):
            if job_id not in requested:
                del self.cancel_seen[job_id]
        for job_id in requested:
            first = self.cancel_seen.setdefault(job_id, now)
            if now - first >= self.cancel_grace_s and self.pool.cancel(job_id):
                log.warning("job %s ignored its cancel request; stopped it", job_id)

    def _info(self) -> dict[str, str]:
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "queues": ",".join(self.queues),
            "pool": self.pool_kind,
            "group": self.group or "",
            "concurrency": str(self.concurrency),
            "inflight": str(len(self.inflight)),
            "processed": str(self.processed),
        }

    # -- shutdown ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping.is_set() and signum == signal.SIGINT:
            log.warning("second interrupt: requeueing running jobs now")
            self.stop(immediate=True)
        else:
            log.info(
                "%s: finishing running jobs (grace %.0fs); Ctrl-C again to requeue them now",
                signal.Signals(signum).name,
                self.grace_s,
            )
            self.stop()

    def _shutdown(self) -> None:
        pending = self.pool.drain_pending()
        self._requeue(pending, "not started")
        deadline = time.monotonic() + self.grace_s
        with self.cond:
            while self.inflight and not self.immediate.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.2))
        self.pool.kill() if self.inflight else self.pool.stop()
        self.outcomes.put(None)
        for t in self._threads:
            if t.name == "jobq-reporter":
                t.join(30)
        with self.cond:
            left_over = list(self.inflight.values())
            self.inflight.clear()
        self._requeue(left_over, "still running at shutdown")
        self.done.set()
        self.leases.wake.set()
        if self.maintainer:
            self.maintainer.stop_event.set()
        # Join the loops that talk to the broker, so none is mid-call (or re-takes the leader
        # lease) after run() returns and the caller closes the App.
        for t in self._threads:
            if t.name in ("jobq-heartbeat", "jobq-maintenance"):
                t.join(30)
        if self.maintainer:
            self.maintainer.stop()
        self.leases.close()
        with contextlib.suppress(BrokerError):
            self.store.unregister_worker(self.name)
        log.info("worker %s stopped after %d job(s)", self.name, self.processed)

    def _requeue(self, jobs: list[Claimed], why: str) -> None:
        if not jobs:
            return
        with self.cond:
            for c in jobs:
                self.leases.forget(c)
            self.cond.notify_all()
        try:
            n = self.store.requeue([(c.id, c.token) for c in jobs])
            log.info("requeued %d job(s) %s", n, why)
        except BrokerError as exc:
            log.error(
                "could not requeue %d job(s) (%s); their leases will expire and the "
                "master requeues them",
                len(jobs),
                exc,
            )
