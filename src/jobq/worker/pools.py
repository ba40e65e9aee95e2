"""Where attempts run: a thread pool, a process pool (hard timeouts by killing the child), or
an asyncio event loop. Each pool calls `on_done(outcome)` from its own threads.

Every pool runs at most `concurrency` attempts at once (`-c` is exact): the worker's prefetched
jobs wait in the pool (FIFO) until a slot frees, never beside the running ones. The pool stamps
each outcome with the moment its attempt began (`Outcome.began_s`), which the report turns into
the job's `started`.

Hard timeouts differ by pool, because only a process can be stopped from outside:
- process: the child is killed at the deadline and replaced; the attempt fails with TimeoutError.
- async: the task is cancelled at the deadline (``asyncio.wait_for``).
- thread: the attempt is reported failed at the deadline and a fresh thread takes its slot; the
  stuck thread runs on in the background and its late outcome is dropped (fencing would refuse
  it anyway).

A cancel the task ignores (`cancel`, after the worker's cancel grace): the process pool kills the
child, the async pool cancels the task; the thread pool cannot stop a thread, so it reports the
attempt cancelled at once and drops its late outcome, while the thread keeps its slot until the
task returns (so the pool never runs more than `concurrency` tasks' code at once). In the async
pool a sync task runs on the loop's executor of `concurrency` threads: a cancel or a timeout
ends its job, but the thread runs on until the function returns.

Every pool asks the worker's gate before it starts an attempt (`Gate`): that is where a begin
mark is nudged, and where a prefetched job whose lease is gone (or whose cancel came before it
started) is dropped. The thread and async pools ask right before the start; the process pool
asks as it sends a batch to a child, and withdraws a job of the batch that a cancel or a lost
lease reaches before it starts (procpool.py says why). A worker whose lease is gone stops the
attempt through `cancel` where the pool can (process, async).

The process pool (procpool.py) sends its children jobs in batches and takes their outcomes
back in batches; its module docstring says how each of these rules holds inside a batch.

Process-pool children ignore SIGTERM and SIGINT: the parent decides. A SIGTERM to the whole
process group (systemd's default KillMode) reaches the parent, which finishes running attempts
within its grace period or kills the children and requeues their jobs, never failing them.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..model import Claimed
from .attempts import (
    GATE_POLL_S,
    Attempt,
    Gate,
    OnDone,
    Pool,
    load_app,
)
from .attempts import always as _always
from .attempts import cancelled as _cancelled
from .attempts import stamped as _stamped
from .attempts import wait_gate as _wait_gate
from .procpool import ProcessPool
from .runner import run_async, run_sync, timed_out, timeout_s

if TYPE_CHECKING:
    from ..client import App

log = logging.getLogger("jobq.worker")

POOLS = ("thread", "process", "async")
__all__ = ["POOLS", "AsyncPool", "Pool", "ProcessPool", "ThreadPool", "load_app", "make_pool"]


def _drain(q: queue.Queue[Claimed | None]) -> list[Claimed]:
    out: list[Claimed] = []
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return out
        if item is not None:
            out.append(item)


class ThreadPool:
    """`concurrency` threads, one attempt each at a time; prefetched jobs wait in `pending`."""

    def __init__(
        self, app: App, concurrency: int, on_done: OnDone, *, may_start: Gate = _always
    ) -> None:
        self.app, self.n, self.on_done, self.may_start = app, concurrency, on_done, may_start
        self.pending: queue.Queue[Claimed | None] = queue.Queue()
        self.lock = threading.Lock()
        self.running: dict[Attempt, tuple[Claimed, float]] = {}  # -> (attempt, began)
        self.deadlines: dict[Attempt, float] = {}
        # Timed out: reported, its thread retires when it returns (a fresh one took its slot).
        self.abandoned: set[Attempt] = set()
        # Cancelled: reported, its thread keeps its slot and serves on when the task returns.
        self.dropped: set[Attempt] = set()
        self.closing = threading.Event()

    def start(self) -> None:
        for _ in range(self.n):
            self._spawn()
        threading.Thread(target=self._watchdog, name="jobq-watchdog", daemon=True).start()

    def _spawn(self) -> None:
        threading.Thread(target=self._loop, name="jobq-exec", daemon=True).start()

    def _loop(self) -> None:
        while True:
            c = self.pending.get()
            if c is None:
                return
            if not _wait_gate(self.may_start, c):
                continue
            a = (c.id, c.token)
            began = time.monotonic()
            limit = timeout_s(self.app, c)
            with self.lock:
                self.running[a] = (c, began)
                if limit is not None:
                    self.deadlines[a] = began + limit
            outcome = run_sync(self.app, c)
            with self.lock:
                self.running.pop(a, None)
                self.deadlines.pop(a, None)
                if a in self.abandoned:  # the watchdog already failed it; retire this thread
                    self.abandoned.discard(a)
                    return
                if a in self.dropped:  # reported cancelled already: serve on in this slot
                    self.dropped.discard(a)
                    continue
            self.on_done(_stamped(outcome, began))

    def _watchdog(self) -> None:
        while not self.closing.wait(0.05):
            now = time.monotonic()
            with self.lock:
                late = [a for a, dl in self.deadlines.items() if dl <= now]
                gone = []
                for a in late:
                    del self.deadlines[a]
                    if a in self.running:
                        gone.append(self.running.pop(a))
                        self.abandoned.add(a)
            for c, began in gone:
                log.warning("job %s exceeded its timeout; its thread is abandoned", c.id)
                self.on_done(_stamped(timed_out(self.app, c, timeout_s(self.app, c) or 0), began))
                self._spawn()

    def submit(self, c: Claimed) -> None:
        self.pending.put(c)

    def drain_pending(self) -> list[Claimed]:
        return _drain(self.pending)

    def stop(self) -> None:
        self.closing.set()
        for _ in range(self.n):
            self.pending.put(None)

    def kill(self) -> None:
        self.stop()  # threads cannot be stopped from outside; they are daemons

    def cancel(self, job_id: str) -> bool:
        """A thread cannot be stopped: report the attempt cancelled now and drop its late
        outcome; its thread keeps its slot until the task returns. Always False (not stopped)."""
        with self.lock:
            found = [(a, v) for a, v in self.running.items() if a[0] == job_id]
            for a, _v in found:
                del self.running[a]
                self.deadlines.pop(a, None)
                self.dropped.add(a)
        for _a, (c, began) in found:
            self.on_done(_stamped(_cancelled(c, " (its thread runs on until it returns)"), began))
        return False


class AsyncPool:
    """Attempts as tasks of one event loop, at most `concurrency` at once: the others wait in
    `waiting` (FIFO) until a slot frees. Sync tasks run on the loop's executor of as many
    threads, so they too never exceed `concurrency`."""

    def __init__(
        self, app: App, concurrency: int, on_done: OnDone, *, may_start: Gate = _always
    ) -> None:
        self.app, self.n, self.on_done, self.may_start = app, concurrency, on_done, may_start
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix="jobq-async-sync")
        self.loop.set_default_executor(self.executor)
        self.lock = threading.Lock()  # guards `waiting` and `busy` (submit runs on other threads)
        self.waiting: deque[Claimed] = deque()
        self.busy = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.by_id: dict[str, asyncio.Task[None]] = {}
        self.killed = False

    def start(self) -> None:
        threading.Thread(target=self.loop.run_forever, name="jobq-loop", daemon=True).start()

    def submit(self, c: Claimed) -> None:
        with self.lock:
            self.waiting.append(c)
        self.loop.call_soon_threadsafe(self._fill)

    def _fill(self) -> None:
        """Start waiting attempts while slots are free (on the loop)."""
        while not self.killed:
            with self.lock:
                if self.busy >= self.n or not self.waiting:
                    return
                c = self.waiting.popleft()
                self.busy += 1
            task = self.loop.create_task(self._run(c))
            self.tasks.add(task)
            task.add_done_callback(self._freed)

    def _freed(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        with self.lock:
            self.busy -= 1
        self._fill()

    async def _run(self, c: Claimed) -> None:
        while (verdict := self.may_start(c)) is None:
            await asyncio.sleep(GATE_POLL_S)
        if not verdict:
            return
        began = time.monotonic()
        task = asyncio.current_task()
        if task is not None:
            self.by_id[c.id] = task
        try:
            outcome = await run_async(self.app, c, timeout_s(self.app, c))
        except asyncio.CancelledError:
            if self.killed:  # shutdown: the worker requeues it
                return
            outcome = _cancelled(c)
        finally:
            self.by_id.pop(c.id, None)
        self.on_done(_stamped(outcome, began))

    def cancel(self, job_id: str) -> bool:
        task = self.by_id.get(job_id)
        if task is None:
            return False
        self.loop.call_soon_threadsafe(task.cancel)
        return True

    def drain_pending(self) -> list[Claimed]:
        with self.lock:
            out = list(self.waiting)
            self.waiting.clear()
        return out

    def stop(self) -> None:
        self.executor.shutdown(wait=False)  # (idle by now: the worker waited for its jobs)

    def kill(self) -> None:
        self.killed = True

        def cancel_all() -> None:
            for t in list(self.tasks):
                t.cancel()
            self.loop.stop()

        self.loop.call_soon_threadsafe(cancel_all)
        self.executor.shutdown(wait=False, cancel_futures=True)


def make_pool(
    kind: str,
    app: App,
    concurrency: int,
    on_done: OnDone,
    app_path: str | None,
    *,
    may_start: Gate = _always,
) -> Pool:
    from ..errors import ConfigError

    if kind == "thread":
        return ThreadPool(app, concurrency, on_done, may_start=may_start)
    if kind == "async":
        return AsyncPool(app, concurrency, on_done, may_start=may_start)
    if kind == "process":
        if not app_path:
            raise ConfigError("the process pool needs the app's import path ('module:app')")
        return ProcessPool(app, concurrency, on_done, app_path, may_start=may_start)
    raise ConfigError(f"unknown pool {kind!r}: choose one of {', '.join(POOLS)}")
