"""What crosses the HTTP boundary: request bodies (validated, every field named in errors) and
response shapes (so /openapi.json describes what the server really sends)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    model_validator,
)

from ..client import MAX_PRIORITY
from ..names import JOB_ID_PATTERN as USER_JOB_ID_PATTERN
from ..names import MAX_NAME_LEN, check_job_id, check_name, check_queue


def _rule(check: Callable[[str, str], str]) -> AfterValidator:
    def validate(value: str, info: ValidationInfo) -> str:
        return check(value, info.field_name or "name")

    return AfterValidator(validate)


# The one name rule (jobq.names) on every name in a body; a breach is a 422 naming the field.
Name = Annotated[str, _rule(lambda v, f: check_name(f, v))]
QueueName = Annotated[str, _rule(check_queue)]
JobId = Annotated[str, _rule(check_job_id)]

NAME_PATTERN = r"^[A-Za-z0-9_.:@+=-]+$"
JOB_ID_PATTERN = r"^[^,]+$"  # parents travel as one comma-separated field
YEAR_S = 366 * 86_400
MAX_PARENTS = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitOptions(_Strict):
    """Options of a submit; each defaults to the task's own default, then jobq's."""

    queue: QueueName | None = Field(
        None, min_length=1, max_length=MAX_NAME_LEN, pattern=NAME_PATTERN
    )
    priority: int | None = Field(
        None, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first."
    )
    delay: float | None = Field(
        None, ge=0, le=10 * YEAR_S, allow_inf_nan=False, description="Seconds before it may run."
    )
    eta: dt.datetime | None = Field(
        None, description="When it may run (ISO 8601; no zone = UTC). Not with delay."
    )
    retries: int | None = Field(None, ge=0, le=1000, description="Attempts after the first.")
    backoff: float | None = Field(
        None, ge=0, le=YEAR_S, allow_inf_nan=False, description="Back-off base, seconds."
    )
    timeout: float | None = Field(
        None, gt=0, le=YEAR_S, allow_inf_nan=False, description="Hard limit per attempt, s."
    )
    result_ttl: int | None = Field(
        None, ge=0, le=10 * YEAR_S, description="Seconds a finished job is kept (0 = forever)."
    )
    depends_on: (
        list[Annotated[Name, Field(min_length=1, max_length=MAX_NAME_LEN, pattern=JOB_ID_PATTERN)]]
        | None
    ) = Field(
        None,
        max_length=MAX_PARENTS,
        description="Ids of parent jobs: this job waits (scheduled) until all succeed, and "
        "fails if one fails or is cancelled.",
    )
    pass_results: Literal["one", "list"] | StrictBool | None = Field(
        None,
        description="Hand the parents' results to the job as its first argument: 'one' = the "
        "single parent's result (a chain), 'list' = all results in depends_on order (fan-in); "
        "true = 'one' for a single parent, else 'list'.",
    )
    unique_key: Name | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="While a job holding this key is pending, submitting another returns the "
        "pending job's id instead of making a new job.",
    )
    worker: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        description="Only the worker of this name runs the job (it waits while that worker is "
        "busy). Not with worker_group; queue is then ignored.",
    )
    worker_group: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        description="Any worker started with --group of this name runs the job.",
    )
    fallback: (
        StrictBool
        | Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]
        | None
    ) = Field(
        None,
        description="With worker: if that worker is not seen for worker_gone_ms "
        "(JOBQ_WORKER_GONE_MS, a minute), run the job from this queue instead of failing it "
        "(true = the job's own queue). A worker_group job waits for any member.",
    )
    concurrency_key: Name | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="At most concurrency_limit jobs sharing this key run at once; the others wait.",
    )
    concurrency_limit: int | None = Field(
        None, ge=1, le=100_000, description="With concurrency_key; default 1."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SubmitOptions:
        if self.delay is not None and self.eta is not None:
            raise ValueError("give either delay or eta, not both")
        if self.eta is not None and not dt.datetime(1970, 1, 2) <= self.eta.replace(
            tzinfo=None
        ) <= dt.datetime(9000, 1, 1):
            raise ValueError("eta must lie between 1970 and 9000")
        parents = self.depends_on or []
        seen: set[str] = set()
        for p in parents:
            if p in seen:
                raise ValueError(f"depends_on: {p!r} is listed twice")
            seen.add(p)
        if self.pass_results not in (None, False) and not parents:
            raise ValueError("pass_results needs depends_on (the parents whose results to pass)")
        if self.pass_results == "one" and len(parents) != 1:
            raise ValueError(
                "pass_results 'one' needs exactly one parent in depends_on; use 'list' for several"
            )
        if self.worker is not None and self.worker_group is not None:
            raise ValueError("give either worker or worker_group, not both")
        if self.fallback not in (None, False) and self.worker is None and self.worker_group is None:
            raise ValueError("fallback applies only with worker or worker_group")
        if self.concurrency_limit is not None and self.concurrency_key is None:
            raise ValueError("concurrency_limit needs concurrency_key")
        return self

    def as_options(self) -> dict[str, Any]:
        """The keyword options of `App.submit` (unset ones left to the task's defaults)."""
        return self.model_dump(exclude_none=True, exclude={"task", "args", "kwargs", "calls"})


class JobIn(SubmitOptions):
    """One job to submit."""

    task: Name = Field(min_length=1, max_length=200, description="A registered task's name.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    job_id: JobId | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=USER_JOB_ID_PATTERN,
        description="Idempotency key: the same id twice makes one job.",
    )

    @model_validator(mode="after")
    def _not_own_parent(self) -> JobIn:
        if self.job_id is not None and self.job_id in (self.depends_on or ()):
            raise ValueError(f"depends_on: job {self.job_id!r} cannot depend on itself")
        return self


class Call(_Strict):
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class BatchIn(SubmitOptions):
    """Many jobs of one task, submitted in one round trip."""

    task: Name = Field(min_length=1, max_length=200)
    calls: list[Call] = Field(min_length=1, max_length=10_000)


class RerunIn(_Strict):
    limit: int = Field(100, ge=1, le=10_000, description="Oldest dead-lettered jobs to re-run.")


class Submitted(BaseModel):
    id: str = Field(
        description="The job standing for this submit: the new one, the one with the same "
        "job_id, or the pending job holding the same unique_key."
    )
    warning: str | None = Field(
        None,
        description="Present when no live worker has registered the task: the job is queued "
        "and runs once a worker that has the task starts.",
    )


class SubmittedMany(BaseModel):
    ids: list[str] = Field(description="Per call, in order, the job standing for it.")
    warning: str | None = Field(
        None, description="Present when no live worker has registered the task (see Submitted)."
    )


class JobError(BaseModel):
    type: str | None = None
    message: str | None = None
    traceback: str | None = None


class JobSummary(BaseModel):
    id: str
    task: str
    queue: str
    state: str
    priority: int
    attempt: int
    max_attempts: int
    worker: str | None
    created: str | None
    started: str | None
    finished: str | None
    eta: str | None
    corrupt: str | None = Field(
        None, description="What is wrong with the stored record; null when it reads cleanly."
    )


class Dependency(BaseModel):
    id: str
    state: str | None


class Received(BaseModel):
    parent: str
    state: str | None = Field(description="The parent's state (null: expired or unknown).")
    result: Any = None


class JobDetail(JobSummary):
    timeout: float | None
    cancel_requested: bool
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    payload: str | None = Field(description="The raw payload when it is not decodable here.")
    result: Any = None
    error: JobError | None
    parents: list[str] = Field(description="Ids of the jobs this one depends on, in order.")
    dependencies: list[Dependency] = Field(
        description="The parents (the first 100) with their current state (null: expired)."
    )
    progress: float | None = Field(description="Last progress the task reported, 0..1.")
    progress_message: str | None
    unique_key: str | None
    received: list[Received] | None = Field(
        None,
        description="The parent results this job was handed (pass_results), in parent "
        "order; null when it takes none.",
    )


class JobPage(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end. A page may hold "
        "fewer jobs than the limit (even none) while a cursor is returned."
    )
    scanned: int = Field(0, description="Index entries examined for this page.")
    truncated: bool = Field(
        False, description="The scan bound was hit: some jobs were not examined."
    )


class ActionResult(BaseModel):
    id: str
    outcome: str


class RerunResult(BaseModel):
    rerun: list[str]


class QueueOut(BaseModel):
    name: str
    queued: int
    scheduled: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int
    succeeded_per_s: float
    failed_per_s: float


class QueuesOut(BaseModel):
    queues: list[QueueOut]
    dead_lettered: int
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null after the last."
    )


