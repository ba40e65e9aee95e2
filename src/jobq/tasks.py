"""Tasks: the registry entry for a function, its default options, and the running job's context.

Decorating only registers a name; nothing connects to a broker at import time.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import aio

if TYPE_CHECKING:
    from .canvas import Signature
    from .client import App, Job

#: Options `Task.submit` takes out of its keyword arguments; everything else goes to the task.
SUBMIT_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "delay",
        "eta",
        "retries",
        "backoff",
        "timeout",
        "job_id",
        "result_ttl",
        "depends_on",
        "pass_results",
        "unique_key",
        "worker",
        "worker_group",
        "fallback",
        "concurrency_key",
        "concurrency_limit",
    }
)


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Defaults a task applies to every job unless the submit call overrides them."""

    queue: str = "default"
    priority: int = 0
    retries: int = 0
    backoff: float = 1.0
    """Base of the exponential back-off between attempts, in seconds (jittered)."""
    timeout: float | None = None
    """Hard limit per attempt, in seconds; None = no limit."""
    result_ttl: int | None = None
    rate_limit: str | None = None
    """At most N starts per period across all workers, e.g. "100/s", "10/m", "5/2.5s"."""


def parse_rate(spec: str) -> tuple[int, int]:
    """ "100/s" -> (100, 1000): count and period in ms."""
    from .errors import ConfigError

    count, _, per = spec.partition("/")
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    unit = next((u for u in ("ms", "s", "m", "h") if per.endswith(u)), None)
    try:
        if unit is None:
            raise ValueError
        amount = float(per[: -len(unit)] or 1)
        return int(count), int(amount * units[unit])
    except ValueError:
        raise ConfigError(
            f"rate limit {spec!r} should look like '100/s', '10/m' or '5/2.5s'"
        ) from None


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running task may know about its own attempt, and how it reports back."""

    id: str
    attempt: int
    token: str
    """Fencing token: strictly increasing per attempt; pass it to side effects (e.g. a
    conditional database write) so a stale attempt cannot overwrite a newer one."""
    queue: str
    app: App | None = None

    def cancelled(self) -> bool:
        """True once someone asked to cancel this job: stop early and return or raise."""
        return self.app is not None and self.app.store.cancel_requested(self.id)

    def progress(self, fraction: float, message: str = "") -> bool:
        """Report progress (0..1 and a note), shown by `jobq status`; False if this attempt
        no longer owns the job (its lease was lost), a hint to stop."""
        if self.app is None:
            return False
        return self.app.store.progress(self.id, self.token, float(fraction), message)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "jobq_current", default=None
)


def current_job() -> JobContext | None:
    """The job the calling task is running as, or None outside a worker."""
    return _current.get()


def set_current(ctx: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(ctx)


def reset_current(token: contextvars.Token[JobContext | None]) -> None:
    _current.reset(token)


class Task:
    """A registered function: call it directly, or `.submit()` it to run on a worker."""

    def __init__(self, app: App, fn: Callable[..., Any], name: str, options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} queue={self.options.queue!r}>"

    def submit(self, *args: Any, **kwargs: Any) -> Job:
        """Queue one call; keyword arguments named in SUBMIT_OPTIONS are job options.

        Use `submit_with` when the task itself takes an argument with one of those names.
        """
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in SUBMIT_OPTIONS}
        return self.app.submit(self.name, args, kwargs, **options)

    def submit_with(
        self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Job:
        """Queue one call with arguments and options kept apart."""
        return self.app.submit(self.name, tuple(args), kwargs or {}, **options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task (for group/chain/chord)."""
        from .canvas import Signature

        return Signature(self, args, kwargs)

    def map(self, items: Iterable[Any], **options: Any) -> list[Job]:
        """Queue one job per item in one round trip; a tuple/list item is the argument list."""
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            (tuple(it), {}) if isinstance(it, tuple | list) else ((it,), {}) for it in items
        ]
        return self.app.submit_many(self.name, calls, **options)

    # -- asyncio (aio.py: the sync submits above, run off the event loop) ---------------------

    async def asubmit(self, *args: Any, **kwargs: Any) -> Job:
        """`submit` for a coroutine: never blocks the event loop."""
        return await aio.asubmit(self, *args, **kwargs)

    async def asubmit_with(
        self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Job:
        """`submit_with` for a coroutine."""
        return await aio.asubmit_with(self, args, kwargs, **options)

    async def amap(self, items: Iterable[Any], **options: Any) -> list[Job]:
        """`map` for a coroutine: one job per item, one round trip."""
        return await aio.amap(self, items, **options)
