"""`GET /v1/events`: the broker's event stream as Server-Sent Events, resumable.

One thread per master blocks on the stream (XREAD BLOCK) and only wakes the connected clients;
each client then reads what it has not seen from the stream itself, from its own last id. So a
client that reconnects with ``Last-Event-ID`` (or falls behind) simply continues from the
durable stream, and a hundred open dashboards cost one blocking connection, not a hundred.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import BrokerError
from ..outage import Outage
from ..store import Store
from .context import Context, ctx

log = logging.getLogger("jobq.master")

EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
PAGE = 500
KEEPALIVE_S = 15.0

router = APIRouter()


class EventHub:
    """Wakes waiting SSE clients whenever the stream grows (one blocking reader per master)."""

    def __init__(self, store: Store, block_ms: int = 1000) -> None:
        self.store = store
        self.block_ms = block_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage = Outage(log, "master: event reader")

    def thread_alive(self) -> bool | None:
        """For /healthz: is the reader thread running (None before start)?"""
        return None if self._thread is None else self._thread.is_alive()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="jobq-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)
        if self._thread:
            self._thread.join(self.block_ms / 1000 + 5)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def waiter(self) -> asyncio.Event:
        """An event set at the next growth of the stream (take it before reading)."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
        self._event = asyncio.Event()

    def _run(self) -> None:
        last = None
        while not self._stop.is_set():
            try:
                if last is None:
                    last = self.store.last_event_id()
                got = self.store.read_events(last, PAGE, self.block_ms)
            except Exception as exc:  # the reader outlives any error (outage.py)
                self._stop.wait(max(1.0, self.outage.failed(exc)))
                continue
            self.outage.ok()
            if got and self._loop is not None:
                last = got[-1][0]
                self._loop.call_soon_threadsafe(self._wake)


def _frame(event_id: str, fields: dict[str, str]) -> bytes:
    data = {
        "id": event_id,
        "time": int(event_id.split("-", 1)[0]),
        "job": fields.get("job"),
        "state": fields.get("state"),
        "queue": fields.get("queue"),
        "info": fields.get("info"),
    }
    return b"id: %s\nevent: job\ndata: %s\n\n" % (event_id.encode(), orjson.dumps(data))


async def _stream(
    c: Context, last: str, job: str | None, queue: str | None
) -> AsyncIterator[bytes]:
    # Ends when the client goes away: Starlette cancels the generator on disconnect.
    store = c.app.store
    yield b"retry: 2000\n: connected\n\n"
    while not c.hub.stopped:
        woken = c.hub.waiter()
        try:
            batch = await run_in_threadpool(store.read_events, last, PAGE, None)
        except BrokerError:
            batch = []
            yield b": broker unreachable, retrying\n\n"
        for event_id, fields in batch:
            last = event_id
            if (job is None or fields.get("job") == job) and (
                queue is None or fields.get("queue") == queue
            ):
                yield _frame(event_id, fields)
        if len(batch) == PAGE:
            continue
        try:
            await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
        except TimeoutError:
            yield b": keep-alive\n\n"


@router.get(
    "/v1/events",
    tags=["events"],
    summary="Job state changes as Server-Sent Events (resumable)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`id: <stream id>`, `event: job`, `data: {id, time, job, state, "
            "queue, info}`; reconnect with Last-Event-ID to resume.",
        },
        400: {"description": "Malformed Last-Event-ID"},
    },
)
async def events(
    c: Annotated[Context, Depends(ctx)],
    last_event_id: str | None = Header(
        None, description="Resume after this event id (as sent in `id:`)."
    ),
    since: str | None = Query(
        None,
        description="Same as Last-Event-ID, for clients that cannot set headers; "
        "`0-0` replays the whole (capped) stream.",
    ),
    job: str | None = Query(None, max_length=200, description="Only this job's events."),
    queue: str | None = Query(None, max_length=200, description="Only this queue's events."),
) -> StreamingResponse:
    start = last_event_id or since
    if start is not None and not EVENT_ID.match(start):
        field = "Last-Event-ID" if last_event_id else "since"
        raise HTTPException(400, f"{field} must be a stream id like 1700000000000-0")
    if start is None:
        start = await run_in_threadpool(c.app.store.last_event_id)
    return StreamingResponse(
        _stream(c, start, job, queue),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
