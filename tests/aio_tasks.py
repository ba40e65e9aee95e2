"""The HTTP tests' tasks (live_master.register_tasks) in a module a `jobq worker aio_tasks:app`
subprocess imports (tests/test_aio.py): ``App()`` reads JOBQ_URL and JOBQ_PREFIX from the
environment the test gives it."""

from __future__ import annotations

from live_master import register_tasks

from jobq import App

app = App()
register_tasks(app)
