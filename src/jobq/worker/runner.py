"""Run one claimed attempt and turn whatever happens into an `Outcome`.

Shared by every pool (and by process-pool children), so the rules live in one place: unknown
task (one the worker's own process lacks: the worker hands the others back) -> failed without
retry; undecodable payload -> dead-lettered with the decode error; an
exception -> retried after an exponential, jittered back-off while attempts remain; `Retry` ->
retried after the delay it asks for; an unencodable result -> failed, naming the type.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import DecodeError, Retry, SerializationError
from ..model import Claimed, Outcome
from ..registry import UnknownTask
from ..tasks import JobContext, Task, reset_current, set_current

if TYPE_CHECKING:
    from ..client import App

NO_RETRY = -1
MAX_BACKOFF_MS = 3_600_000


def backoff_delay_ms(base_ms: int, attempt: int, rng: random.Random | None = None) -> int:
    """Exponential back-off with jitter: base * 2^(attempt-1), capped at an hour, times 0.5-1.5."""
    scale = (rng or random).uniform(0.5, 1.5)
    return int(min(base_ms * 2 ** max(attempt - 1, 0), MAX_BACKOFF_MS) * scale)


def error_dict(exc: BaseException, with_traceback: bool = True) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(exc)) if with_traceback else ""
    return {"type": type(exc).__name__, "message": str(exc), "traceback": tb}


def failure(c: Claimed, exc: BaseException, retry_delay_ms: int, tb: bool = True) -> Outcome:
    return Outcome(c, ok=False, error=error_dict(exc, tb), retry_delay_ms=retry_delay_ms)


def retry_delay(app: App, c: Claimed) -> int:
    """Back-off for the next attempt of `c` (the job's own setting, else its task's)."""
    if c.backoff_ms is not None:
        base = c.backoff_ms
    else:
        task = app.tasks.get(c.task)
        base = int((task.options.backoff if task else 1.0) * 1000)
    return backoff_delay_ms(base, c.attempt)


def timeout_s(app: App, c: Claimed) -> float | None:
    """The hard limit of this attempt: the job's own, else its task's, else none."""
    if c.timeout_ms is not None:
        return c.timeout_ms / 1000
    task = app.tasks.get(c.task)
    return task.options.timeout if task else None


def prepare(app: App, c: Claimed) -> tuple[Task[..., Any], list[Any], dict[str, Any]] | Outcome:
    """Find the task and decode the arguments, or the Outcome that says why not."""
    task = app.tasks.get(c.task)
    if task is None:
        return failure(c, UnknownTask(f"unknown task {c.task!r}"), NO_RETRY, tb=False)
    try:
        args, kwargs = app.serializer.decode_args(c.payload)
        if c.pass_results:
            inputs = [app.serializer.decode_result(b) if b else None for b in c.inputs]
            args = [inputs[0] if c.pass_results == "one" and inputs else inputs, *args]
    except DecodeError as exc:
        return failure(c, exc, NO_RETRY, tb=False)
    return task, args, kwargs


def finish(app: App, c: Claimed, value: Any) -> Outcome:
    try:
        return Outcome(c, ok=True, result=app.serializer.encode_result(value))
    except SerializationError as exc:
        return failure(c, exc, NO_RETRY, tb=False)


def on_error(app: App, c: Claimed, exc: BaseException) -> Outcome:
    if isinstance(exc, Retry):
        delay = int(exc.delay * 1000) if exc.delay is not None else retry_delay(app, c)
        return failure(c, exc, delay, tb=False)
    return failure(c, exc, retry_delay(app, c))


def context(app: App, c: Claimed) -> JobContext:
    return JobContext(c.id, c.attempt, c.token, c.queue, app)


def run_sync(app: App, c: Claimed) -> Outcome:
    """Run an attempt in the calling thread (async tasks get a private event loop); in a run
    span when tracing is on (tracing.py)."""
    t0 = time.perf_counter()
    if app.tracing is None:
        return replace(_run_sync(app, c), runtime_s=time.perf_counter() - t0)
    with app.tracing.running(c) as done:
        return done(replace(_run_sync(app, c), runtime_s=time.perf_counter() - t0))


def _run_sync(app: App, c: Claimed) -> Outcome:
    prepared = prepare(app, c)
    if isinstance(prepared, Outcome):
        return prepared
    task, args, kwargs = prepared
    tok = set_current(context(app, c))
    try:
        value = task.fn(*args, **kwargs)
        if task.is_async:
            value = asyncio.run(value)
    except Exception as exc:
        return on_error(app, c, exc)
    finally:
        reset_current(tok)
    return finish(app, c, value)


async def run_async(app: App, c: Claimed, limit_s: float | None) -> Outcome:
    """Run an attempt on the running event loop; sync tasks go to a thread."""
    t0 = time.perf_counter()
    if app.tracing is None:
        return replace(await _run_async(app, c, limit_s), runtime_s=time.perf_counter() - t0)
    with app.tracing.running(c) as done:
        outcome = await _run_async(app, c, limit_s)
        return done(replace(outcome, runtime_s=time.perf_counter() - t0))


async def _run_async(app: App, c: Claimed, limit_s: float | None) -> Outcome:
    prepared = prepare(app, c)
    if isinstance(prepared, Outcome):
        return prepared
    task, args, kwargs = prepared
    tok = set_current(context(app, c))
    try:
        if task.is_async:
            coro: Coroutine[Any, Any, Any] = task.fn(*args, **kwargs)
        else:
            coro = asyncio.to_thread(task.fn, *args, **kwargs)
        value = await asyncio.wait_for(coro, limit_s)
    except TimeoutError:
        return timed_out(app, c, limit_s or 0)
    except Exception as exc:
        return on_error(app, c, exc)
    finally:
        reset_current(tok)
    return finish(app, c, value)


def timed_out(app: App, c: Claimed, limit_s: float) -> Outcome:
    exc = TimeoutError(f"job {c.id} (task {c.task!r}) exceeded its timeout of {limit_s:g}s")
    return replace(failure(c, exc, retry_delay(app, c), tb=False), runtime_s=limit_s)
