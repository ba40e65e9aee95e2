"""Tasks: `Task[P, R]`, the registry entry for a function (its name and default options), and
`Signature[R]`, one call of it not yet submitted (the unit `canvas.py` builds workflows from).

`P` and `R` are the function's parameters and return type (awaited, for an ``async def``), so a
type checker rejects ``add.submit(1, "x")`` for ``def add(x: int, y: int) -> int`` and types
``add.submit(1, 2).result()`` as ``int``. Job options never share the function's keyword space
on the typed path: ``add.with_options(queue="high").submit(1, 2)`` or
``add.submit_with((1, 2), priority=5)``.

Decorating only registers a name; nothing connects to a broker at import time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, Unpack

from . import aio
from .context import JobContext, current_job, reset_current, set_current
from .errors import ConfigError
from .job import Job, JobHost
from .model import JobSpec
from .options import SUBMIT_OPTIONS, SubmitOptions, TaskOptions, parse_rate

__all__ = [
    "SUBMIT_OPTIONS",
    "BoundTask",
    "JobContext",
    "Signature",
    "SubmitOptions",
    "Task",
    "TaskHost",
    "TaskOptions",
    "current_job",
    "parse_rate",
    "reset_current",
    "set_current",
]

P = ParamSpec("P")
R = TypeVar("R")


class TaskHost(JobHost, Protocol):
    """What a `Task` (and a `Signature`, and a workflow) uses of its App: submitting by name."""

    def submit(
        self,
        task: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any] | None,
        *,
        failover_wait_s: float | None = None,
        **options: Any,
    ) -> Job[Any]: ...

    def submit_many(
        self,
        task: str,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        failover_wait_s: float | None = None,
        **options: Any,
    ) -> list[Job[Any]]: ...

    def submit_specs(self, specs: list[JobSpec]) -> list[Job[Any]]: ...

    def spec(
        self,
        task: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> JobSpec: ...


def _keyword_params(fn: Callable[..., Any]) -> frozenset[str]:
    """The names `fn` takes by keyword: a submit keyword with one of these names is the
    function's argument, even if it is also the name of a job option."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a callable without a readable signature
        return frozenset()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.kind in kinds)


def _checked(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown option names where they are written, not at the first submit."""
    unknown = set(options) - SUBMIT_OPTIONS
    if unknown:
        raise ConfigError(f"unknown submit option(s): {', '.join(sorted(unknown))}")
    return options


def _calls(items: Iterable[Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """`map`'s items as calls: a tuple/list item is the argument list, anything else the one
    argument."""
    return [(tuple(it), {}) if isinstance(it, tuple | list) else ((it,), {}) for it in items]


class Task(Generic[P, R]):
    """A registered function: call it directly, or `.submit()` it to run on a worker."""

    def __init__(
        self, app: TaskHost, fn: Callable[P, Any], name: str, options: TaskOptions
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.params = _keyword_params(fn)
        """Keyword parameters of the function (never taken for job options by `submit`)."""
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here (a coroutine, for an ``async def`` task)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.options.queue!r}>"

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue one call with the task's default options.

        For type checkers every argument is the function's: give options with `with_options`
        or `submit_with`. At run time a keyword named in SUBMIT_OPTIONS that the function does
        not declare is still taken as a job option (``add.submit(2, 3, priority=5)``).
        """
        options: dict[str, Any] = {
            k: kwargs.pop(k) for k in list(kwargs) if k in SUBMIT_OPTIONS and k not in self.params
        }
        return self.app.submit(self.name, args, kwargs, **options)

    def submit_with(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Job[R]:
        """Queue one call with arguments and options kept apart."""
        return self.app.submit(self.name, tuple(args), kwargs or {}, **options)

    def with_options(self, **options: Unpack[SubmitOptions]) -> BoundTask[P, R]:
        """This task with job options bound: ``add.with_options(queue="high").submit(1, 2)``;
        its `submit`, `map` and `s` are typed as the task's."""
        return BoundTask(self, _checked(dict(options)))

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of this task (for group/chain/chord).

        Arguments are not checked against the function: in a chain or a chord a signature
        may leave out the first argument, which the previous result fills in.
        """
        return Signature(self, args, kwargs)

    def map(self, items: Iterable[Any], **options: Unpack[SubmitOptions]) -> list[Job[R]]:
        """Queue one job per item in one round trip; a tuple/list item is the argument list."""
        return self.app.submit_many(self.name, _calls(items), **options)

    # -- asyncio (aio.py: the sync submits above, run off the event loop) ---------------------

    async def asubmit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """`submit` for a coroutine: never blocks the event loop."""
        return await aio.asubmit(self, *args, **kwargs)

    async def asubmit_with(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Job[R]:
        """`submit_with` for a coroutine."""
        return await aio.asubmit_with(self, args, kwargs, **options)

    async def amap(self, items: Iterable[Any], **options: Unpack[SubmitOptions]) -> list[Job[R]]:
        """`map` for a coroutine: one job per item, one round trip."""
        return await aio.amap(self, items, **options)


class BoundTask(Generic[P, R]):
    """A task with job options bound (`Task.with_options`): every keyword of its `submit` is
    the function's, so options and the function's own parameter names never clash."""

    __slots__ = ("options", "task")

    def __init__(self, task: Task[P, R], options: dict[str, Any]) -> None:
        self.task = task
        self.options = options

    def __repr__(self) -> str:
        return f"<BoundTask {self.task.name!r} {self.options!r}>"

    def with_options(self, **options: Unpack[SubmitOptions]) -> BoundTask[P, R]:
        """More options over these (a later value wins)."""
        return BoundTask(self.task, {**self.options, **_checked(dict(options))})

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue one call with the bound options."""
        return self.task.app.submit(self.task.name, args, kwargs, **self.options)

    def submit_with(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Job[R]:
        """Queue one call, arguments apart, with more options over the bound ones."""
        merged = {**self.options, **options}
        return self.task.app.submit(self.task.name, tuple(args), kwargs or {}, **merged)

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature carrying the bound options (see `Task.s`)."""
        return Signature(self.task, args, kwargs, dict(self.options))

    def map(self, items: Iterable[Any], **options: Unpack[SubmitOptions]) -> list[Job[R]]:
        """Queue one job per item in one round trip with the bound options (see `Task.map`)."""
        merged = {**self.options, **options}
        return self.task.app.submit_many(self.task.name, _calls(items), **merged)

    # -- asyncio (aio.py: the sync submits above, run off the event loop) ---------------------

    async def asubmit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """`submit` for a coroutine: never blocks the event loop."""
        return await aio.run(self.task.app, self.submit, *args, **kwargs)

    async def amap(self, items: Iterable[Any], **options: Unpack[SubmitOptions]) -> list[Job[R]]:
        """`map` for a coroutine: one job per item, one round trip."""
        return await aio.run(self.task.app, self.map, items, **options)


@dataclass(frozen=True)
class Signature(Generic[R]):
    """A task call not yet submitted: task, arguments, submit options."""

    task: Task[..., R]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def set(self, **options: Unpack[SubmitOptions]) -> Signature[R]:
        """A copy with more submit options (queue, priority, retries, ...)."""
        return replace(self, options={**self.options, **options})

    def spec(self, **extra: Any) -> JobSpec:
        return self.task.app.spec(self.task.name, self.args, self.kwargs, {**self.options, **extra})

    def submit(self) -> Job[R]:
        return self.task.app.submit(self.task.name, self.args, self.kwargs, **self.options)
