"""Where attempts run: a thread pool, a process pool (hard timeouts by killing the child), or
an asyncio event loop. Each pool calls `on_done(outcome)` from its own threads.

Hard timeouts differ by pool, because only a process can be stopped from outside:
- process: the child is killed at the deadline and replaced; the attempt fails with TimeoutError.
- async: the task is cancelled at the deadline (``asyncio.wait_for``).
- thread: the attempt is reported failed at the deadline and a fresh thread takes its slot; the
  stuck thread runs on in the background and its late outcome is dropped (fencing would refuse
  it anyway).

Every pool asks the worker's gate right before it starts an attempt (`Gate`): that is where a
begin mark is nudged, and where a prefetched job whose lease is gone is dropped. A worker whose
lease is gone stops the attempt through `cancel` where the pool can (process, async).

Process-pool children ignore SIGTERM and SIGINT: the parent decides. A SIGTERM to the whole
process group (systemd's default KillMode) reaches the parent, which finishes running attempts
within its grace period or kills the children and requeues their jobs, never failing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import JobCancelled
from ..model import Claimed, Outcome
from .runner import failure, retry_delay, run_async, run_sync, timed_out, timeout_s

if TYPE_CHECKING:
    from ..client import App

log = logging.getLogger("jobq.worker")

OnDone = Callable[[Outcome], None]
#: Asked right before an attempt starts: True = start it, False = never (its lease is gone, see
#: leases.py), None = not yet (heartbeats are failing past the lease; ask again shortly).
Gate = Callable[[Claimed], "bool | None"]
POOLS = ("thread", "process", "async")
GATE_POLL_S = 0.1


def _always(_c: Claimed) -> bool:
    return True


def _wait_gate(may_start: Gate, c: Claimed) -> bool:
    """Block this pool thread until the gate says start (True) or never (False)."""
    while (verdict := may_start(c)) is None:
        time.sleep(GATE_POLL_S)
    return verdict


class Pool(Protocol):
    def start(self) -> None: ...
    def submit(self, c: Claimed) -> None: ...
    def drain_pending(self) -> list[Claimed]:
        """Take back jobs accepted but not started (to requeue them at shutdown)."""
        ...

    def stop(self) -> None:
        """Let running attempts finish, then end."""
        ...

    def kill(self) -> None:
        """End running attempts now where the pool can."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Stop one running attempt (a cancel the task ignored); False if the pool can't."""
        ...


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
    def __init__(
        self, app: App, concurrency: int, on_done: OnDone, *, may_start: Gate = _always
    ) -> None:
        self.app, self.n, self.on_done, self.may_start = app, concurrency, on_done, may_start
        self.pending: queue.Queue[Claimed | None] = queue.Queue()
        self.lock = threading.Lock()
        self.deadlines: dict[str, tuple[Claimed, float]] = {}
        self.abandoned: set[str] = set()
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
            limit = timeout_s(self.app, c)
            if limit is not None:
                with self.lock:
                    self.deadlines[c.id] = (c, time.monotonic() + limit)
            outcome = run_sync(self.app, c)
            with self.lock:
                self.deadlines.pop(c.id, None)
                if c.id in self.abandoned:  # the watchdog already failed it; retire this thread
                    self.abandoned.discard(c.id)
                    return
            self.on_done(outcome)

    def _watchdog(self) -> None:
        while not self.closing.wait(0.05):
            now = time.monotonic()
            with self.lock:
                late = [c for c, dl in self.deadlines.values() if dl <= now]
                for c in late:
                    del self.deadlines[c.id]
                    self.abandoned.add(c.id)
            for c in late:
                log.warning("job %s exceeded its timeout; its thread is abandoned", c.id)
                self.on_done(timed_out(self.app, c, timeout_s(self.app, c) or 0))
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
        return False  # a thread cannot be stopped; the task must check current_job().cancelled()


class AsyncPool:
    def __init__(
        self, app: App, concurrency: int, on_done: OnDone, *, may_start: Gate = _always
    ) -> None:
        self.app, self.n, self.on_done, self.may_start = app, concurrency, on_done, may_start
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.by_id: dict[str, asyncio.Task[None]] = {}
        self.killed = False

    def start(self) -> None:
        threading.Thread(target=self.loop.run_forever, name="jobq-loop", daemon=True).start()

    def submit(self, c: Claimed) -> None:
        self.loop.call_soon_threadsafe(self._start, c)

    def _start(self, c: Claimed) -> None:
        task = self.loop.create_task(self._run(c))
        self.tasks.add(task)
        self.by_id[c.id] = task
        task.add_done_callback(self.tasks.discard)

    async def _run(self, c: Claimed) -> None:
        while (verdict := self.may_start(c)) is None:
            await asyncio.sleep(GATE_POLL_S)
        if not verdict:
            self.by_id.pop(c.id, None)
            return
        try:
            outcome = await run_async(self.app, c, timeout_s(self.app, c))
        except asyncio.CancelledError:
            if self.killed:  # shutdown: the worker requeues it
                return
            outcome = failure(c, JobCancelled(f"job {c.id} was cancelled while running"), -1)
        finally:
            self.by_id.pop(c.id, None)
        self.on_done(outcome)

    def cancel(self, job_id: str) -> bool:
        task = self.by_id.get(job_id)
        if task is None:
            return False
        self.loop.call_soon_threadsafe(task.cancel)
        return True

    def drain_pending(self) -> list[Claimed]:
        return []

    def stop(self) -> None:
        pass

    def kill(self) -> None:
        self.killed = True

        def cancel_all() -> None:
            for t in list(self.tasks):
                t.cancel()
            self.loop.stop()

        self.loop.call_soon_threadsafe(cancel_all)


