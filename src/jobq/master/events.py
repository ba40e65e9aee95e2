"""`GET /v1/events`: the broker's event stream as Server-Sent Events, resumable.

One thread per master reads the stream (XREAD BLOCK) and fans each batch out to the connected
clients' bounded queues (the `EventHub` of hub.py); a client reads the durable stream itself
only to catch up when it connects (``Last-Event-ID`` / ``since``), a page at a time and at most
a few clients at once. So a hundred open dashboards cost one reader, not a hundred, and leave
the thread pool to the API. A client too slow to drain its queue is dropped (it reconnects with
``Last-Event-ID`` and resumes from the stream), never buffered without bound; beyond
`max_streams` open streams a new one is refused with 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import BrokerError
from ..spread import EventCursor
from .context import Context, ctx
from .hub import PAGE, Event, EventHub
from .schemas import ErrorOut

#: A stream id, or one per partition joined by '_' (spread.EventCursor).
EVENT_ID = EventCursor.PATTERN
KEEPALIVE_S = 15.0

router = APIRouter()


def _key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


async def _stream(
    hub: EventHub, last: str, job: str | None, queue: str | None
) -> AsyncIterator[bytes]:
    # Ends when the client goes away: Starlette cancels the generator on disconnect. The
    # subscription is taken here, not in the route, so it is released whatever happens.
    sub = hub.subscribe(job, queue)
    if sub is None:
        yield b": too many event streams open; retry later\n\n"
        return
    try:
        yield b"retry: 2000\n: connected\n\n"
        # Catch up from the durable stream; live events queue meanwhile (and are skipped
        # below if the backlog already had them). Overflowing here costs nothing: the next
        # page reads from the stream anyway.
        while True:
            if sub.overflowed:
                sub.restart()
            try:
                page = await hub.backlog(last)
            except BrokerError:
                yield b": broker unreachable, retrying\n\n"
                await asyncio.sleep(1.0)
                continue
            for ev in page:
                last = ev.id
                if sub.matches(ev):
                    yield ev.frame
            if len(page) < PAGE:
                break
        sub.live = True
        while not hub.stopped:
            if sub.overflowed:
                yield b": too slow, dropped: reconnect with Last-Event-ID to resume\n\n"
                return
            got: Event | None
            try:
                got = await asyncio.wait_for(sub.items.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if got is not None and _key(got.id) > _key(last):
                last = got.id
                yield got.frame
    finally:
        hub.unsubscribe(sub)


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
        503: {"model": ErrorOut, "description": "Too many event streams open"},
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
        raise HTTPException(
            400, f"{field} must be an event id as sent in `id:` (like 1700000000000-0)"
        )
    if c.hub.full:
        raise HTTPException(
            503,
            f"{c.hub.max_streams} event streams are open already (the master's limit); retry later",
            headers={"Retry-After": "5"},
        )
    if start is None:
        start = await run_in_threadpool(c.app.store.last_event_id)
    return StreamingResponse(
        _stream(c.hub, start, job, queue),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