class WorkerOut(BaseModel):
    name: str
    alive: bool = Field(
        description="Its last heartbeat is at most 3 of its heartbeat intervals old."
    )
    state: Literal["alive", "gone"] = Field(
        description="`gone`: not seen for 3 heartbeat intervals (killed, cut off, stopped); "
        "listed as gone for 15 minutes, then left out."
    )
    last_seen: str | None
    seen_ago_s: float = Field(description="Seconds since its last heartbeat (server clock).")
    info: dict[str, str]
    jobs: list[str]
    # Its history, from its registry entry (null when an older worker does not publish it).
    started: str | None = Field(None, description="When the worker process started.")
    uptime_s: float | None = Field(None, description="Seconds since it started (server clock).")
    succeeded: int | None = Field(None, description="Attempts it recorded succeeded since start.")
    failed: int | None = Field(
        None, description="Attempts it recorded failed since start (retried or dead-lettered)."
    )
    concurrency: int | None = Field(None, description="How many jobs it runs at once.")
    busy: int | None = Field(None, description="Slots running a job (its in-flight jobs).")
    free: int | None = Field(None, description="Slots free: concurrency minus busy.")


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class ThroughputPoint(BaseModel):
    t: int
    succeeded_per_s: float
    failed_per_s: float
    queues: dict[str, float]


