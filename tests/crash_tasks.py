"""Tasks for the crash tests (tests/test_crash.py), run by real `jobq worker` subprocesses.

``App()`` takes its URL, prefix and timings (JOBQ_URL, JOBQ_PREFIX, JOBQ_LEASE_MS, ...) from the
environment the test gives the worker. Every task records what it does in a Redis list (see
`runs_key`), so a test can wait for "the job has started" and tell attempts apart without
reading worker logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

from jobq import App, current_job
from jobq.keys import Keys

app = App()


def runs_key(prefix: str, tag: str) -> str:
    """The list where tasks called with `tag` record each step (JSON objects, oldest first)."""
    return Keys(prefix).base + "crashtest:runs:" + tag


def record(tag: str, step: str) -> dict[str, Any]:
    """Append {step, job, attempt, token, pid, run} to the runs list of `tag`; return it.
    `run` counts the executions of the job (1 = its first): unlike `attempt`, it also goes up
    after a lost worker, which is not a counted attempt."""
    ctx = current_job()
    key = runs_key(app.settings.prefix, tag)
    runs = app.store.r.hincrby(key + ":run", ctx.id if ctx else "", 1 if step == "start" else 0)
    entry: dict[str, Any] = {
        "step": step,
        "job": ctx.id if ctx else None,
        "attempt": ctx.attempt if ctx else None,
        "token": ctx.token if ctx else None,
        "pid": os.getpid(),
        "run": int(runs),
    }
    app.store.r.rpush(key, json.dumps(entry))
    return entry


def for_attempt(seconds: float | list[float], run: int) -> float:
    """`seconds`, or its entry for this run of the job (the last one for later runs)."""
    if isinstance(seconds, list):
        return float(seconds[min(run, len(seconds)) - 1])
    return float(seconds)


@app.task
def record_and_sleep(tag: str, seconds: float | list[float]) -> dict[str, Any]:
    """Record the start, sleep (a long sleep = a hung job), record the end; return the start.

    `seconds` may be a list, one entry per run: [30, 0.1] hangs on the first run only.
    """
    start = record(tag, "start")
    time.sleep(for_attempt(seconds, start["run"]))
    record(tag, "end")
    return start


@app.task
async def async_record_and_sleep(tag: str, seconds: float | list[float]) -> dict[str, Any]:
    """The async flavour; records "cancelled" if the pool cancels it at its timeout."""
    start = record(tag, "start")
    try:
        await asyncio.sleep(for_attempt(seconds, start["run"]))
    except asyncio.CancelledError:
        record(tag, "cancelled")
        raise
    record(tag, "end")
    return start


@app.task
def kill_own_process(tag: str, kill_attempts: int) -> dict[str, Any]:
    """SIGKILL the process running this attempt on the first `kill_attempts` runs, else return."""
    start = record(tag, "start")
    if start["run"] <= kill_attempts:
        os.kill(os.getpid(), signal.SIGKILL)
    return start


@app.task
def echo(value: Any) -> Any:
    return value
