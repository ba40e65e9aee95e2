"""Waiting for many results at once without a thread per waiter: the engine under `aresult`.

A sync `Job.result` holds one thread in a BLPOP on ``done:<id>`` (the list the finishing script
pushes the outcome to, `lua/await.lua`). An asyncio app may have thousands of coroutines each
awaiting a result; a thread for each would defeat the point. Here a fixed few listener threads
per partition (`LANES`, each serving the ids that hash to it) serve every pending wait of an App:

- each new id is registered with the same `await` script a sync wait runs, from the App's
  executor (`Listener.register`: one pipelined round trip for every id that arrived meanwhile;
  a finished job's outcome, or a ``missing|`` marker for an unknown id, is pushed to its done
  list right there); the listener renews registrations every `RENEW_S` as a sync wait renews
  per slice, and gives back the registration of an id nobody awaits any more
  (`mode='leave'`);
- the listener blocks in ONE BLPOP over the done lists of every pending id of its share (they
  share the partition's hash tag, so one slot: no CROSSSLOT on a Cluster) plus its own wake-up
  list, for at most `SLICE_S`;
- each popped outcome resolves every asyncio future awaiting that id, on its own loop
  (`loop.call_soon_threadsafe`).

A listener blocked on a BLPOP that does not cover a new id yet (or that should give one back)
is woken through its wake-up list: the `await` script run on the listener's reserved id, which
no job has, pushes the ``missing|`` marker onto ``done:<that id>``, so the BLPOP returns and the
listener takes the change in. The wake-up goes out behind the registrations, in their round
trip (or alone: `poke`); at most one is in flight per listener, never sent from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .codes import Await
from .errors import BrokerUnavailable, JobqError, gave_up_waiting
from .faults import RAISED, translate
from .model import JobRecord
from .scripts import Batch
from .shard import Shard, _outcome_record, redact
from .topology import is_sentinel

log = logging.getLogger("jobq.aio")

#: Longest single BLPOP of a listener (a dead connection is noticed after at most this long;
#: the client's socket timeout is longer).
SLICE_S = 5.0
#: How often a pending wait's registration is renewed (a sync wait renews once per slice).
RENEW_S = 5.0
#: The marker the await script pushes for an id it does not know (also the wake-up message).
MISSING = b"missing|"


@dataclass
class _Entry:
    """Everyone in this App awaiting one job id: one registration on the broker for all."""

    futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[JobRecord | None]]] = field(
        default_factory=list
    )
    registered: bool = False
    renewed_at: float = 0.0


def _resolve(fut: asyncio.Future[JobRecord | None], rec: JobRecord | None) -> None:
    if not fut.done():
        fut.set_result(rec)


def _reject(fut: asyncio.Future[JobRecord | None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _tell(entry: _Entry, how: Callable[..., None], value: object) -> None:
    """Hand `value` to every future of `entry` on its own loop (a closed loop is skipped)."""
    for loop, fut in entry.futures:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            loop.call_soon_threadsafe(how, fut, value)


class Listener:
    """The pending waits of one partition, and the thread blocking on their done lists."""

    def __init__(self, shard: Shard, part: int, lane: int = 0) -> None:
        self.shard = shard
        self.part = part
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        #: Ids `register` (on the executor) has yet to register; `_new`: ids the listener
        #: registers itself (those whose registration failed: it retries through outages).
        self._unregistered: set[str] = set()
        self._registering = False
        self._new: set[str] = set()
        self._leaving: set[str] = set()
        self._blocking = False
        self._poked = False
        self._closed = False
        #: The listener's own wake-up id: no job has it (a random suffix after a name no
        #: submit makes), so the await script answers "not found" and pushes the marker.
        self._wake_id = f"aio-wake:{uuid.uuid4().hex}"
        self._done_prefix = shard.keys.done("").encode()
        self._wake_key = shard.keys.done(self._wake_id).encode()
        self._thread = threading.Thread(
            target=self._run, name=f"jobq-aio-wait-{part}.{lane}", daemon=True
        )
        self._thread.start()

    # -- called on event loops (never blocks: a lock held for a few dict operations) ---------

    def add(
        self, job_id: str, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[JobRecord | None]
    ) -> bool:
        """Await `job_id` with `fut`. True if the caller must run `register` off the loop
        (a new id, and no `register` already on its way to take it)."""
        with self._cond:
            if self._closed:
                raise JobqError("this App was closed: open it again (or use a new one) to wait")
            entry = self._entries.get(job_id)
            if entry is not None:
                entry.futures.append((loop, fut))
                return False
            self._entries[job_id] = _Entry([(loop, fut)], renewed_at=time.monotonic())
            self._leaving.discard(job_id)
            self._cond.notify_all()
            self._unregistered.add(job_id)
            if self._registering:
                return False
            self._registering = True
            return True

    def discard(self, job_id: str, fut: asyncio.Future[JobRecord | None]) -> bool:
        """`fut` no longer awaits `job_id` (cancelled, timed out); the last one to go gives the
        registration back. True if the caller must run `poke` off the loop, so the listener
        (blocked) does that now rather than at its next slice."""
        with self._cond:
            entry = self._entries.get(job_id)
            if entry is None:
                return False
            entry.futures = [(lp, f) for lp, f in entry.futures if f is not fut]
            if entry.futures:
                return False
            del self._entries[job_id]
            self._new.discard(job_id)
            self._unregistered.discard(job_id)
            if entry.registered:
                self._leaving.add(job_id)
            return self._wants_poke() if self._leaving else False

    def pending(self) -> int:
        """How many job ids this listener waits on (for tests and the bench)."""
        with self._cond:
            return len(self._entries)

    def _wants_poke(self) -> bool:
        if self._blocking and not self._poked:
            self._poked = True
            return True
        return False

    # -- called on the App's executor ---------------------------------------------------------

    def register(self) -> None:
        """Register every id `add` took since the last call, in one pipelined round trip with
        the listener's wake-up behind them (when it is blocked without them), so its next
        BLPOP covers them. Ids that could not be registered (the broker did not answer) are
        left to the listener, which rides out the outage as a sync wait does."""
        while True:
            with self._cond:
                ids = list(self._unregistered)
                self._unregistered.clear()
                if not ids:
                    self._registering = False
                    return
                wake = self._wants_poke()
            batch = Batch()
            scripts = self.shard.scripts
            for i in ids:
                scripts.await_(batch, i, push=True)
            if wake:
                scripts.await_(batch, self._wake_id, push=True)
            try:
                codes = scripts.execute(batch.calls)[: len(ids)]
            except Exception:
                with self._cond:
                    self._poked = False
                    self._new.update(i for i in ids if i in self._entries)
                    self._cond.notify_all()
                continue
            self._registered(ids, codes)

    def poke(self) -> None:
        """Make the listener's BLPOP return (one script call), so it sees what changed."""
        try:
            self.shard.scripts.await_(self.shard.r, self._wake_id, push=True)
        except Exception as exc:  # the next slice sees it anyway
            log.debug("could not wake the result listener of partition %d: %s", self.part, exc)
            with self._cond:
                self._poked = False

    def close(self, why: BaseException) -> None:
        """Stop the thread; every pending wait raises `why`."""
        with self._cond:
            self._closed = True
            entries, self._entries = self._entries, {}
            self._unregistered.clear()
            self._cond.notify_all()
        for entry in entries.values():
            _tell(entry, _reject, why)

    # -- the listener thread ------------------------------------------------------------------

    def _run(self) -> None:
        outage_started = 0.0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or bool(self._entries or self._leaving))
                if self._closed:
                    return
                fresh, self._new = self._new, set()
                gone, self._leaving = self._leaving, set()
                now = time.monotonic()
                due = [
                    i
                    for i, e in self._entries.items()
                    if i not in fresh
                    and i not in self._unregistered
                    and now - e.renewed_at >= RENEW_S
                ]
                keys = [self._wake_key, *(self._done_prefix + i.encode() for i in self._entries)]
                self._blocking = True
            try:
                self._register(fresh, due, gone)
                popped = self.shard.r.blpop(keys, timeout=SLICE_S) if len(keys) > 1 else None
            except RAISED as exc:
                with self._cond:
                    self._blocking = False
                    if self._closed:
                        return
                    # Not registered for sure: register those again on the next turn.
                    self._new |= {i for i in fresh if i in self._entries}
                    self._leaving |= gone
                err = translate(exc, redact(self.shard.url), "waiting for a result")
                outage_started = outage_started or time.monotonic()
                waited = time.monotonic() - outage_started
                if not isinstance(err, BrokerUnavailable) or waited > self.shard.outage_wait_s:
                    if isinstance(err, BrokerUnavailable):
                        sentinel = is_sentinel(self.shard.url)
                        err = gave_up_waiting(err, waited, "waiting for a result", sentinel)
                    self._fail_all(err)
                    outage_started = 0.0
                    continue
                with self._cond:  # ride out a restart, a failover or a blip, like a sync wait
                    self._cond.wait_for(lambda: self._closed, 0.2)
                continue
            outage_started = 0.0
            with self._cond:
                self._blocking = False
                if popped is None:
                    continue
                key, message = popped
                if key == self._wake_key:
                    self._poked = False
                    continue
                job_id = key[len(self._done_prefix) :].decode()
                entry = self._entries.pop(job_id, None)
            if entry is not None:  # else nobody awaits it any more: the message is dropped
                rec = None if message.startswith(MISSING) else _outcome_record(job_id, message)
                _tell(entry, _resolve, rec)

    def _register(self, fresh: set[str], due: list[str], gone: set[str]) -> None:
        """One pipelined round trip: leave for `gone`, register `fresh`, renew `due`."""
        if not (fresh or due or gone):
            return
        batch = Batch()
        scripts = self.shard.scripts
        for i in gone:
            scripts.await_(batch, i, mode="leave")
        order = [*fresh, *due]
        for i in fresh:
            scripts.await_(batch, i, push=True)
        for i in due:
            scripts.await_(batch, i, push=True, mode="renew")
        replies = scripts.execute(batch.calls)[len(gone) :]
        self._registered(order, replies)

    def _registered(self, ids: list[str], codes: list[Any]) -> None:
        now = time.monotonic()
        with self._cond:
            for job_id, code in zip(ids, codes, strict=True):
                entry = self._entries.get(job_id)
                if entry is not None:
                    # Registered: counted as a waiter (the finishing script pushes to us);
                    # otherwise the outcome or the not-found marker is in the done list already.
                    entry.registered = int(code) == Await.REGISTERED
                    entry.renewed_at = now
                elif int(code) == Await.REGISTERED:  # given up while its registration flew
                    self._leaving.add(job_id)
                    self._cond.notify_all()

    def _fail_all(self, err: BaseException) -> None:
        with self._cond:
            entries, self._entries = self._entries, {}
            self._new.clear()
            self._unregistered.clear()
        for entry in entries.values():
            _tell(entry, _reject, err)


