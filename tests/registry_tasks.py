"""Tasks for tests/test_registry.py: a worker of this module publishes `double`'s settings,
which by-name submits from elsewhere must take. ``App()`` reads JOBQ_URL and JOBQ_PREFIX."""

from __future__ import annotations

from jobq import App

app = App()


@app.task(queue="special", retries=2, priority=7, timeout=30, result_ttl=600)
def double(x: int) -> int:
    return 2 * x
