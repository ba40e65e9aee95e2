"""`Job[R]`: the handle on one submitted job — its id, and the calls that read or steer it.

A handle needs only the part of an App that reaches the broker (`JobHost`: the store and the
serializer of results), so it sits below `Task` and `App`, which both hand handles out.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar, cast

from . import aio
from .codes import Cancel, Rerun
from .errors import JobNotFound, from_code
from .model import JobRecord
from .outcome import settle
from .serde import Serializer
from .states import JobState
from .store import Store

R_co = TypeVar("R_co", covariant=True)


class JobHost(Protocol):
    """What a `Job` handle (and a running job's context) uses of its App."""

    @property
    def store(self) -> Store: ...

    @property
    def serializer(self) -> Serializer: ...


class Job(Generic[R_co]):
    """A handle on one job: its id, and calls that read or steer it.

    `R_co` is the task function's return type (awaited, for an ``async def`` task), so
    ``result()`` is typed; a handle made from an id alone (``app.job(id)``) is a ``Job[Any]``.
    """

    __slots__ = ("app", "id")

    def __init__(self, app: JobHost, job_id: str) -> None:
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

    def result(self, timeout: float | None = None) -> R_co:
        """Wait (blocking, no polling) for the outcome; return the value or raise the error."""
        rec = self.app.store.wait(self.id, timeout, full=False)
        # The task's return value as the codec brings it back (a tuple comes back a list).
        return cast("R_co", settle(self.app.serializer, self.id, rec, timeout))

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
            raise from_code(code, self.id, "rerun")

    # -- asyncio (aio.py) ---------------------------------------------------------------------

    async def aresult(self, timeout: float | None = None) -> R_co:
        """`result` for a coroutine: no thread held while waiting, the same value or errors."""
        return cast("R_co", await aio.aresult(self, timeout))

    async def astatus(self) -> JobState | None:
        """`status` for a coroutine."""
        return await aio.astatus(self)

    async def ainfo(self) -> JobRecord:
        """`info` for a coroutine."""
        return await aio.ainfo(self)

    async def acancel(self) -> bool:
        """`cancel` for a coroutine."""
        return await aio.acancel(self)
