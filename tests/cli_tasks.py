"""Tasks for the CLI tests (tests/test_cli.py), served by a real `jobq worker cli_tasks:app`.

``App()`` reads JOBQ_URL and JOBQ_PREFIX from the environment the test gives the subprocess.
"""

from __future__ import annotations

import os

from jobq import App

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
