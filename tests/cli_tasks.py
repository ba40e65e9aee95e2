"""Tasks for the CLI tests (tests/test_cli.py), served by a real `jobq worker cli_tasks:app`.

``App()`` reads JOBQ_URL and JOBQ_PREFIX from the environment the test gives the subprocess.
"""

from __future__ import annotations

import os
import time

from jobq import App, current_job

app = App()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def explode(message: str) -> None:
    raise ValueError(message)


@app.task
def needs_file(path: str) -> str:
    """Fails until `path` exists: a job that succeeds once re-run after a fix."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    return "found"


@app.task
def halfway(path: str) -> str:
    """Reports 50% progress, then runs until `path` exists or it is asked to cancel (at most
    60 s): a job that is running for as long as a test needs."""
    ctx = current_job()
    assert ctx is not None
    ctx.progress(0.5, "halfway there")
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        if ctx.cancelled():
            return "stopped"
        time.sleep(0.05)
    return "done"