def load_app(path: str) -> App:
    """Import ``module:attribute`` (or ``module.attribute``) and return the App it names."""
    from ..client import App
    from ..errors import ConfigError

    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"app path {path!r} should look like 'package.module:app'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for app {path!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"{path!r} is not a jobq App (found {type(app).__name__})")
    return app


#: Signals a child ignores: the parent decides when attempts stop (a SIGTERM to the whole
#: process group, systemd's default, must not kill running attempts behind the parent's back).
PARENT_DECIDES = {signal.SIGINT, signal.SIGTERM}


def _child_main(app_path: str, conn: Connection) -> None:
    """A process-pool child: run attempts sent by the parent until told to stop."""
    for sig in PARENT_DECIDES:
        signal.signal(sig, signal.SIG_IGN)
    # Born with these blocked (see _Slot), so one sent before the lines above is dropped now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_DECIDES)
    app = load_app(app_path)
    while True:
        try:
            c = conn.recv()
        except EOFError:
            return
        if c is None:
            return
        conn.send(run_sync(app, c))


class _Slot:
    def __init__(self, ctx: Any, app_path: str) -> None:
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.proc = ctx.Process(target=_child_main, args=(app_path, child), daemon=True)
        # The child inherits this thread's signal mask: blocked from birth, a group SIGTERM
        # cannot kill it before it has set its signals to ignored.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_DECIDES)
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class ProcessPool:
    """N child processes (spawned, importing the app by path), one attempt each at a time."""

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
        self.pending: queue.Queue[Claimed | None] = queue.Queue()
        self.slots: list[_Slot] = []
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}  # job id -> slot index
        self.cancelled: set[str] = set()
        self.killed = threading.Event()

    def start(self) -> None:
        for i in range(self.n):
            slot = _Slot(self.ctx, self.app_path)
            self.slots.append(slot)
            threading.Thread(
                target=self._loop, args=(i,), name=f"jobq-slot-{i}", daemon=True
            ).start()

    def _loop(self, i: int) -> None:
        while True:
            c = self.pending.get()
            if c is None:
                with contextlib.suppress(OSError):
                    self.slots[i].conn.send(None)
                return
            if not _wait_gate(self.may_start, c):
                continue
            outcome = self._run(i, self.slots[i], c)
            if outcome is not None:
                self.on_done(outcome)

    def _run(self, i: int, slot: _Slot, c: Claimed) -> Outcome | None:
        limit = timeout_s(self.app, c)
        self.running[c.id] = i
        try:
            return self._exchange(i, slot, c, limit)
        finally:
            self.running.pop(c.id, None)
            self.cancelled.discard(c.id)

    def _exchange(self, i: int, slot: _Slot, c: Claimed, limit: float | None) -> Outcome | None:
        try:
            slot.conn.send(c)
            if slot.conn.poll(limit):
                result: Outcome = slot.conn.recv()
                return result
        except (EOFError, OSError):
            if self.killed.is_set():
                # kill() ended the child at shutdown: the worker requeues the job; reporting a
                # failure here would race that requeue and count the attempt.
                return None
            slot.proc.join(1)
            if c.id in self.cancelled:
                self._replace(i)
                return failure(c, JobCancelled(f"job {c.id} was cancelled while running"), -1)
            exc = RuntimeError(
                f"worker child process died while running job {c.id} "
                f"(exit code {slot.proc.exitcode})"
            )
            log.error("%s; starting a new one", exc)
            self._replace(i)
            return failure(c, exc, retry_delay(self.app, c), tb=False)
        log.warning("job %s exceeded its timeout of %ss: killing its child process", c.id, limit)
        self._replace(i)
        return timed_out(self.app, c, limit or 0)

    def _replace(self, i: int) -> None:
        with self.lock:
            self.slots[i].kill()
            self.slots[i] = _Slot(self.ctx, self.app_path)

    def submit(self, c: Claimed) -> None:
        self.pending.put(c)

    def drain_pending(self) -> list[Claimed]:
        return _drain(self.pending)

    def stop(self) -> None:
        for _ in range(self.n):
            self.pending.put(None)

    def kill(self) -> None:
        self.killed.set()
        with self.lock:
            for slot in self.slots:
                slot.kill()

    def cancel(self, job_id: str) -> bool:
        i = self.running.get(job_id)
        if i is None:
            return False
        self.cancelled.add(job_id)
        with self.lock:
            proc = self.slots[i].proc
        if proc.is_alive():
            proc.kill()  # the slot thread sees the pipe close and reports the cancel
        return True


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
