"""Tasks for tests/test_remote.py, served by `jobq worker remote_tasks:app` logged in as the
worker role. ``App()`` reads JOBQ_URL/JOBQ_PREFIX from the environment the test gives it."""

from __future__ import annotations

import os
import time

from jobq import App, current_job

app = App()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(retries=2, backoff=0.01)
def fails_once(marker: str) -> str:
    """Fails its first attempt (creating `marker`), succeeds on the retry."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails on purpose")
    return "retried"


@app.task
def until_cancelled(started: str) -> str:
    """Runs until a cancel is requested (reads the flag and reports progress as the worker)."""
    open(started, "w").close()
    ctx = current_job()
    assert ctx is not None
    for _ in range(400):  # bounded: 20 s at most
        ctx.progress(0.5, "waiting for the cancel")
        if ctx.cancelled():
            return "stopped"
        time.sleep(0.05)
    return "never cancelled"


@app.task
def fan_out(x: int) -> int:
    """Submits a child job from inside a task and waits for it (a workflow step)."""
    return int(add.submit(x, x).result(timeout=20))


@app.periodic(every=1)
def beat() -> str:
    return "beat"
