"""A worker module that does not have the tasks of tests/registry_tasks.py (only `other`):
it is given their jobs in tests/test_registry.py and must hand them back."""

from __future__ import annotations

from jobq import App

app = App()


@app.task
def other() -> str:
    return "other"