class ThroughputOut(BaseModel):
    interval_s: float
    points: list[ThroughputPoint]


class Health(BaseModel):
    status: str = Field(description="ok, degraded (503) or unavailable (503).")
    broker: str = Field(description="ok, full (submits refused) or unreachable.")
    leader: str | None
    this_master_leads: bool | None
    memory: dict[str, Any] | None = Field(
        default=None, description="used / maxmemory bytes, share, submit limit, eviction policy."
    )
    threads: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per background loop of this master: thread alive, failing since when.",
    )
    problems: list[str] = Field(default_factory=list, description="Why status is not ok.")
    warnings: list[str] = Field(default_factory=list, description="Risks that are not outages.")


class ErrorOut(BaseModel):
    error: str


class PeriodicIn(_Strict):
    """A periodic job: what to run, and a cron expression or a fixed interval."""

    task: str = Field(min_length=1, max_length=200, description="A registered task's name.")
    cron: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Cron expression (5 fields; a 6th = seconds), e.g. '*/5 * * * *'.",
    )
    every: float | None = Field(
        None, ge=1, le=10 * YEAR_S, allow_inf_nan=False, description="Interval in seconds."
    )
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str = Field("default", min_length=1, max_length=200, pattern=NAME_PATTERN)
    missed: Literal["skip", "once"] = Field(
        "skip", description="Ticks missed while no master ran: skip them, or run one job."
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> PeriodicIn:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron or every")
        if self.cron is not None:
            problem = _cron_problem(self.cron)
            if problem:
                raise ValueError(f"cron: {problem}")
        for name, value in (("args", self.args), ("kwargs", self.kwargs)):
            try:
                orjson.dumps(value)  # periodic specs are stored as JSON
            except orjson.JSONEncodeError as exc:
                raise ValueError(f"{name}: cannot be stored as JSON ({exc})") from None
        return self


def _cron_problem(expr: str) -> str | None:
    """Why `expr` cannot schedule anything (None if it can): invalid, or never fires."""
    from croniter import croniter

    try:
        if not croniter.is_valid(expr):
            return f"invalid cron expression {expr!r}"
        it = croniter(expr, dt.datetime.now(dt.UTC).timestamp())
        it.get_next(float)
        it.get_next(float)  # the period is measured between two ticks
    except Exception:  # croniter raises a zoo of types for odd expressions
        return f"cron expression {expr!r} never fires"
    return None


class PeriodicOut(BaseModel):
    name: str
    task: str
    cron: str | None
    every: float | None
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    missed: str
    next_run: str | None = Field(description="When it fires next (UTC, ISO 8601).")


class PeriodicList(BaseModel):
    periodic: list[PeriodicOut]


class Removed(BaseModel):
    name: str
    removed: bool


class Purged(BaseModel):
    queue: str
    cancelled: int = Field(description="Queued jobs cancelled.")
