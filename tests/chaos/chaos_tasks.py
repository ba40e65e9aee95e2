"""Tasks the chaos scenarios run (tests/chaos/), in real `jobq worker` subprocesses.

The recorder is the task itself: every execution appends one JSON line when it starts and one
when its body ends to the scenario's log (`CHAOS_LOG`), a plain file opened with O_APPEND, so
the record survives whatever the scenario does to Valkey (kill, pause, rollback, partition).
Lines are far below PIPE_BUF, so concurrent appends from many processes never interleave.
Times are CLOCK_MONOTONIC, which is one clock for every process on the machine (and which the
clock-skew scenario leaves alone: it skews only the wall clock a worker sees).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

from jobq import App, current_job

app = App()


def append(entry: dict[str, Any]) -> None:
    """One line to the scenario's log, in a single write(2) on an O_APPEND descriptor."""
    path = os.environ["CHAOS_LOG"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def begin() -> dict[str, Any]:
    """Record the start of this execution; its `x` names it uniquely (results carry it)."""
    ctx = current_job()
    assert ctx is not None, "chaos tasks run only inside a worker"
    entry = {
        "k": "start",
        "x": uuid.uuid4().hex[:12],
        "job": ctx.id,
        "att": ctx.attempt,
        "tok": str(ctx.token),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "t": time.monotonic(),
        "wall": time.time(),
    }
    append(entry)
    return entry


def finish(start: dict[str, Any]) -> dict[str, Any]:
    """Record that the body ran to its end; return what the committed result must carry."""
    append({"k": "end", "x": start["x"], "job": start["job"], "t": time.monotonic()})
    return {"x": start["x"], "tok": start["tok"], "pid": start["pid"], "att": start["att"]}


@app.task
def work(seconds: float = 0.0, pad: str = "") -> dict[str, Any]:
    """A healthy job: sleep `seconds`, succeed (`pad` only makes the job bigger)."""
    start = begin()
    time.sleep(seconds)
    return finish(start)


@app.task
async def awork(seconds: float = 0.0) -> dict[str, Any]:
    """The async flavour of `work`."""
    start = begin()
    await asyncio.sleep(seconds)
    return finish(start)


@app.task
def poison(delay: float = 0.2) -> None:
    """Kill the process running this attempt (the whole worker in the thread pool, the child in
    the process pool), every time."""
    begin()
    time.sleep(delay)  # let the worker's other slots be mid-job when it dies
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
async def apoison(delay: float = 0.2) -> None:
    """The async flavour of `poison`: takes the event loop and the worker with it."""
    begin()
    await asyncio.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)
