"""Tasks for the scheduling tests (tests/test_scheduling.py), run by real `jobq worker`
subprocesses as ``sched_tasks:app``.

`make_app` builds an App with every task registered; the module-level ``app`` takes its URL and
prefix from the environment the test gives the worker (JOBQ_URL, JOBQ_PREFIX), and a test builds
its own with `make_app(url, prefix)` to submit. Tasks that must prove something record it in
Redis themselves (`record`): which worker ran them (SCHED_WORKER, set per worker by the test) and
when, by the server's clock, so no test reads worker logs or trusts its own timing.

Environment read by the tasks or the app:
- SCHED_WORKER: the label a worker's tasks record (the test sets it to the worker's --name);
- SCHED_PERIODIC: "<tag>:<seconds>" declares `@app.periodic(every=seconds)` of `periodic_tick`
  under the name "tick-<tag>" (only the workers of the periodic tests set it).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from jobq import App, JobCancelled, current_job
from jobq.keys import Keys

#: The rate limit of `limited` (what the rate-limit test measures against).
RATE_LIMIT = "25/s"


def fact_key(prefix: str, tag: str) -> str:
    """The Redis list where tasks called with `tag` record their facts (JSON, oldest first)."""
    return Keys(prefix).base + "sched:" + tag


def _app() -> App:
    ctx = current_job()
    assert ctx is not None and ctx.app is not None, "only callable inside a running job"
    return ctx.app


def server_us(app: App) -> int:
    """The server's clock in microseconds (one clock for every worker process)."""
    sec, usec = app.store.r.time()
    return int(sec) * 1_000_000 + int(usec)


def record(tag: str, step: str, **extra: Any) -> dict[str, Any]:
    """Append {step, job, worker, pid, t (server µs)} to the facts of `tag`; return it."""
    ctx = current_job()
    app = _app()
    entry: dict[str, Any] = {
        "step": step,
        "job": ctx.id if ctx else None,
        "worker": os.environ.get("SCHED_WORKER", ""),
        "pid": os.getpid(),
        "t": server_us(app),
        **extra,
    }
    app.store.r.rpush(fact_key(app.settings.prefix, tag), json.dumps(entry))
    return entry


def wait_gate(tag: str, timeout: float = 60.0) -> bool:
    """Block until the test opens the gate of `tag` (RPUSH to `<facts>:gate`); False on timeout."""
    app = _app()
    got = app.store.r.blpop([fact_key(app.settings.prefix, tag) + ":gate"], timeout=timeout)
    return got is not None


# -- plain values -------------------------------------------------------------------------------


def add(x: int, y: int) -> int:
    return x + y


def echo(value: Any, seconds: float = 0.0) -> Any:
    """Return `value` after `seconds` (so completion order can differ from submit order)."""
    time.sleep(seconds)
    return value


def append(prev: list[Any] | None, item: Any, seconds: float = 0.0) -> list[Any]:
    """A chain link: the previous result with `item` appended (after `seconds`)."""
    time.sleep(seconds)
    return [*(prev or []), item]


def collect(results: list[Any]) -> list[Any]:
    """A fan-in body: returns the list of its parents' results as it received it."""
    return results


def total(values: list[int]) -> int:
    return sum(values)


def boom(message: str = "boom") -> None:
    raise ValueError(message)


# -- tasks that record facts --------------------------------------------------------------------


def whoami(tag: str, seconds: float = 0.0) -> str:
    """Record which worker runs this job; return that worker's label."""
    entry = record(tag, "ran")
    time.sleep(seconds)
    return str(entry["worker"])


def limited(tag: str) -> int:
    """A rate-limited task: records its start time (server clock)."""
    return int(record(tag, "start")["t"])


def guarded(tag: str, seconds: float) -> int:
    """Counts how many jobs of `tag` run at once: INCR on start, DECR before returning (so the
    count is down before the job completes and its concurrency slot is given back); every value
    seen is recorded. Returns the count this job saw."""
    app = _app()
    r = app.store.r
    counter = fact_key(app.settings.prefix, tag) + ":running"
    seen = int(r.incr(counter))
    try:
        record(tag, "start", running=seen)
        time.sleep(seconds)
    finally:
        r.decr(counter)
    return seen


def gated(tag: str) -> str:
    """Records its start, waits for the test to open the gate, returns the job id."""
    entry = record(tag, "start")
    if not wait_gate(tag):
        raise TimeoutError("the test never opened the gate")
    return str(entry["job"])


def with_progress(tag: str) -> str:
    """Reports progress, records that it did, then waits for the gate."""
    ctx = current_job()
    assert ctx is not None
    assert ctx.progress(0.4, "parsed 4000 rows")
    record(tag, "reported")
    if not wait_gate(tag):
        raise TimeoutError("the test never opened the gate")
    ctx.progress(1.0, "done")
    return "finished"


def cooperative(tag: str, limit_s: float = 60.0) -> str:
    """Works in small steps until cancelled: then records it and raises JobCancelled."""
    ctx = current_job()
    assert ctx is not None
    record(tag, "start")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if ctx.cancelled():
            record(tag, "saw-cancel")
            raise JobCancelled(f"job {ctx.id} stopped on request")
        time.sleep(0.05)
    record(tag, "end")
    return "never cancelled"


def stubborn(tag: str, seconds: float) -> str:
    """Ignores any cancel request: sleeps `seconds`, then records that it finished."""
    record(tag, "start")
    time.sleep(seconds)
    record(tag, "end")
    return "finished anyway"


async def stubborn_async(tag: str, seconds: float) -> str:
    """The async flavour: never looks at the cancel flag."""
    record(tag, "start")
    await asyncio.sleep(seconds)
    record(tag, "end")
    return "finished anyway"


def periodic_tick(tag: str) -> str:
    """Fired by a periodic spec: records its job id (periodic:<name>:<due ms>)."""
    entry = record(tag, "tick")
    return str(entry["job"])


PLAIN_TASKS = [add, echo, append, collect, total, boom, whoami, guarded, gated, with_progress]
PLAIN_TASKS += [cooperative, stubborn, stubborn_async, periodic_tick]


def make_app(url: str | None = None, prefix: str | None = None) -> App:
    """An App with every task of this module registered (URL/prefix from the env if None)."""
    a = App(url, prefix=prefix)
    for fn in PLAIN_TASKS:
        a.task(fn)
    a.task(limited, rate_limit=RATE_LIMIT)
    periodic = os.environ.get("SCHED_PERIODIC")
    if periodic:
        tag, _, every = periodic.partition(":")
        a.periodic(every=float(every), name=f"tick-{tag}", args=[tag])(periodic_tick)
    return a


app = make_app()
