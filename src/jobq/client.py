"""The public Python API: `App` (task registry + connection) and `Job` handles."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, overload

from . import aio
from .codes import Cancel, Rerun
from .config import Settings
from .errors import ConfigError, JobNotFound
from .keys import Keys, group_queue, worker_queue
from .model import JobRecord, JobSpec, QueueInfo
from .names import check_job_id, check_name, check_queue, check_ref, check_spec
from .outcome import settle
from .periodic import PeriodicSpec
from .serde import Serializer
from .states import JobState
from .store import Store, open_store
from .tasks import SUBMIT_OPTIONS, Task, TaskOptions, parse_rate

MAX_PRIORITY = 1000


def new_job_id() -> str:
    """A random 96-bit id, URL-safe (16 characters), never starting with '-' (the CLI would
    take such an id for an option)."""
    raw = base64.urlsafe_b64encode(os.urandom(12)).decode()
    return "_" + raw[1:] if raw.startswith("-") else raw


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
        **overrides: Any,
    ) -> None:
        base = settings or Settings.from_env()
        self.settings = base.with_overrides(url=url, prefix=prefix, **overrides)
        self.tasks: dict[str, Task] = {}
        self.periodics: dict[str, PeriodicSpec] = {}
        self._templates: dict[str, JobSpec] = {}  # per task: a spec with no options given
        self.serializer = Serializer(self.settings.codec, self.settings.allow_pickle)
        self.keys = Keys(self.settings.prefix)
        self._store: Store | None = None

    # -- registry ----------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

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
    ) -> Callable[[Callable[..., Any]], Task]: ...

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
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a function as a task (usable as ``@app.task`` or ``@app.task(...)``)."""
        if rate_limit is not None:
            parse_rate(rate_limit)  # fail at declaration, not at the first claim
        check_queue(queue)
        if name is not None:
            check_name("task name", name)
        opts = TaskOptions(queue, priority, retries, backoff, timeout, result_ttl, rate_limit)

        def register(f: Callable[..., Any]) -> Task:
            task = Task(self, f, check_name("task name", name or f.__name__), opts)
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
    ) -> Callable[[Callable[..., Any]], Task]:
        """Register a function as a task that runs on a schedule: a cron expression
        (``@app.periodic("*/5 * * * *")``) or a fixed interval (``@app.periodic(every=30)``).

        The schedule reaches the broker when a worker (or `jobq master --app`) of this app
        starts; each tick fires exactly once however many masters run.
        """

        def register(f: Callable[..., Any]) -> Task:
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
    ) -> Job:
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
            if template is None:
                template = self._templates[task] = self.spec(task, (), {}, {})
            payload = self.serializer.encode_args(args, kwargs or {})
            spec = replace(template, id=new_job_id(), payload=payload)
        return Job(self, self.store.submit_ids([spec], wait_s=failover_wait_s)[0])

    def submit_many(
        self,
        task: str,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        failover_wait_s: float | None = None,
        **options: Any,
    ) -> list[Job]:
        """Queue many jobs of one task in a single round trip (streamed script calls); waits
        for a primary like `submit`."""
        if options.get("job_id") is not None:
            raise ConfigError("job_id cannot be shared by a batch; submit such jobs one by one")
        template = self.spec(task, (), {}, options)  # options resolved once, not per job
        encode = self.serializer.encode_args
        specs = (
            replace(template, id=new_job_id(), payload=encode(args, kwargs))
            for args, kwargs in calls
        )
        return [Job(self, i) for i in self.store.submit_ids(specs, wait_s=failover_wait_s)]

    def submit_specs(
        self, specs: list[JobSpec], *, failover_wait_s: float | None = None
    ) -> list[Job]:
        """Queue prepared specs (any tasks, dependencies among them allowed) in one round trip;
        waits for a primary like `submit`."""
        for s in specs:
            check_spec(s)
        return [Job(self, i) for i in self.store.submit_ids(specs, wait_s=failover_wait_s)]

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
        registered = self.tasks.get(task)
        d = registered.options if registered else TaskOptions()

        def opt(name: str) -> Any:
            v = options.get(name)
            return getattr(d, name) if v is None else v

        priority = int(opt("priority"))
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise ConfigError(f"priority {priority} is outside [-{MAX_PRIORITY}, {MAX_PRIORITY}]")
        retries = int(opt("retries"))
        if retries < 0:
            raise ConfigError("retries must be >= 0")
        timeout = opt("timeout")
        ttl = opt("result_ttl")
        queue = check_queue(opt("queue"))
        fallback = options.get("fallback")
        if options.get("worker") and options.get("worker_group"):
            raise ConfigError("give either worker or worker_group, not both")
        if options.get("worker"):
            queue = worker_queue(check_name("worker", options["worker"]))
        elif options.get("worker_group"):
            queue = group_queue(check_name("worker_group", options["worker_group"]))
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
        limit = int(options.get("concurrency_limit") or 1)
        if limit < 1:
            raise ConfigError("concurrency_limit must be >= 1")
        return JobSpec(
            id=new_job_id() if job_id is None else check_job_id(job_id),
            task=check_name("task", task),
            queue=queue,
            payload=self.serializer.encode_args(args, kwargs),
            priority=priority,
            max_attempts=retries + 1,
            timeout_ms=None if timeout is None else int(float(timeout) * 1000),
            backoff_ms=None
            if options.get("backoff") is None
            else int(float(options["backoff"]) * 1000),
            result_ttl_s=None if ttl is None else int(ttl),
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

    # -- reading and control -----------------------------------------------------------------

    def job(self, job_id: str) -> Job:
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
    ) -> Job:
        """`submit` (a task by name) for a coroutine: never blocks the event loop."""
        return await aio.app_submit(self, task, args, kwargs, **options)

    async def asubmit_many(
        self, task: str, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], **options: Any
    ) -> list[Job]:
        """`submit_many` for a coroutine."""
        return await aio.app_submit_many(self, task, calls, **options)

    async def aclose(self) -> None:
        """`close` for a coroutine; also ends the asyncio executor and result listeners."""
        await aio.aclose(self)

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await aio.aclose(self)


