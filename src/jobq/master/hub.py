"""The master's event hub: one thread per master reads the broker's event stream (XREAD BLOCK)
and fans each batch out to the connected clients' bounded queues, so a hundred open dashboards
cost one reader, not a hundred. A client too slow to drain its queue is dropped (it reconnects
with ``Last-Event-ID`` and resumes from the stream), never buffered without bound. The route that
serves the stream as Server-Sent Events is `events.py`; `Context` holds the hub (context.py), so
the hub knows neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

import orjson
from starlette.concurrency import run_in_threadpool

from ..errors import BrokerError
from ..outage import Outage
from ..store import Store

log = logging.getLogger("jobq.master")

PAGE = 500
CATCH_UP_READERS = 4
"""Clients reading the stream's backlog at once (each read is a thread-pool call)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One stream entry, its SSE frame encoded once for every client."""

    id: str
    job: str | None
    queue: str | None
    frame: bytes


def _event(event_id: str, fields: dict[str, str]) -> Event:
    data = {
        "id": event_id,
        "time": int(event_id.split("-", 1)[0]),
        "job": fields.get("job"),
        "state": fields.get("state"),
        "queue": fields.get("queue"),
        "info": fields.get("info"),
    }
    frame = b"id: %s\nevent: job\ndata: %s\n\n" % (event_id.encode(), orjson.dumps(data))
    return Event(event_id, fields.get("job"), fields.get("queue"), frame)


class Subscriber:
    """One open stream: its filters and a bounded queue the hub fills (on the event loop)."""

    def __init__(self, job: str | None, queue: str | None, size: int) -> None:
        self.job = job
        self.queue = queue
        self.items: asyncio.Queue[Event | None] = asyncio.Queue(size)
        self.overflowed = False
        self.live = False
        """Caught up: from now on an overflow drops the stream (before, it only restarts it)."""

    def matches(self, ev: Event) -> bool:
        return (self.job is None or ev.job == self.job) and (
            self.queue is None or ev.queue == self.queue
        )

    def offer(self, ev: Event) -> bool:
        """Queue `ev` if it matches; False once the queue is full (the client is too slow)."""
        if self.overflowed:
            return False
        if self.matches(ev):
            try:
                self.items.put_nowait(ev)
            except asyncio.QueueFull:
                self.overflowed = True
                return False
        return True

    def restart(self) -> None:
        """Forget what was queued: the caller reads it again from the durable stream."""
        while not self.items.empty():
            self.items.get_nowait()
        self.overflowed = False


class EventHub:
    """The master's one stream reader and its subscribers (see the module docstring)."""

    def __init__(
        self, store: Store, block_ms: int = 1000, max_streams: int = 100, queue_size: int = 1000
    ) -> None:
        self.store = store
        self.block_ms = block_ms
        self.max_streams = max_streams
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.reads = 0
        """Stream reads by the hub's thread (one per batch, whatever the number of clients)."""
        self.dropped = 0
        """Streams closed because their client fell `queue_size` events behind."""
        self._last: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._catch_up: asyncio.Semaphore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage = Outage(log, "master: event reader")

    def thread_alive(self) -> bool | None:
        """For /healthz: is the reader thread running (None before start)?"""
        return None if self._thread is None else self._thread.is_alive()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._catch_up = asyncio.Semaphore(CATCH_UP_READERS)
        self._stop.clear()
        try:  # before serving, so no event falls between a client's catch-up and the hub
            self._last = self.store.last_event_id()
        except BrokerError as exc:
            log.debug("event reader: %s (will retry)", exc)
        self._thread = threading.Thread(target=self._run, name="jobq-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_all)
        if self._thread:
            self._thread.join(self.block_ms / 1000 + 5)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def full(self) -> bool:
        return len(self.subscribers) >= self.max_streams

    def subscribe(self, job: str | None, queue: str | None) -> Subscriber | None:
        """A new subscriber, or None when `max_streams` are open already."""
        if self.full:
            return None
        sub = Subscriber(job, queue, self.queue_size)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def backlog(self, after: str) -> list[Event]:
        """Up to PAGE events after `after`, read from the stream (a few clients at a time)."""
        if self._catch_up is None:
            self._catch_up = asyncio.Semaphore(CATCH_UP_READERS)
        async with self._catch_up:
            got = await run_in_threadpool(self.store.read_events, after, PAGE, None)
        return [_event(i, f) for i, f in got]

    def _wake_all(self) -> None:
        for sub in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes its reader anyway
                sub.items.put_nowait(None)

    def _publish(self, events: list[Event]) -> None:
        for sub in list(self.subscribers):
            if sub.overflowed:
                continue
            for ev in events:
                if not sub.offer(ev):
                    if sub.live:
                        # Dropped now, not when its client next reads (it may never): the
                        # slot is free and the hub does no more work for it.
                        self.subscribers.discard(sub)
                        self.dropped += 1
                    break

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._last is None:
                    self._last = self.store.last_event_id()
                self.reads += 1
                got = self.store.read_events(self._last, PAGE, self.block_ms)
            except Exception as exc:  # the reader outlives any error (outage.py)
                self._stop.wait(max(1.0, self.outage.failed(exc)))
                continue
            self.outage.ok()
            if got and self._loop is not None:
                self._last = got[-1][0]
                events = [_event(i, f) for i, f in got]
                try:
                    self._loop.call_soon_threadsafe(self._publish, events)
                except RuntimeError:  # the loop closed under us: shutting down
                    return