#: Listeners per partition: each blocks in its own BLPOP over its share of the pending ids
#: (by a hash of the id), so as many outcomes as lanes are popped per round trip when many
#: results flow at once; still a fixed few threads, whatever the number of waits.
LANES = 4


def lane_of(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) % LANES


class Waiter:
    """Every pending `aresult` of one store: `LANES` listeners per partition, each made on
    first use."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._listeners: dict[tuple[int, int], Listener] = {}
        self._lock = threading.Lock()
        self._closed = False

    def listener(self, part: int, job_id: str) -> Listener:
        """The listener serving `job_id`'s waits in partition `part`."""
        where = (part, lane_of(job_id))
        with self._lock:
            if self._closed:
                raise JobqError("this App was closed: open it again (or use a new one) to wait")
            got = self._listeners.get(where)
            if got is None:
                got = self._listeners[where] = Listener(self.store.shards[part], *where)
            return got

    def listeners(self) -> list[Listener]:
        with self._lock:
            return list(self._listeners.values())

    def threads(self) -> int:
        with self._lock:
            return len(self._listeners)

    def close(self, why: BaseException) -> list[Listener]:
        """Stop every listener (pending waits raise `why`); returns them, to be poked awake."""
        with self._lock:
            self._closed = True
            listeners = list(self._listeners.values())
        for lst in listeners:
            lst.close(why)
        return listeners
