"""The public Python API: `App`, the task registry and the connection, on top of everything
else: `Job` handles are job.py's, `Task` and `Signature` tasks.py's, the options options.py's,
workflows canvas.py's (`Job` is re-exported here for older imports)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from . import aio, values
from .canvas import GroupResult
from .config import Settings
from .errors import ConfigError, InvalidOption
from .job import Job
from .keys import Keys, group_queue, worker_queue
from .model import JobSpec, QueueInfo
from .names import check_job_id, check_name, check_queue, check_ref, check_spec
from .options import SUBMIT_OPTIONS, TaskOptions, parse_rate
from .periodic import PeriodicSpec
from .registry import Catalog, gone_ms
from .serde import Serializer
from .store import Store, open_store
from .tasks import Task

if TYPE_CHECKING:
    from .tracing import Tracing

__all__ = ["MAX_PRIORITY", "App", "Job", "TaskDecorator", "new_job_id"]

P = ParamSpec("P")
R = TypeVar("R")

MAX_PRIORITY = 1000


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` and ``@app.periodic(...)`` return: it registers the function and
    keeps its types (an ``async def`` task's result type is what it awaits to)."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


#: Ids drawn from the OS per refill of `_ids`: one urandom call and one encoding for many jobs
#: (a batch submit made one of each per job, a tenth of its client-side time).
IDS_PER_DRAW = 256
_ids: list[str] = []


def _draw_ids() -> None:
    # 12 random bytes encode to exactly 16 base64 characters, so one encoding of many such
    # blocks cut every 16 characters gives the same ids as one encoding per id.
    raw = base64.urlsafe_b64encode(os.urandom(12 * IDS_PER_DRAW)).decode()
    ids = [raw[i : i + 16] for i in range(0, len(raw), 16)]
    _ids.extend("_" + i[1:] if i[0] == "-" else i for i in ids)


# A forked child must never hand out the ids its parent drew (both would use them).
os.register_at_fork(after_in_child=_ids.clear)


def new_job_id() -> str:
    """A random 96-bit id, URL-safe (16 characters), never starting with '-' (the CLI would
    take such an id for an option). Drawn from the OS in blocks (`IDS_PER_DRAW`); `list.pop`
    is atomic, so threads never share one."""
    while True:
        try:
            return _ids.pop()
        except IndexError:
            _draw_ids()


def tracing_from_env() -> bool:
    """JOBQ_TRACING=1 (or true/yes/on): OpenTelemetry spans on (tracing.py)."""
    return os.environ.get("JOBQ_TRACING", "").strip().lower() in ("1", "true", "yes", "on")


class App:
    """A jobq application: where tasks are registered and jobs are submitted.

    ``App()`` uses ``JOBQ_URL`` or, with neither, the embedded Valkey in ``./.jobq``. Nothing
    connects until the first operation, so importing a module that builds an App is free.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str | None = None,
        settings: Settings | None = None,
        tracing: bool | None = None,
        tracer_provider: Any = None,
        **overrides: Any,
    ) -> None:
        base = settings or Settings.from_env()
        #: OpenTelemetry spans (tracing.py), or None: off unless `tracing=True` or
        #: JOBQ_TRACING=1; only then is OpenTelemetry imported (the `otel` extra).
        self.tracing: Tracing | None = None
        if tracing or (tracing is None and tracing_from_env()):
            self.enable_tracing(tracer_provider)
        self.settings = base.with_overrides(url=url, prefix=prefix, **overrides)
        self.tasks: dict[str, Task[..., Any]] = {}
        self.periodics: dict[str, PeriodicSpec] = {}
        self._templates: dict[str, JobSpec] = {}  # per task: a spec with no options given
        self.serializer = Serializer(self.settings.codec, self.settings.allow_pickle)
        self.keys = Keys(self.settings.prefix)
        self._store: Store | None = None
        #: The settings workers published for tasks this process did not import (registry.py).
        self.catalog = Catalog()

    def enable_tracing(self, tracer_provider: Any = None) -> None:
        """Turn OpenTelemetry spans on (the `otel` extra): submits carry their trace context
        to the workers (tracing.py)."""
        from .tracing import Tracing

        self.tracing = Tracing(tracer_provider)

    # -- registry ----------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        retries: int = 0,
        backoff: float = 1.0,
        timeout: float | None = None,
        result_ttl: int | None = None,
        rate_limit: str | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        retries: int = 0,
        backoff: float = 1.0,
        timeout: float | None = None,
        result_ttl: int | None = None,
        rate_limit: str | None = None,
    ) -> Task[Any, Any] | TaskDecorator:
        """Register a function as a task (usable as ``@app.task`` or ``@app.task(...)``)."""
        if rate_limit is not None:
            parse_rate(rate_limit)  # fail at declaration, not at the first claim
        check_queue(queue)
        if name is not None:
            check_name("task name", name)
        opts = TaskOptions(queue, priority, retries, backoff, timeout, result_ttl, rate_limit)

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = Task(self, f, check_name("task name", name or f.__name__), opts)
            if task.name in self.tasks and self.tasks[task.name].fn is not f:
                raise ConfigError(f"two tasks are registered under the name {task.name!r}")
            self.tasks[task.name] = task
            self._templates.pop(task.name, None)
            return task

        return register(fn) if fn is not None else register

    def configure(self, **overrides: Any) -> None:
        """Apply settings overrides (None = keep), e.g. CLI flags, before first use."""
        self.close()
        self._templates.clear()
        self.settings = self.settings.with_overrides(**overrides)
        self.serializer = Serializer(self.settings.codec, self.settings.allow_pickle)
        self.keys = Keys(self.settings.prefix)

    def periodic(
        self,
        cron: str | None = None,
        *,
        every: float | None = None,
        name: str | None = None,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        missed: str = "skip",
        **task_options: Any,
    ) -> TaskDecorator:
        """Register a function as a task that runs on a schedule: a cron expression
        (``@app.periodic("*/5 * * * *")``) or a fixed interval (``@app.periodic(every=30)``).

        The schedule reaches the broker when a worker (or `jobq master --app`) of this app
        starts; each tick fires exactly once however many masters run.
        """

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task = self.task(f, **task_options) if task_options else self.task(f)
            spec = PeriodicSpec(
                name=name or task.name,
                task=task.name,
                cron=cron,
                every_s=every,
                args=list(args),
                kwargs=kwargs or {},
                queue=queue or task.options.queue,
                missed=missed,
                retries=task.options.retries,
                priority=task.options.priority,
                origin="code",
            )
            self.periodics[spec.name] = spec
            return task

        return register

    # -- connection --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The broker URL in use (starting the embedded server if no URL was set)."""
        if self.settings.url:
            return self.settings.url
        from .embedded import ensure_server

        url = ensure_server(
            self.settings.data_dir,
            durable=self.settings.durable,
            memory=self.settings.embedded_memory,
            announce=True,  # a producer starting its own server says where (stderr)
        )
        self.settings = self.settings.with_overrides(url=url)
        return url

    @property
    def store(self) -> Store:
        if self._store is None:
            url = self.url
            self._store = open_store(
                url,
                self.keys,
                self.settings.partitions,
                spread=self.settings.queue_spread(),
                events_maxlen=self.settings.events_maxlen,
                result_ttl_s=self.settings.result_ttl_s,
                durable=self.settings.durable,
                wait_replicas=self.settings.wait_replicas,
                durable_timeout_ms=self.settings.durable_timeout_ms,
                memory_limit=self.settings.memory_limit,
                dead_ttl_s=self.settings.dead_ttl_s,
                failover_wait_s=self.settings.failover_wait_s,
            )
        return self._store

    def close(self) -> None:
        aio.shutdown(self)  # pending awaits end, the asyncio threads stop
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting --------------------------------------------------------------------------

    def submit(
        self,
        task: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        failover_wait_s: float | None = None,
        **options: Any,
    ) -> Job[Any]:
        """Queue one job of the task registered (anywhere) under `task`.

        Returns the handle of the job that stands for this submit: a new one, the existing job
        with the same `job_id`, or the pending job holding the same `unique_key`. While the
        broker cannot serve (a failover) it waits up to `failover_wait_s` (default: the
        setting) for a primary, then raises `BrokerUnavailable`.
        """
        if options:
            spec = self.spec(task, args, kwargs or {}, options)
        else:  # the hot path: the task's defaults, resolved once per task
            template = self._templates.get(task)
            if template is None or (task not in self.tasks and self.catalog.stale(task)):
                template = self._templates[task] = self.spec(task, (), {}, {})
            payload = self.serializer.encode_args(args, kwargs or {})
            spec = template.for_call(new_job_id(), payload)
        if self.tracing is None:
            return Job(self, self.store.submit_one(spec, wait_s=failover_wait_s))
        with self.tracing.submitting(spec.task, spec.queue) as field:
            spec = self.tracing.with_trace(spec, field)
            return Job(self, self.store.submit_one(spec, wait_s=failover_wait_s))

    def submit_many(
        self,
        task: str,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        failover_wait_s: float | None = None,
        **options: Any,
    ) -> list[Job[Any]]:
        """Queue many jobs of one task in a single round trip (streamed script calls); waits
        for a primary like `submit`."""
        if options.get("job_id") is not None:
            raise ConfigError("job_id cannot be shared by a batch; submit such jobs one by one")
        template = self.spec(task, (), {}, options)  # options resolved once, not per job
        encode = self.serializer.encode_args
        made = [(new_job_id(), encode(args, kwargs)) for args, kwargs in calls]
        if self.tracing is None:
            ids = self.store.submit_like(template, made, wait_s=failover_wait_s)
        else:
            with self.tracing.submitting(template.task, template.queue, len(made)) as field:
                template = self.tracing.with_trace(template, field)
                ids = self.store.submit_like(template, made, wait_s=failover_wait_s)
        return [Job(self, i) for i in ids]

    def submit_specs(
        self, specs: list[JobSpec], *, failover_wait_s: float | None = None
    ) -> list[Job[Any]]:
        """Queue prepared specs (any tasks, dependencies among them allowed) in one round trip;
        waits for a primary like `submit`."""
        for s in specs:
            check_spec(s)
        if self.tracing is None or not specs:
            ids = self.store.submit_ids(specs, wait_s=failover_wait_s)
        else:
            with self.tracing.submitting(specs[0].task, specs[0].queue, len(specs)) as field:
                traced = [self.tracing.with_trace(s, field) for s in specs]
                ids = self.store.submit_ids(traced, wait_s=failover_wait_s)
        return [Job(self, i) for i in ids]

    def spec(
        self,
        task: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> JobSpec:
        """Resolve a submit call into a JobSpec: the job's options over the task's defaults."""
        unknown = set(options) - SUBMIT_OPTIONS
        if unknown:
            raise ConfigError(f"unknown submit option(s): {', '.join(sorted(unknown))}")
        d = self.task_defaults(check_name("task", task))  # (a bad name is refused unread)

        def opt(name: str) -> Any:
            v = options.get(name)
            return getattr(d, name) if v is None else v

        priority = values.whole("priority", opt("priority"), -MAX_PRIORITY, MAX_PRIORITY)
        retries = values.whole("retries", opt("retries"), 0, values.MAX_RETRIES)
        timeout = values.timeout_s(opt("timeout"))
        ttl = opt("result_ttl")
        if ttl is not None:  # 0 = kept forever
            ttl = values.whole("result_ttl", ttl, 0, values.MAX_RESULT_TTL_S)
        backoff = options.get("backoff")
        if backoff is not None:
            backoff = values.bounded("backoff", backoff, 0, values.MAX_TIMEOUT_S, " seconds")
        queue = check_queue(opt("queue"))
        fallback = options.get("fallback")
        worker, group = options.get("worker"), options.get("worker_group")
        if worker is not None and group is not None:
            raise ConfigError("give either worker or worker_group, not both")
        if worker is not None:  # (an empty name is refused, not taken for "no worker")
            queue = worker_queue(check_name("worker", worker))
        elif group is not None:
            queue = group_queue(check_name("worker_group", group))
        if fallback is True:
            fallback = str(opt("queue"))
        elif fallback:
            check_queue(fallback, "fallback")
        parents, pass_results = _parents(options.get("depends_on"))
        for p in parents:
            check_ref(p, "depends_on")
        job_id = options.get("job_id")
        unique_key, concurrency_key = options.get("unique_key"), options.get("concurrency_key")
        if options.get("pass_results") is not None:
            pass_results = _pass_mode(options["pass_results"], len(parents))
        limit = options.get("concurrency_limit")
        limit = 1 if limit is None else values.whole("concurrency_limit", limit, 1, 100_000)
        return JobSpec(
            id=new_job_id() if job_id is None else check_job_id(job_id),
            task=check_name("task", task),
            queue=queue,
            payload=self.serializer.encode_args(args, kwargs),
            priority=priority,
            max_attempts=retries + 1,
            timeout_ms=None if timeout is None else max(1, int(timeout * 1000)),
            backoff_ms=None if backoff is None else int(backoff * 1000),
            result_ttl_s=ttl,
            delay_ms=_delay_ms(options.get("delay"), options.get("eta")),
            parents=parents,
            pass_results=pass_results,
            unique_key=None if unique_key is None else check_name("unique_key", unique_key),
            concurrency_key=None
            if concurrency_key is None
            else check_name("concurrency_key", concurrency_key),
            concurrency_limit=limit,
            fallback_queue=fallback or None,
        )

    def task_defaults(self, task: str) -> TaskOptions:
        """The settings a job of `task` gets unless its submit overrides them: the task's own
        if this process registered it, else what the workers that run it published (cached a
        few seconds, so most submits read nothing more); a task no live worker has registered
        is logged once and gets the settings last published, or the defaults."""
        registered = self.tasks.get(task)
        if registered is not None:
            return registered.options
        return self.catalog.options(self.store, task, gone_ms(self.settings))

    # -- reading and control -----------------------------------------------------------------

    def job(self, job_id: str) -> Job[Any]:
        """A handle on an existing job (no round trip)."""
        return Job(self, job_id)

    def queue_info(self) -> list[QueueInfo]:
        return self.store.queues()

    def dead_letters(self, limit: int = 100, offset: int = 0) -> list[str]:
        return self.store.dead_letters(limit, offset)

    # -- asyncio (aio.py: the sync calls above, run off the event loop) -----------------------

    async def asubmit(
        self,
        task: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job[Any]:
        """`submit` (a task by name) for a coroutine: never blocks the event loop."""
        return await aio.app_submit(self, task, args, kwargs, **options)

    async def asubmit_many(
        self, task: str, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], **options: Any
    ) -> list[Job[Any]]:
        """`submit_many` for a coroutine."""
        return await aio.app_submit_many(self, task, calls, **options)

    async def aclose(self) -> None:
        """`close` for a coroutine; also ends the asyncio executor and result listeners."""
        await aio.aclose(self)

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await aio.aclose(self)


def _parents(depends_on: Any) -> tuple[tuple[str, ...], str]:
    """Parent ids from Jobs, ids or a Group; a Group's members hand their results on as a list."""
    if depends_on is None:
        return (), ""
    if isinstance(depends_on, GroupResult):
        return tuple(j.id for j in depends_on.jobs), "list"
    if isinstance(depends_on, Job | str):
        depends_on = [depends_on]
    return tuple(j.id if isinstance(j, Job) else str(j) for j in depends_on), ""


def _pass_mode(value: Any, n_parents: int) -> str:
    if value in (False, "", None):
        return ""
    if value in ("one", "list"):
        return str(value)
    return "one" if n_parents == 1 and value != "list" else "list"


def _delay_ms(delay: float | None, eta: Any) -> int:
    """The delay in ms from `delay` (seconds) or `eta` (a datetime, naive = UTC, or epoch
    seconds). A delay <= 0 or an eta in the past means "now"; NaN, infinities and times more
    than `values.MAX_DELAY_S` ahead are refused."""
    if delay is not None and eta is not None:
        raise ConfigError("give either delay or eta, not both")
    if delay is not None:
        d = values.number("delay", delay)
        if d > values.MAX_DELAY_S:
            raise InvalidOption(f"delay {delay!r} is more than 10 years ahead")
        return max(0, int(d * 1000))
    if eta is None:
        return 0
    if isinstance(eta, dt.datetime):
        when = eta.timestamp() if eta.tzinfo else eta.replace(tzinfo=dt.UTC).timestamp()
    else:
        when = values.number("eta", eta)
    ahead = when - time.time()
    if ahead > values.MAX_DELAY_S:
        shown = eta.isoformat() if isinstance(eta, dt.datetime) else repr(eta)
        raise InvalidOption(f"eta {shown} is more than 10 years ahead")
    return max(0, int(ahead * 1000))
