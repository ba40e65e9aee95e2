"""Tasks for tests/test_worker_semantics.py, run by real `jobq worker` subprocesses as
``semantics_tasks:app`` (URL and prefix from JOBQ_URL / JOBQ_PREFIX, as the test sets them).

Facts go where sched_tasks puts them (`sched_tasks.record`: a Redis list per tag, stamped with
the server's clock); `overlap` also keeps a live count of the attempts of its tag running at
once, so a test reads the most that ever ran together.
"""

from __future__ import annotations

import asyncio
import time

from sched_tasks import _app, fact_key, record, wait_gate

from jobq import App, current_job


def running_key(prefix: str, tag: str) -> str:
    """The counter of the attempts of `tag` running now (INCR at start, DECR at the end)."""
    return fact_key(prefix, tag) + ":now"


def seen_key(prefix: str, tag: str) -> str:
    """The list of the counts each attempt of `tag` saw as it started (its max = the peak)."""
    return fact_key(prefix, tag) + ":seen"


def _enter(tag: str) -> None:
    app = _app()
    r, prefix = app.store.r, app.settings.prefix
    r.rpush(seen_key(prefix, tag), r.incr(running_key(prefix, tag)))


def _leave(tag: str) -> None:
    app = _app()
    app.store.r.decr(running_key(app.settings.prefix, tag))


def overlap(tag: str, seconds: float) -> None:
    """Counted while it runs: sleeps `seconds`."""
    _enter(tag)
    try:
        time.sleep(seconds)
    finally:
        _leave(tag)


async def overlap_async(tag: str, seconds: float) -> None:
    """The async flavour of `overlap`."""
    _enter(tag)
    try:
        await asyncio.sleep(seconds)
    finally:
        _leave(tag)


def deaf(tag: str, seconds: float) -> str:
    """Ignores any cancel request: sleeps `seconds`, recording its start and its end."""
    record(tag, "start")
    time.sleep(seconds)
    record(tag, "end")
    return "finished anyway"


async def deaf_async(tag: str, seconds: float) -> str:
    """The async flavour of `deaf`."""
    record(tag, "start")
    await asyncio.sleep(seconds)
    record(tag, "end")
    return "finished anyway"


def polite(tag: str, limit_s: float = 60.0) -> str:
    """Works in small steps until its cancel is requested, then returns normally (no raise)."""
    ctx = current_job()
    assert ctx is not None
    record(tag, "start")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if ctx.cancelled():
            record(tag, "saw-cancel")
            return "stopped early"
        time.sleep(0.05)
    return "never cancelled"


def gated(tag: str) -> str:
    """Records its start, waits for the test to open the gate of `tag`, records its end."""
    record(tag, "start")
    assert wait_gate(tag), "the gate was never opened"
    record(tag, "end")
    return "through"


def child(tag: str) -> str:
    """A dependent: records that it ran (it must not, once its parent was cancelled)."""
    record(tag, "child")
    return "ran"


def make_app(url: str | None = None, prefix: str | None = None) -> App:
    a = App(url, prefix=prefix)
    for fn in (overlap, overlap_async, deaf, deaf_async, polite, gated, child):
        a.task(fn)
    return a


app = make_app()
