"""The worker process: claim -> run -> report, with heartbeats, reconnects and clean shutdown.

Threads and what they own:
- main: the claim loop. Claims up to the free capacity in one script call; when nothing is
  queued, blocks on the queues' wake lists (BLPOP), never polls.
- reporter: drains finished outcomes and records them in one pipelined round trip per batch;
  on a broker outage it keeps the batch and retries (at once when the server answers again),
  so no outcome is dropped.
- heartbeat (`leases.py`): extends the leases of every job in flight, marks jobs that began,
  and fences jobs whose lease is gone, on connections of its own with a short timeout; it also
  hard-stops jobs whose cancel grace ran out.
- maintenance (`timers.MaintenanceTimer`): the scheduler ticks, only while no `jobq master`
  is alive.

Every timer of these reads one injected `Clock` (clock.py), and each duty is a function that
does what is due at a given time: `step(now)` runs each of them once, synchronously, so a test
drives a worker by hand on a `ManualClock` instead of sleeping; `run()` runs the same functions
from the threads above. Where each duty lives:
- claiming: `_claim` + `_hand_over` (here);
- reporting: `Reporter.collect` (step) / `Reporter.run` (the reporter thread) -> `record` ->
  `report_with_retry` (reporting.py);
- heartbeats, lease renewal, presence, begin marks, fencing: `LeaseKeeper.beat` (leases.py);
- the cancel grace: `timers.CancelWatch` (fed by the heartbeat) + `_stop_overdue` (here);
- the maintenance tick: `timers.MaintenanceTimer.run_due`;
- the shutdown grace: `_begin_stop` / `_stop_due` / `_close` (here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from .. import registry
from ..errors import AuthFailed, BrokerError
from ..keys import group_queue, worker_queue
from ..maintenance import Maintainer
from ..model import Claimed, Outcome
from ..outage import Outage
from ..store import redact
from ..tasks import parse_rate
from . import transitions
from .clock import SYSTEM, Clock
from .leases import LeaseKeeper
from .pools import make_pool
from .reporting import Reporter
from .runner import NO_RETRY, failure
from .timers import NEVER, CancelWatch, MaintenanceTimer, StepResult

if TYPE_CHECKING:
    from ..client import App

log = logging.getLogger("jobq.worker")

#: Adaptive prefetch keeps about this much work claimed ahead per slot (fast jobs: many per
#: round trip; slow jobs: one spare each, so idle workers elsewhere are not starved).
PREFETCH_WINDOW_S = 0.05
MAX_PREFETCH = 1000
#: Jobs per claim script call; bounds how long one call holds the server.
CLAIM_BATCH = 200


class Worker:
    """Runs jobs from `queues` (first listed is served first) until stopped: `run()` serves
    with threads; `step(now)` does one round by hand. `clock` drives every timer (default: the
    system's; tests pass a `clock.ManualClock`)."""

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
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        self.clock: Clock = clock or SYSTEM
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.group = group
        # Targeted jobs first: this worker's own queue, then its group's, then the named queues.
        own = [worker_queue(self.name)] + ([group_queue(group)] if group else [])
        self.queues = own + (queues or ["default"])
        self.cancel_grace_s = cancel_grace_s
        self.cancels = CancelWatch(cancel_grace_s, app.settings.heartbeat_ms / 1000)
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.avg_runtime_s = PREFETCH_WINDOW_S  # until measured: prefetch = concurrency
        self.grace_s = grace_s
        self.settings = app.settings
        self.store = app.store
        self.leases = LeaseKeeper(self)
        self.pool = make_pool(
            pool, app, concurrency, self._on_done, app_path, may_start=self._may_start
        )
        self.pool_kind = pool
        self.inflight: dict[str, Claimed] = {}
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.immediate = threading.Event()
        self.done = threading.Event()
        self.processed = 0
        self.succeeded = 0  # attempts recorded succeeded / failed (reporting.py)
        self.failed = 0
        self.started_ms = int(time.time() * 1000)  # published as `started` (uptime)
        self.unknown_warned: set[str] = set()  # tasks this worker said it hands back
        self.reporter = Reporter(self)
        self.started = False  # `_start` ran (by `run()` or the first `step()`)
        self.threaded = False  # `run()` serves: its threads own the duties, `step` may not
        self.claim_after = -NEVER  # step mode: when to claim again after a failed claim
        self.stop_at: float | None = None  # when the shutdown grace runs out (once stopping)
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
        self.ticker = MaintenanceTimer(self.maintainer, self.clock) if self.maintainer else None
        self._threads: list[threading.Thread] = []
        # One per loop: back-off, and a log line per episode of broker trouble (outage.py).
        ticks = self.clock.monotonic
        self.claim_outage = Outage(log, f"worker {self.name}: claiming", clock=ticks)

    # -- public ------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`); returns after a clean shutdown."""
        if self.started:
            raise RuntimeError("run() on a worker already started (by run() or step())")
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.threaded = True
        self._start()
        self._start_thread(self.reporter.run, "jobq-reporter")
        self._start_thread(self.leases.run, "jobq-heartbeat")
        period_s = self.settings.heartbeat_ms / 1000  # (well within the liveness window)
        catalog = registry.Publisher(self.store, self.app.tasks, period_s, self.done)
        self._start_thread(catalog.run, "jobq-registry")
        if self.ticker:
            self._threads.append(self.ticker.start_thread())
        try:
            self._claim_loop()
        finally:
            self._shutdown()

    def step(self, now: float | None = None) -> StepResult:
        """Run ONE synchronous round of every duty due at `now` (the worker's clock; default:
        its current time) and say what it did: collect and report finished outcomes, stop
        jobs whose cancel grace ran out, heartbeat (leases, presence, begin marks) if due, run
        the maintenance tick if due, and claim for the free slots without blocking, handing
        the jobs to the pool. After `stop()`, the rounds shut the worker down instead: no
        claims, pending jobs requeued, running ones given the grace (`stopped` once over).

        For tests and embedding: a worker is either stepped or `run()`, never both. The first
        step starts it (announces it, starts the pool); jobs run on the pool's own threads,
        so a step does not wait for one (a later step reports it), with one exception: a
        suspect (a job whose worker died under it before) runs alone, so the step that
        claims it waits for the jobs before it and for the suspect itself, as `run()` does."""
        if self.threaded:
            raise RuntimeError("step() on a worker served by run()")
        if self.done.is_set():
            return StepResult(stopped=True)
        now = self.clock.monotonic() if now is None else now
        if not self.started:
            self._start()
        settled = self.processed
        self.reporter.collect()
        stopped_n = self._stop_overdue(now)
        beat = self.leases.beat(now)
        ticked, report = self.ticker.run_due(now) if self.ticker else (False, None)
        claimed = 0
        if self.stopping.is_set():
            self._begin_stop(now)
            self.reporter.collect()
            with self.cond:
                over = self._stop_due(now)
            if over:
                self._close_pool()
                self.reporter.collect()
                self._close()
        elif now >= self.claim_after:
            claimed = self._claim_once(now)
        return StepResult(
            claimed=claimed,
            reported=self.processed - settled,
            heartbeats=int(beat is not None and beat.full and beat.ok),
            marks=beat.marks if beat is not None and beat.ok else 0,
            fenced=beat.lost if beat is not None else 0,
            cancels_stopped=stopped_n,
            ticked=ticked,
            tick=report,
            stopped=self.done.is_set(),
        )

    def _start(self) -> None:
        """Announce the worker and start its pool (once, by `run()` or the first `step()`)."""
        self.started = True
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
        self.leases.announced(self.clock.monotonic())
        self.pool.start()
        log.info(
            "worker %s serving %s | queues %s | %s pool x%d | tasks: %s",
            self.name,
            redact(self.store.url),
            ",".join(self.queues),
            self.pool_kind,
            self.concurrency,
            ", ".join(sorted(self.app.tasks)) or "(none)",
        )

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
        registry.publish(self.store, self.app.tasks)  # by-name submits take these settings

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
        """`run()`'s claim duty: `_claim` whenever there is room; once the queues are empty
        (a claim got fewer jobs than asked), the next claim first blocks on their wake lists
        (never polling), in the same round trip (`Store.claim_woken`)."""
        block_s = 0.0
        while not self.stopping.is_set():
            with self.cond:
                while len(self.inflight) >= self.capacity and not self.stopping.is_set():
                    self.cond.wait(1.0)
                if block_s and len(self.inflight) >= self.concurrency:
                    # Every slot busy, the queues empty: give the running jobs a moment to end
                    # before blocking, so the job this claim wakes with goes into an idle slot
                    # and is marked begun by the claim itself (a claim made with no slot idle
                    # marks none: then a heartbeat call marks it, an extra call per job). A
                    # job queued meanwhile keeps its wake-up for this claim or another worker.
                    self.cond.wait(PREFETCH_WINDOW_S)
            if self.stopping.is_set():
                return
            try:
                jobs, start, free = self._claim(block_s)
            except AuthFailed:  # the password was changed under us: stop now, say why
                self.stop(immediate=True)
                raise
            except Exception as exc:  # the claim loop outlives any error
                block_s = 0.0
                self.clock.wait(self.stopping, self.claim_outage.failed(exc))
                continue
            # The queues are empty now: the next claim waits for a wake-up first.
            block_s = 1.0 if len(jobs) < free else 0.0
            if jobs and self.stopping.is_set():  # (claimed as the stop's wake-up came)
                self._requeue(jobs, "not started (stopping)")
                return
            self._hand_over(jobs, start)
            if block_s:
                # Idle until the next wake-up: let the pool thread take the GIL and start the
                # job now, before this thread packs its next blocking claim (measured: the
                # hand-off to the pool took about twice as long without this).
                time.sleep(0)

    def _claim_once(self, now: float) -> int:
        """`step()`'s claim duty: one `_claim` for the free slots, never blocking; a failure
        backs the next one off (on the worker's clock). Returns the jobs handed over."""
        try:
            jobs, start, _free = self._claim()
        except Exception as exc:  # a step outlives any error, as the claim loop does
            self.claim_after = now + self.claim_outage.failed(exc)
            return 0
        self._hand_over(jobs, start)
        return len(jobs)

    def _claim(self, block_s: float = 0.0) -> tuple[list[Claimed], int, int]:
        """Claim up to the free capacity in one script call (after waiting up to `block_s`
        for a wake-up, in the same round trip): (jobs, how many of them the claim marked
        begun, how many were asked for). Nothing when there is no room."""
        with self.cond:
            free = min(self.capacity - len(self.inflight), CLAIM_BATCH)
            # Jobs that go into idle slots at once are marked begun by the claim itself;
            # the rest are claimed ahead (every pool runs `concurrency` at most). While a
            # claim waits, slots only free up: a job it marks begun always finds one.
            start = max(0, min(free, self.concurrency - len(self.inflight)))
        if free <= 0:
            return [], 0, 0
        lease_ms = self.settings.lease_ms
        if block_s > 0:
            jobs = self.store.claim_woken(self.name, self.queues, free, lease_ms, block_s, start)
        else:
            jobs = self.store.claim(self.name, self.queues, free, lease_ms, start=start)
        self.claim_outage.ok()
        return jobs, start, free

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
        jobs = self._take_unknown(jobs)
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

    def _take_unknown(self, jobs: list[Claimed]) -> list[Claimed]:
        """The claimed jobs whose task this worker knows. The others go back for a worker that
        knows theirs (registry.hand_back: the attempt not counted); only those no live worker
        has known for `unknown_task_ms` fail, with an error naming the known tasks."""
        unknown = [c for c in jobs if c.task not in self.app.tasks]
        if not unknown:
            return jobs
        try:
            expired = registry.hand_back(self.store, unknown, self.settings)
        except BrokerError as exc:
            log.warning("could not hand back %d job(s) of unknown tasks: %s", len(unknown), exc)
            self._requeue(unknown, "of tasks this worker does not know")
            return [c for c in jobs if c.task in self.app.tasks]
        failing = {(c.id, c.token) for c in expired}
        with self.cond:
            for c in unknown:
                if (c.id, c.token) not in failing:
                    self.leases.forget(c)
                    transitions.claimed("handed back", c, self.name)
            self.cond.notify_all()
        for task in sorted({c.task for c in unknown} - self.unknown_warned):
            self.unknown_warned.add(task)
            log.warning("task %r is not registered here: its jobs go back for another worker", task)
        if expired:
            known = registry.known_now(self.store, self.settings)
            for c in expired:
                err = registry.unknown_task_error(c.task, known, self.settings.unknown_task_ms)
                self._on_done(failure(c, err, NO_RETRY, tb=False))
        return [c for c in jobs if c.task in self.app.tasks]

    def _may_start(self, c: Claimed) -> bool | None:
        """The pools' gate (leases.py), logging the attempts it lets start."""
        verdict = self.leases.may_start(c)
        if verdict:
            transitions.started(c, self.name)
        return verdict

    def _wait_settled(self, timeout_s: float) -> None:
        """Wait (cond held, real time) for jobs in flight to settle: their outcomes are
        recorded by the reporter thread, or, in a stepped worker, here."""
        if self.threaded or not self.reporter.collect():
            self.cond.wait(timeout_s)

    def _on_done(self, outcome: Outcome) -> None:
        if self.leases.discard(outcome):
            return
        # Exponential moving average; races between pool threads only blur it slightly.
        self.avg_runtime_s += (outcome.runtime_s - self.avg_runtime_s) * 0.05
        # The only job in flight and the reporter idle: record it from this thread, saving a
        # thread hand-off on the latency path. Under load outcomes queue up and go out in
        # batches. (Not on the event loop's thread: a round trip there would stall its tasks;
        # nor in a stepped worker: its steps report, so a step's counts say what happened.)
        if (
            self.threaded
            and self.pool_kind != "async"
            and len(self.inflight) <= 1
            and self.reporter.outcomes.empty()
            and self.reporter.busy.acquire(blocking=False)
        ):
            try:
                self.reporter.record([outcome])
            finally:
                self.reporter.busy.release()
        else:
            self.reporter.outcomes.put(outcome)

    def _stop_overdue(self, now: float) -> int:
        """The cancel grace's duty: hard-stop jobs still running `cancel_grace_s` after their
        cancel was requested (the task could see it with `current_job().cancelled()`
        meanwhile). Returns how many were stopped."""
        n = 0
        for job_id in self.cancels.overdue(now):
            with self.cond:
                running = job_id in self.inflight
            try:
                stopped = running and self.pool.cancel(job_id)
            except Exception:  # a pool that failed to stop a job must not stop this duty
                log.exception("could not stop job %s after its cancel grace; will retry", job_id)
                stopped = False
            # The thread pool cannot stop a thread: it reported the job cancelled instead
            # (ThreadPool.cancel), and the thread keeps its slot until the task returns.
            reported = running and not stopped and self.pool_kind == "thread"
            self.cancels.tried(job_id, stopped or reported or not running, now)
            grace = self.cancel_grace_s
            if stopped:
                n += 1
                log.warning("job %s ignored its cancel request for %gs; stopped it", job_id, grace)
            elif reported:
                log.warning(
                    "job %s ignored its cancel request for %gs: reported it cancelled; this "
                    "pool cannot stop a thread, which runs on in its slot until the task returns",
                    job_id,
                    grace,
                )
        return n

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
            "succeeded": str(self.succeeded),
            "failed": str(self.failed),
            "started": str(self.started_ms),
            "heartbeat_ms": str(self.settings.heartbeat_ms),  # readers judge liveness by it
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

    def _begin_stop(self, now: float) -> None:
        """The shutdown grace starts (once): jobs the pool had not started go back now."""
        if self.stop_at is not None:
            return
        self.stop_at = now + self.grace_s
        self._requeue(self.pool.drain_pending(), "not started")

    def _stop_due(self, now: float) -> bool:
        """Whether the shutdown may go on at `now` (with cond held): nothing left running, a
        second interrupt, or the grace ran out."""
        assert self.stop_at is not None
        return not self.inflight or self.immediate.is_set() or now >= self.stop_at

    def _close_pool(self) -> None:
        """End the pool: politely if nothing runs, else kill what it can (the shutdown then
        requeues those jobs)."""
        self.pool.kill() if self.inflight else self.pool.stop()

    def _shutdown(self) -> None:
        """`run()`'s shutdown: the grace, then the reporter's last batch, then `_close`."""
        self._begin_stop(self.clock.monotonic())
        with self.cond:
            while not self._stop_due(self.clock.monotonic()):
                self.cond.wait(0.2)
        self._close_pool()
        self.reporter.outcomes.put(None)
        for t in self._threads:
            if t.name == "jobq-reporter":
                t.join(30)
        self._close()

    def _close(self) -> None:
        """Requeue what still runs, stop the other duties and leave the worker list."""
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
            if t.name in ("jobq-heartbeat", "jobq-maintenance", "jobq-registry"):
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
            for c in jobs:
                transitions.claimed("requeued", c, self.name)
        except BrokerError as exc:
            log.error(
                "could not requeue %d job(s) (%s); their leases will expire and the "
                "master requeues them",
                len(jobs),
                exc,
            )
