"""The scheduler's ticks: promote due jobs and reap expired leases, under a leader lease.

`jobq master` runs this and keeps the lease; a worker runs it too but only while no master is
alive, so a deployment of workers alone still recovers jobs, and several masters can run with one
active. `tick(now)` takes the time as a parameter so tests step a fake clock instead of sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from . import handoff
from .errors import BrokerError
from .logs import JOBS, transition
from .model import JobSpec
from .outage import Outage
from .serde import Serializer
from .store import Store
from .upkeep import Taken

log = logging.getLogger("jobq.maintenance")

BATCH = 1000
DEFAULT_MAX_LOST = 3
_JSON = Serializer("json")


@dataclass(frozen=True, slots=True)
class TickReport:
    promoted: int = 0
    requeued: int = 0
    dead_lettered: int = 0
    periodic_fired: int = 0
    orphans_settled: int = 0
    queues_pruned: int = 0
    dead_trimmed: int = 0


#: Queues of the registry examined per tick (the walk keeps its cursor between ticks), so a tick
#: costs the same with ten queues or a hundred thousand.
QUEUES_PER_TICK = 200


def tick(
    store: Store,
    now: int = 0,
    batch: int = BATCH,
    gone_ms: int = 0,
    reap: bool = True,
    max_lost: int = DEFAULT_MAX_LOST,
    holder: str | None = None,
) -> TickReport:
    """One maintenance pass: promote due scheduled jobs, reap expired leases (batched, unless
    `reap` is False: a grace after an outage), fire due periodic jobs, drop dead letters past
    their retention (one batch), and take one bounded step over the queue registry: settle jobs
    targeted at workers gone longer than `gone_ms`, and prune idle queues nobody serves.
    `holder`: the leader lease this tick runs under; periodic fires are fenced on it."""
    promoted = requeued = dead = 0
    while True:
        n = store.promote(batch, now)
        promoted += n
        if n < batch:
            break
    while reap:
        r, d, jobs = store.reap_listed(batch, now, max_lost)
        requeued += r
        dead += d
        log_taken(jobs)
        if r + d < batch:
            break
    store.trim_finished(now)
    trimmed = store.trim_dead(now, batch)
    orphaned = pruned = 0
    if gone_ms:
        orphaned, pruned, _, jobs = store.walk_queues_listed(gone_ms, now, batch, QUEUES_PER_TICK)
        log_taken(jobs)
    if store.partitions > 1:  # dependencies across partitions: what no settler delivered
        handoff.deliver_pending(store.shards, now=now)
    # Last: it submits jobs, which a full broker refuses (BrokerFull) before the recovery work
    # above is done; a refused tick fires once memory is freed.
    fired = fire_periodic(store, now, holder)
    return TickReport(promoted, requeued, dead, fired, orphaned, pruned, trimmed)


def log_taken(jobs: list[Taken]) -> None:
    """One `jobq.jobs` line per job the tick took back or settled (the scripts list the first
    of each call), as the workers log their own transitions: the worker named is the one lost
    or gone, no duration applies."""
    if not JOBS.isEnabledFor(logging.INFO):
        return
    for j in jobs:
        transition(j.event, j.id, j.task, j.queue, j.attempt, j.worker)


def fire_periodic(store: Store, now: int = 0, holder: str | None = None) -> int:
    """Submit every due periodic job once, moving its due time on in the same transaction.

    Each slot's job and the move of its due time commit together, and only if the slot is
    still due and (with `holder`) the leader lease is still `holder`'s (`Store.fire_periodic_slot`):
    a leader paused past its lease that resumes mid-loop fires nothing. The job id
    ``periodic:<name>:<due>`` stays a second guard. A slot fenced off is left to whoever leads.
    """
    now = now or store.server_time_ms()
    fired = 0
    for spec, due in store.due_periodic(now):
        nxt = spec.next_after(max(now, due))
        if spec.should_fire(due, now):
            job = JobSpec(
                id=spec.job_id(due),
                task=spec.task,
                queue=spec.queue,
                payload=_JSON.encode_args(spec.args, spec.kwargs),
                priority=spec.priority,
                max_attempts=spec.retries + 1,
            )
            created = store.fire_periodic_slot(job, spec.name, due, nxt, holder, now)
            if created is None:
                log.info(
                    "periodic %s: the tick due at %d is no longer ours to fire", spec.name, due
                )
            fired += bool(created)
        else:
            log.info("periodic %s: skipped the tick due at %d (missed)", spec.name, due)
            store.advance_periodic(spec.name, nxt)
    return fired


class Maintainer:
    """Runs `tick` on a period while this process holds the leader lease."""

    def __init__(
        self,
        store: Store,
        *,
        tick_ms: int,
        leader_ms: int,
        is_master: bool,
        name: str | None = None,
        worker_gone_ms: int = 0,
        lease_ms: int = 30_000,
        max_lost: int = DEFAULT_MAX_LOST,
    ) -> None:
        self.store = store
        self.worker_gone_ms = worker_gone_ms
        self.lease_ms = lease_ms
        self.max_lost = max_lost
        # Reaping waits until this server time (ms) after an outage or a server restart, so live
        # workers get one lease period to heartbeat (and report what finished meanwhile) before
        # their leases are taken for dead. 0 = no grace running.
        self.reap_after = 0
        self.run_id: str | None = None
        # A live step that finds it could not reach the server for this long (an outage, the
        # server or this process stalled: SIGSTOP, a call hung in a partition) grants the grace
        # too, even if no call failed outright.
        self.stall_s = max(lease_ms / 4000, 5 * tick_ms / 1000)
        self.last_ok = time.monotonic()
        self.tick_ms = tick_ms
        self.leader_ms = leader_ms
        self.is_master = is_master
        self.name = (
            name or f"{'master' if is_master else 'worker'}:{socket.gethostname()}:{os.getpid()}"
        )
        self.leading = False
        self.last_holder: str | None = None  # who led when this process last followed
        self.stop_event = threading.Event()
        self.outage = Outage(log, f"maintenance ({self.name})")
        self.thread: threading.Thread | None = None  # for /healthz: is the loop alive?

    def step(self, now: int = 0) -> TickReport | None:
        """Renew presence/leadership, then tick if leading; None when another process leads."""
        report = self._step(now)
        self.last_ok = time.monotonic()  # (not after a failed step: an outage is a gap)
        return report

    def _step(self, now: int) -> TickReport | None:
        if self.is_master:
            self.store.mark_master_alive(self.name, self.leader_ms)
        elif self.store.master_alive():
            if self.leading:
                self.store.lead(self.name, self.leader_ms, release=True)
                self.leading = False
                log.info("a master is alive; %s hands over maintenance", self.name)
            return None
        was = self.leading
        self.leading = self.store.lead(self.name, self.leader_ms, now=now)
        if not self.leading:
            holder = self.store.leader_holder()
            if was:
                log.warning(
                    "%s: no longer leading maintenance (the lease is %s's)", self.name, holder
                )
            elif holder != self.last_holder and holder is not None:
                log.info("%s: %s leads maintenance", self.name, holder)
            self.last_holder = holder
            return None
        if not was:
            log.info(
                "%s: leading maintenance: took the maintenance lease (over from %s)",
                self.name,
                self.last_holder or "nobody: no leader was seen",
            )
        rid = self.store.server_run_id()
        if self.run_id is not None and rid != self.run_id:
            self.grant_grace("the server restarted (new run id)", now)
        elif not now and time.monotonic() - self.last_ok > self.stall_s:
            gap = time.monotonic() - self.last_ok
            self.grant_grace(f"no contact with the server for {gap:.1f}s", now)
        self.run_id = rid
        reap = True
        if self.reap_after:
            if (now or self.store.server_time_ms()) < self.reap_after:
                reap = False
            else:
                self.reap_after = 0
                log.info("reaping expired leases again (grace over)")
        report = tick(
            self.store,
            now,
            gone_ms=self.worker_gone_ms,
            reap=reap,
            max_lost=self.max_lost,
            holder=self.name,
        )
        if report.requeued or report.dead_lettered:
            log.warning(
                "expired leases: %d job(s) requeued, %d dead-lettered",
                report.requeued,
                report.dead_lettered,
            )
        return report

    def grant_grace(self, why: str, now: int = 0) -> None:
        """Hold off reaping for one lease period from now (server clock): after an outage a
        lease may look expired only because its worker could not heartbeat."""
        self.reap_after = (now or self.store.server_time_ms()) + self.lease_ms
        log.warning(
            "%s: not reaping expired leases for %d ms (workers heartbeat first)", why, self.lease_ms
        )

    def run(self) -> None:
        """Loop until `stop()`. Survives every error, the broker's and any other (backs off,
        logs once per episode, resumes): a dead maintenance loop would strand every job whose
        worker dies."""
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception as exc:  # the loop must outlive anything
                pause = max(self.tick_ms / 1000, self.outage.failed(exc))
            else:
                self.outage.ok()
                pause = self.tick_ms / 1000
            self.stop_event.wait(pause)
        self.release()

    def run_joined(self) -> None:
        """`run()` for the main thread, which a SIGTERM/SIGINT handler interrupts: the loop runs
        in its own thread, the main thread only joins it. A Python signal handler runs in the
        main thread between two of its bytecodes; had the main thread been inside
        `stop_event.wait()` (the loop's pause) it could hold the Event's lock, which is not
        reentrant, and the handler's `stop_event.set()` would wait for it forever: the process
        ignores SIGTERM. `join()` holds no lock the handler takes and a signal interrupts it."""
        self.start_thread().join()

    def start_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="jobq-maintenance", daemon=True)
        t.start()
        self.thread = t
        return t

    def stop(self) -> None:
        """Stop the loop and give the lease up (the loop also does when it ends)."""
        self.stop_event.set()
        self.release()

    def release(self) -> None:
        """Give the leader lease up if this process holds it, so another master (or worker)
        takes over on its next tick instead of waiting for the lease to expire."""
        if self.leading:
            self.leading = False
            with contextlib.suppress(BrokerError):
                self.store.lead(self.name, self.leader_ms, release=True)
                log.info("%s: stopped; released the maintenance lease", self.name)