class Job:
    """A handle on one job: its id, and calls that read or steer it."""

    __slots__ = ("app", "id")

    def __init__(self, app: App, job_id: str) -> None:
        self.app = app
        self.id = job_id

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def status(self) -> JobState | None:
        """The job's state, or None if there is no such job (or its result expired)."""
        return self.app.store.get_state(self.id)

    def info(self) -> JobRecord:
        rec = self.app.store.get_job(self.id)
        if rec is None:
            raise JobNotFound(f"no job {self.id} (never submitted, or its result expired)")
        return rec

    def result(self, timeout: float | None = None) -> Any:
        """Wait (blocking, no polling) for the outcome; return the value or raise the error."""
        rec = self.app.store.wait(self.id, timeout, full=False)
        return settle(self.app.serializer, self.id, rec, timeout)

    def cancel(self) -> bool:
        """Cancel if queued/scheduled (True); a running job is asked to stop (False)."""
        code = self.app.store.cancel(self.id)
        if code == Cancel.NOT_FOUND:
            raise JobNotFound(f"no job {self.id}")
        return code == Cancel.CANCELLED

    def rerun(self) -> None:
        """Queue a dead-lettered job again."""
        code = self.app.store.rerun(self.id)
        if code != Rerun.QUEUED:
            from .errors import from_code

            raise from_code(code, self.id, "rerun")

    # -- asyncio (aio.py) ---------------------------------------------------------------------

    async def aresult(self, timeout: float | None = None) -> Any:
        """`result` for a coroutine: no thread held while waiting, the same value or errors."""
        return await aio.aresult(self, timeout)

    async def astatus(self) -> JobState | None:
        """`status` for a coroutine."""
        return await aio.astatus(self)

    async def ainfo(self) -> JobRecord:
        """`info` for a coroutine."""
        return await aio.ainfo(self)

    async def acancel(self) -> bool:
        """`cancel` for a coroutine."""
        return await aio.acancel(self)


def _parents(depends_on: Any) -> tuple[tuple[str, ...], str]:
    """Parent ids from Jobs, ids or a Group; a Group's members hand their results on as a list."""
    if depends_on is None:
        return (), ""
    from .canvas import GroupResult

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
    if delay is not None and eta is not None:
        raise ConfigError("give either delay or eta, not both")
    if delay is not None:
        return max(0, int(float(delay) * 1000))
    if eta is None:
        return 0
    if isinstance(eta, dt.datetime):
        when = eta.timestamp() if eta.tzinfo else eta.replace(tzinfo=dt.UTC).timestamp()
    else:
        when = float(eta)
    return max(0, int((when - time.time()) * 1000))
