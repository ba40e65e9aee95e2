"""The asyncio flavour of the client API: `await task.asubmit(...)`, `await job.aresult()`...

There is one core: every broker operation is the sync one (`Store`, its scripts, its topology,
failover and Cluster handling), run off the event loop on a small executor the App owns
(`EXECUTOR_THREADS` threads, made on first use, shut down by `aclose()` / ``async with``). So
an async submit, status or cancel has the very semantics, options and errors of the sync call
it runs.

Waiting is the exception, since a thread per awaiting coroutine would not scale: every pending
`aresult` of an App is served by a fixed few listener threads per partition
(`aio_wait.Waiter`), each blocking in one BLPOP over the done lists of its share of them and
resolving the asyncio futures as outcomes arrive. The outcome is read exactly as the sync wait
reads it (`outcome.settle`).

The App, Task and Job methods (`App.asubmit`, `Task.asubmit`, `Job.aresult`...) are one-line
delegations to the functions here, which take their object as an argument: this module imports
nothing of client.py or tasks.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from .aio_wait import Listener, Waiter
from .errors import JobqError
from .model import JobRecord
from .outcome import settle
from .serde import Serializer
from .states import JobState

#: Threads of an App's executor: how many sync broker calls its coroutines run at once (each
#: is one round trip; waiting for results does not hold one).
EXECUTOR_THREADS = 8

T = TypeVar("T")
J = TypeVar("J")


class AppLike(Protocol):
    """What this module needs of an App (client.py's)."""

    serializer: Serializer

    @property
    def store(self) -> Any: ...

    def close(self) -> None: ...


class JobLike(Protocol):
    """What this module needs of a Job handle."""

    @property
    def id(self) -> str: ...

    @property
    def app(self) -> Any: ...

    def status(self) -> JobState | None: ...

    def info(self) -> JobRecord: ...

    def cancel(self) -> bool: ...


class TaskLike(Protocol[J]):
    """What this module needs of a Task: its App, and the sync submits it runs (`J`: the
    Job handle they return)."""

    @property
    def app(self) -> Any: ...

    @property
    def name(self) -> str: ...

    # (callables, not methods: a Task's are typed over its function and its options)
    @property
    def submit(self) -> Callable[..., J]: ...

    @property
    def submit_with(self) -> Callable[..., J]: ...

    @property
    def map(self) -> Callable[..., list[J]]: ...


class SubmitsByName(Protocol[J]):
    """What this module needs of an App to submit by task name."""

    def submit(self, *args: Any, **kwargs: Any) -> J: ...

    def submit_many(self, *args: Any, **kwargs: Any) -> list[J]: ...


class _Batcher:
    """Plain submits (a task's positional arguments, no options) from coroutines, sent in
    batches: at most one `App.submit_many` per task on the executor at a time, taking every
    call that arrived while the one before was on the wire. One coroutine submitting alone
    pays one round trip as before; many at once share them. A refused batch raises its error
    in every call of it (each would have been refused alike)."""

    #: Most calls one batch carries.
    MOST = 1000

    def __init__(self, state: _AppAio) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._pending: dict[str, list[tuple[tuple[Any, ...], Any, asyncio.Future[Any]]]] = {}
        self._draining: set[str] = set()

    async def submit(self, app: Any, task: str, args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._pending.setdefault(task, []).append((args, loop, fut))
            start = task not in self._draining
            self._draining.add(task)
        if start:
            self._state.pool().submit(self._drain, app, task)
        return await fut

    def _drain(self, app: Any, task: str) -> None:
        while True:
            with self._lock:
                queue = self._pending.get(task, [])
                batch, self._pending[task] = queue[: self.MOST], queue[self.MOST :]
                if not batch:
                    self._draining.discard(task)
                    return
            try:
                if len(batch) == 1:  # alone: the sync submit's own path (its cached template)
                    jobs = [app.submit(task, batch[0][0])]
                else:
                    jobs = app.submit_many(task, [(args, {}) for args, _, _ in batch])
            except BaseException as exc:
                for _, loop, fut in batch:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(_fail, fut, exc)
                continue
            for (_, loop, fut), job in zip(batch, jobs, strict=True):
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_done, fut, job)


def _done(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class _AppAio:
    """An App's asyncio machinery: its executor and its result waiter (both made lazily)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.waiter: Waiter | None = None
        self._batcher: _Batcher | None = None

    def batcher(self) -> _Batcher:
        with self.lock:
            if self._batcher is None:
                self._batcher = _Batcher(self)
            return self._batcher

    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self.lock:
            if self.executor is None:
                self.executor = concurrent.futures.ThreadPoolExecutor(
                    EXECUTOR_THREADS, thread_name_prefix="jobq-aio"
                )
            return self.executor


_apps: weakref.WeakKeyDictionary[Any, _AppAio] = weakref.WeakKeyDictionary()
_apps_lock = threading.Lock()


def _state(app: Any) -> _AppAio:
    with _apps_lock:
        got = _apps.get(app)
        if got is None:
            got = _apps[app] = _AppAio()
        return got


async def run(app: Any, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on `app`'s executor: the event loop goes on meanwhile."""
    loop = asyncio.get_running_loop()
    # In the caller's context: a span current in the coroutine (a web request's) is the
    # submit span's parent there too (tracing.py).
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_state(app).pool(), call)


# -- submitting ------------------------------------------------------------------------------


async def asubmit(task: TaskLike[J], /, *args: Any, **kwargs: Any) -> J:
    """`Task.submit` off the loop: same arguments, options, dedup and errors.

    Calls with positional arguments only (the task's own defaults, no options) that arrive
    while another is on its way are sent together: `App.submit_many` of the task, one round
    trip for all (see `_Batcher`). Anything else is `Task.submit` itself."""
    if kwargs:
        return await run(task.app, task.submit, *args, **kwargs)
    job: J = await _state(task.app).batcher().submit(task.app, task.name, args)
    return job


async def asubmit_with(task: TaskLike[J], /, *args: Any, **kwargs: Any) -> J:
    """`Task.submit_with` off the loop (arguments and options kept apart)."""
    return await run(task.app, task.submit_with, *args, **kwargs)


async def amap(task: TaskLike[J], items: Iterable[Any], /, **options: Any) -> list[J]:
    """`Task.map` off the loop: one job per item in one round trip."""
    return await run(task.app, task.map, list(items), **options)


async def app_submit(app: SubmitsByName[J], task: str, /, *args: Any, **kwargs: Any) -> J:
    """`App.submit` (a task by name) off the loop."""
    return await run(app, app.submit, task, *args, **kwargs)


async def app_submit_many(
    app: SubmitsByName[J], task: str, /, *args: Any, **kwargs: Any
) -> list[J]:
    """`App.submit_many` off the loop."""
    return await run(app, app.submit_many, task, *args, **kwargs)


# -- one job ---------------------------------------------------------------------------------


async def astatus(job: JobLike) -> JobState | None:
    """`Job.status` off the loop."""
    return await run(job.app, job.status)


async def ainfo(job: JobLike) -> JobRecord:
    """`Job.info` off the loop."""
    return await run(job.app, job.info)


async def acancel(job: JobLike) -> bool:
    """`Job.cancel` off the loop."""
    return await run(job.app, job.cancel)


async def aresult(job: JobLike, timeout: float | None = None) -> Any:
    """Await the job's outcome without blocking the loop or holding a thread: the value, or
    the sync `result`'s errors (`JobFailed`, `JobCancelled`, `JobNotFound`, `ResultTimeout`
    after `timeout` seconds, `BrokerUnavailable`). Cancelling the awaiting task (or an outer
    `asyncio.wait_for`) gives its registration back."""
    app = job.app
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    waiter = await _waiter_of(app)
    store = waiter.store
    # Where the job lives, as the sync wait would find it: the partition this process saw it
    # in, else its home (no round trip); only a miss there asks every partition.
    several = len(store.shards) > 1
    part = store.partition_of(job.id) if several else 0
    rec, timed_out = await _wait_on(app, waiter.listener(part, job.id), job.id, deadline)
    if rec is None and not timed_out and several:
        other = store.shards.index(await run(app, store.shard_of, job.id))
        if other != part:
            rec, timed_out = await _wait_on(app, waiter.listener(other, job.id), job.id, deadline)
    if timed_out:  # like the sync wait at its deadline: what the job is now decides
        rec = await run(app, lambda: store.get_job(job.id))
    return settle(app.serializer, job.id, rec, timeout)


async def _wait_on(
    app: Any, listener: Listener, job_id: str, deadline: float | None
) -> tuple[JobRecord | None, bool]:
    """The outcome `listener` pops for `job_id` (None: no such job there), or (None, True)
    once `deadline` (loop time) passed; the registration is given back on the way out."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[JobRecord | None] = loop.create_future()
    state = _state(app)
    if listener.add(job_id, loop, fut):
        state.pool().submit(listener.register)
    try:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        return await asyncio.wait_for(fut, left), False
    except TimeoutError:
        return None, True
    finally:
        gave_up = not fut.done() or fut.cancelled()
        if gave_up and listener.discard(job_id, fut):
            state.pool().submit(listener.poke)


async def _waiter_of(app: Any) -> Waiter:
    """The App's result waiter, its store's layout known (made off the loop the first time)."""
    state = _state(app)
    waiter = state.waiter
    # Read without `app.store`, which would build a store (and may start a server) on the loop.
    store = getattr(app, "_store", None)
    if waiter is None or store is None or waiter.store is not store:
        waiter = await run(app, _new_waiter, app, state)
    return waiter


def _new_waiter(app: Any, state: _AppAio) -> Waiter:
    """The waiter of the App's current store (a new one after `App.close`/`configure`)."""
    store = app.store
    _ = store.shards  # the layout is read here, on the executor
    with state.lock:
        old = state.waiter
        if old is not None and old.store is store:
            return old
        state.waiter = Waiter(store)
    if old is not None:
        for lst in old.close(JobqError("the App's connection was closed while waiting")):
            lst.poke()
    return state.waiter


def waiting_threads(app: Any) -> int:
    """How many listener threads serve the App's pending `aresult` calls (at most
    `aio_wait.LANES` per partition)."""
    waiter = _state(app).waiter
    return 0 if waiter is None else waiter.threads()


# -- closing ---------------------------------------------------------------------------------


def shutdown(app: Any) -> None:
    """Stop the App's asyncio machinery (`App.close` calls this): pending `aresult` calls
    raise `JobqError`, the listeners end as the store's connections close (or within a
    slice), the executor's threads end once idle. A later async call starts afresh."""
    with _apps_lock:
        state = _apps.pop(app, None)
    if state is None:
        return
    with state.lock:
        waiter, state.waiter = state.waiter, None
        executor, state.executor = state.executor, None
    if waiter is not None:
        waiter.close(JobqError("the App was closed while this result was awaited"))
    if executor is not None:
        executor.shutdown(wait=False)


async def aclose(app: AppLike) -> None:
    """Close the App from a coroutine: what `App.close` does (`shutdown` included), with the
    listeners woken out of their BLPOPs and the connections closed off the loop."""
    with _apps_lock:
        state = _apps.get(app)
    waiter = None if state is None else state.waiter
    listeners = [] if waiter is None else waiter.close(JobqError("the App was closed"))

    def closing() -> None:
        for lst in listeners:  # out of their BLPOPs now: they see they are closed and end
            lst.poke()
        app.close()

    await asyncio.get_running_loop().run_in_executor(None, closing)
