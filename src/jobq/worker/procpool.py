"""The process pool: N spawned children, one attempt each at a time, jobs sent in batches.

Per job, a message each way over a pipe costs more than a no-op job itself (a pickle, a child
wake-up, a parent wake-up, thread hand-offs). So a slot sends its idle child every job already
waiting in the pool (its fair share, at most `MAX_BATCH`; never holding one back to wait for
more), and the child reports the outcomes of a batch in one message when the batch ends (or
earlier, between jobs, once an outcome has waited `FLUSH_S`). A lone job is a batch of one:
sent the moment it is submitted, reported the moment it ends.

What the parent must know between messages (which job of the batch runs, since when) lives in
a few doubles of shared memory, written by the child under a lock shared with the parent:
- a hard timeout is per job, even inside a batch: the slot thread wakes at the running job's
  deadline and, holding the lock (so the child cannot move on to the next job meanwhile),
  kills the child; that job fails with TimeoutError;
- `cancel` of the running job kills the child; of a job of the batch not started yet, it
  withdraws it (a flag the child reads, under the lock, before it starts a job) and reports it
  cancelled without running it; `drain_pending` withdraws every job not started likewise;
- a child that dies (or is killed) fails only the job it was running; the batch's jobs it had
  not started go back to the front of the pool and run in a fresh child, and so do those that
  ended but whose outcomes had not been sent yet (lost with the child: to the server these
  are jobs not run yet, as when a whole worker dies before reporting; they run again).

The gate (`may_start`) is asked for each job of a batch when the batch is dispatched, not when
the child reaches it: asking the parent from the child per job would cost the round trip this
design removes. It is safe because a dispatched job that the gate would refuse later can still
be stopped before it starts: its cancel or lost lease reaches `cancel`, which withdraws it.
Only short jobs are batched (a slot whose last batch had a job of `BATCH_RUNTIME_S` or more
sends one job at a time, asking the gate right before it starts), so a dispatched job waits
behind its batch-mates for little time, and long jobs behave as with one job per message.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import select
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ..model import Claimed, Outcome
from .attempts import GATE_POLL_S, PARENT_DECIDES, Gate, OnDone, load_app
from .attempts import always as _always
from .attempts import cancelled as _cancelled
from .attempts import stamped as _stamped
from .runner import failure, retry_delay, run_sync, timed_out, timeout_s

if TYPE_CHECKING:
    from ..client import App

log = logging.getLogger("jobq.worker")

#: Jobs sent to a child in one message at most.
MAX_BATCH = 64
#: A slot batches only while its jobs are shorter than this: the per-job cost batching saves is
#: tens of microseconds, which longer jobs do not feel, and a batch-mate of a long job waits.
BATCH_RUNTIME_S = 0.001
#: How long a slot waits before replacing a child that died with nothing to run.
IDLE_DEATH_PAUSE_S = 1.0
#: A child reports between jobs of a batch once an outcome has waited this long.
FLUSH_S = 0.002

# Shared state of a slot (doubles): how many jobs of the batch the child has taken (started or
# skipped), whether one runs now, when it began; then one withdrawn flag per batch position.
NEXT, RUNNING, BEGAN, FLAGS = 0, 1, 2, 3

Batch = list[Claimed]
#: An outcome as the child sends it: its position in the batch and its fields but the claimed
#: job, which the parent has (pickling it back would double the bytes and the time per job).
Brief = tuple[int, bool, bytes, dict[str, Any], int, float, float]
#: child -> parent: (outcomes, whether the batch is over)
Report = tuple[list[Brief], bool]


def _brief(pos: int, o: Outcome, began: float) -> Brief:
    return (pos, o.ok, o.result, o.error, o.retry_delay_ms, o.runtime_s, began)


def _outcome(c: Claimed, b: Brief) -> Outcome:
    _pos, ok, result, error, retry_ms, runtime_s, began = b
    return Outcome(c, ok, result, error, retry_ms, runtime_s, began)


def _child_main(app_path: str, conn: Connection, state: Any, lock: Any) -> None:
    """A process-pool child: run the batches sent by the parent until told to stop."""
    for sig in PARENT_DECIDES:
        signal.signal(sig, signal.SIG_IGN)
    # Born with these blocked (see _Slot), so one sent before the lines above is dropped now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_DECIDES)
    app = load_app(app_path)
    while True:
        try:
            jobs: Batch | None = conn.recv()
        except EOFError:
            return
        if jobs is None:
            return
        unsent: list[Brief] = []
        since = 0.0
        for pos, c in enumerate(jobs):
            with lock:
                state[NEXT] = pos + 1
                if state[FLAGS + pos]:  # withdrawn by the parent (cancelled, or drained)
                    continue
                began = time.monotonic()
                state[BEGAN] = began
                state[RUNNING] = 1.0
            outcome = run_sync(app, c)
            with lock:
                state[RUNNING] = 0.0
            if not unsent:
                since = time.monotonic()
            unsent.append(_brief(pos, outcome, began))
            if pos + 1 < len(jobs) and time.monotonic() - since >= FLUSH_S:
                conn.send((unsent, False))
                unsent = []
        conn.send((unsent, True))


@contextlib.contextmanager
def _held(lock: Any) -> Iterator[None]:
    """Hold a slot's shared lock. A child holds it for microseconds between jobs; one killed
    from outside right then would hold it forever, so after a second go on without it."""
    got = lock.acquire(timeout=1.0)
    try:
        yield
    finally:
        if got:
            lock.release()


class _Slot:
    """One child and what the parent knows of the batch it runs."""

    def __init__(self, ctx: Any, app_path: str) -> None:
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.state = ctx.RawArray("d", FLAGS + MAX_BATCH)
        self.lock = ctx.Lock()
        self.proc = ctx.Process(
            target=_child_main, args=(app_path, child, self.state, self.lock), daemon=True
        )
        # The child inherits this thread's signal mask: blocked from birth, a group SIGTERM
        # cannot kill it before it has set its signals to ignored.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_DECIDES)
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
        # The batch in the child (guarded by the pool's lock): empty = idle.
        self.busy = True  # (until its thread takes it up; also while it is being replaced)
        self.batch: Batch = []
        self.limits: list[float | None] = []
        self.settled: set[int] = set()  # positions reported or withdrawn
        self.short = False  # every job of the last batch ran under BATCH_RUNTIME_S
        self.why_killed: dict[int, str] = {}  # position -> "cancel" / "timeout"

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class ProcessPool:
    """N child processes (spawned, importing the app by path), one attempt each at a time;
    prefetched jobs wait in `pending` until a slot's child is idle, then go to it in batches."""

    def __init__(
        self,
        app: App,
        concurrency: int,
        on_done: OnDone,
        app_path: str,
        *,
        may_start: Gate = _always,
    ) -> None:
        self.app, self.n, self.on_done, self.app_path = app, concurrency, on_done, app_path
        self.may_start = may_start
        self.ctx = mp.get_context("spawn")
        self.lock = threading.Lock()  # guards pending and the slots' batches
        self.pending: deque[Claimed] = deque()
        self.slots: list[_Slot] = []
        # A slot's thread always waits on its child's pipe (a lone job's report wakes it, and
        # nothing else does); these pipes wake it for anything else: a batch with a deadline
        # sent by another thread, jobs the gate held, stop and kill.
        self.nudges: list[tuple[int, int]] = []
        self.closing = False
        self.killed = threading.Event()

    def start(self) -> None:
        for _ in range(self.n):
            self.slots.append(_Slot(self.ctx, self.app_path))
            r, w = os.pipe()
            os.set_blocking(w, False)
            for fd in (r, w):  # (not at exit: daemon slot threads may still poll it)
                weakref.finalize(self, os.close, fd).atexit = False
            self.nudges.append((r, w))
        for i in range(self.n):
            threading.Thread(
                target=self._loop, args=(i,), name=f"jobq-slot-{i}", daemon=True
            ).start()

    # -- dispatch ----------------------------------------------------------------------------

    def submit(self, c: Claimed) -> None:
        """Queue `c`; an idle child gets it at once, from this thread (no hand-off to the
        slot's thread on the way in)."""
        with self.lock:
            self.pending.append(c)
        self._fill()

    def _fill(self, first: int = 0) -> None:
        """Dispatch to idle children (slot `first` first) while jobs wait."""
        for k in range(self.n):
            i = (first + k) % self.n
            with self.lock:
                if not self.pending:
                    return
                if i >= len(self.slots) or self.slots[i].busy:
                    continue
            self._dispatch(i)

    def _dispatch(self, i: int) -> bool:
        """Send slot i's child a batch from `pending` if it is idle; True if one went."""
        while True:
            with self.lock:
                slot = self.slots[i]
                if slot.busy or not self.pending or self.killed.is_set():
                    return False
                k = 1
                if slot.short:
                    k = min(MAX_BATCH, len(self.pending), math.ceil(len(self.pending) / self.n))
                jobs = [self.pending.popleft() for _ in range(k)]
                slot.busy = True  # reserved: nobody else dispatches to it
            go: Batch = []
            later: Batch = []
            for c in jobs:
                verdict = self.may_start(c)
                if verdict:
                    go.append(c)
                elif verdict is None:
                    later.append(c)
            with self.lock:
                self.pending.extendleft(reversed(later))
                if not go:
                    slot.busy = False
                    if later:  # the gate says "not yet": the slot's thread asks again soon
                        self._nudge(i)
                        return False
                    continue  # all refused: try the next ones
                slot.batch, slot.settled, slot.why_killed = go, set(), {}
                slot.limits = [timeout_s(self.app, c) for c in go]
                state = slot.state
                state[NEXT] = state[RUNNING] = 0.0
                for pos in range(len(go)):
                    state[FLAGS + pos] = 0.0
                # (a child gone: its thread sees the pipe closed and handles it)
                with contextlib.suppress(OSError):
                    slot.conn.send(go)
            if any(limit is not None for limit in slot.limits):
                self._nudge(i)  # (its thread may be waiting with no deadline in view)
            return True

    def _nudge(self, i: int) -> None:
        with contextlib.suppress(BlockingIOError):  # (a full pipe: it is being woken anyway)
            os.write(self.nudges[i][1], b".")

    # -- a slot's thread ---------------------------------------------------------------------

    def _loop(self, i: int) -> None:
        with self.lock:
            self.slots[i].busy = False
        self._fill(i)
        nudged = self.nudges[i][0]
        polled: _Slot | None = None
        poller = select.poll()
        while True:
            with self.lock:
                slot = self.slots[i]
                busy = slot.busy
                if not busy and ((self.closing and not self.pending) or self.killed.is_set()):
                    with contextlib.suppress(OSError):
                        slot.conn.send(None)
                    return
                held = bool(self.pending)
            if slot is not polled:  # (a fresh child: its pipe)
                poller = select.poll()
                poller.register(nudged, select.POLLIN)
                poller.register(slot.conn.fileno(), select.POLLIN)
                polled = slot
            wait_s = self._wait_s(slot) if busy else GATE_POLL_S if held else None
            events = poller.poll(None if wait_s is None else wait_s * 1000)
            if any(fd == nudged for fd, _ in events):
                with contextlib.suppress(BlockingIOError):
                    os.read(nudged, 4096)
            if any(fd != nudged for fd, _ in events):  # a report, or the child is gone
                try:
                    report: Report = slot.conn.recv()
                except (EOFError, OSError):
                    self._died(i, slot)
                    if self.killed.is_set():
                        return
                    continue
                self._reported(i, slot, report)
            elif busy:
                self._check_deadline(slot)
            else:
                self._fill(i)

    def _wait_s(self, slot: _Slot) -> float | None:
        """How long the slot's thread may wait for a report: until the running job's deadline,
        or, if a later job of the batch has a limit, no longer than that limit from now (it
        cannot have started before now, so its deadline is later)."""
        now = time.monotonic()
        state = slot.state
        nxt = int(state[NEXT])
        until: float | None = None
        if state[RUNNING] and nxt >= 1 and (limit := slot.limits[nxt - 1]) is not None:
            until = state[BEGAN] + limit
        for limit in slot.limits[nxt:]:
            if limit is not None and (until is None or now + limit < until):
                until = now + limit
        return None if until is None else max(0.0, until - now) + 0.001

    def _check_deadline(self, slot: _Slot) -> None:
        """Kill the child if the job it runs is past its deadline (holding the shared lock, the
        child cannot move on to its next job meanwhile); its thread then sees the pipe close."""
        state = slot.state
        with _held(slot.lock):
            nxt = int(state[NEXT])
            if not state[RUNNING] or nxt < 1 or (limit := slot.limits[nxt - 1]) is None:
                return
            if time.monotonic() < state[BEGAN] + limit:
                return
            slot.why_killed[nxt - 1] = "timeout"
            slot.proc.kill()

    def _reported(self, i: int, slot: _Slot, report: Report) -> None:
        briefs, over = report
        with self.lock:
            outcomes = [_outcome(slot.batch[b[0]], b) for b in briefs]
            slot.settled.update(b[0] for b in briefs)
            if over:
                short = all(o.runtime_s < BATCH_RUNTIME_S for o in outcomes)
                slot.short = short and bool(outcomes)
                slot.batch, slot.limits = [], []
                slot.busy = False
        if over:  # keep the child busy while this thread reports
            self._fill(i)
        for outcome in outcomes:
            self.on_done(outcome)

    def _died(self, i: int, slot: _Slot) -> None:
        """The child is gone (killed for a timeout or a cancel, or it died): the job it was
        running ends (or, at shutdown, is left to the worker's requeue), the batch's jobs it had
        not started go back to the front of the pool, and a fresh child takes the slot."""
        slot.proc.join(1)
        outcomes: list[Outcome] = []
        with contextlib.suppress(EOFError, OSError):  # what it said before it died
            while slot.conn.poll(0):
                report: Report = slot.conn.recv()
                with self.lock:
                    outcomes.extend(_outcome(slot.batch[b[0]], b) for b in report[0])
                    slot.settled.update(b[0] for b in report[0])
        if self.killed.is_set():
            # kill() ended the child at shutdown: the worker requeues its jobs; reporting a
            # failure here would race that requeue and count the attempt.
            for outcome in outcomes:
                self.on_done(outcome)
            return
        if not slot.batch and not outcomes:
            # It died idle (it could not import the app, say): don't respawn in a hot loop.
            log.error(
                "worker child process exited while idle (exit code %s); starting a new one",
                slot.proc.exitcode,
            )
            self.killed.wait(IDLE_DEATH_PAUSE_S)
        state = slot.state
        nxt, began = int(state[NEXT]), state[BEGAN]
        running = nxt - 1 if state[RUNNING] else -1
        back: Batch = []
        with self.lock:
            for pos, c in enumerate(slot.batch):
                if pos in slot.settled:
                    continue
                if pos != running:
                    # Not started, or ended with its report lost in the child: to the server
                    # both are jobs not run yet (an innocent batch-mate of a job that killed its
                    # child must not be failed, nor dead-lettered on its only attempt).
                    back.append(c)
                    continue
                why = slot.why_killed.get(pos)
                if why == "timeout":
                    outcome = timed_out(self.app, c, slot.limits[pos] or 0)
                elif why == "cancel":
                    outcome = _cancelled(c)
                else:
                    exc = RuntimeError(
                        f"worker child process died while running job {c.id} "
                        f"(exit code {slot.proc.exitcode})"
                    )
                    log.error("%s; starting a new one", exc)
                    outcome = failure(c, exc, retry_delay(self.app, c), tb=False)
                if why == "timeout":
                    log.warning(
                        "job %s exceeded its timeout of %ss: killed its child process",
                        c.id,
                        slot.limits[pos],
                    )
                outcomes.append(_stamped(outcome, began))
            self.pending.extendleft(reversed(back))
        for outcome in outcomes:
            self.on_done(outcome)
        self._replace(i)

    def _replace(self, i: int) -> None:
        old = self.slots[i]
        fresh = _Slot(self.ctx, self.app_path)
        old.kill()
        with self.lock:
            if self.killed.is_set():
                fresh.kill()
                return
            fresh.short = old.short
            fresh.busy = False
            self.slots[i] = fresh
        self._fill(i)

    # -- from the worker ---------------------------------------------------------------------

    def drain_pending(self) -> list[Claimed]:
        """Every job not started: those waiting in the pool, and those of the children's
        batches not started yet (withdrawn: the child skips them)."""
        out: list[Claimed] = []
        with self.lock:
            out.extend(self.pending)
            self.pending.clear()
            for slot in self.slots:
                with _held(slot.lock):
                    nxt = int(slot.state[NEXT])
                    for pos in range(nxt, len(slot.batch)):
                        if pos not in slot.settled:
                            slot.state[FLAGS + pos] = 1.0
                            slot.settled.add(pos)
                            out.append(slot.batch[pos])
        return out

    def stop(self) -> None:
        with self.lock:
            self.closing = True
        for i in range(len(self.nudges)):
            self._nudge(i)

    def kill(self) -> None:
        self.killed.set()
        with self.lock:
            slots = list(self.slots)
        for slot in slots:
            slot.kill()
        for i in range(len(self.nudges)):
            self._nudge(i)

    def cancel(self, job_id: str) -> bool:
        """Stop `job_id`: kill the child that runs it, or withdraw it from a child's batch (or
        from the pool, where a job whose child died waits again) before it starts."""
        withdrawn: Claimed | None = None
        with self.lock:
            for c in self.pending:
                if c.id == job_id:
                    self.pending.remove(c)
                    withdrawn = c
                    break
            for slot in self.slots if withdrawn is None else ():
                pos = next(
                    (
                        p
                        for p, c in enumerate(slot.batch)
                        if c.id == job_id and p not in slot.settled
                    ),
                    None,
                )
                if pos is None:
                    continue
                with _held(slot.lock):
                    nxt = int(slot.state[NEXT])
                    if pos >= nxt:
                        slot.state[FLAGS + pos] = 1.0
                        slot.settled.add(pos)
                        withdrawn = slot.batch[pos]
                    elif pos == nxt - 1 and slot.state[RUNNING]:
                        slot.why_killed[pos] = "cancel"
                        slot.proc.kill()  # its thread sees the pipe close and reports it
                        return True
                    else:
                        return False  # it ended: its outcome is on its way
                break
        if withdrawn is None:
            return False
        self.on_done(_stamped(_cancelled(withdrawn, " (before it started)"), time.monotonic()))
        return True
