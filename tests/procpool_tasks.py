"""Tasks for the process-pool batch tests (tests/test_procpool.py): no broker needed, each
returns the pid of the child that ran it, so a test can tell which child ran what."""

from __future__ import annotations

import os
import time

from jobq import App

app = App()


@app.task()
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@app.task()
def die() -> int:
    os._exit(3)
