"""What crosses the HTTP boundary: request bodies (validated, every field named in errors) and
response shapes (so /openapi.json describes what the server really sends)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..client import MAX_PRIORITY

#: Fields of the scheduling issue that the core cannot honour yet: refused by name, not ignored.
NOT_SUPPORTED_YET = ("depends_on", "unique_key", "worker", "worker_group")

NAME_PATTERN = r"^[A-Za-z0-9_.:@+=-]+$"
YEAR_S = 366 * 86_400


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_future_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in NOT_SUPPORTED_YET:
                if name in data:
                    raise ValueError(
                        f"{name} is not supported yet (dependencies, unique jobs and worker "
                        "targeting come with the scheduling features); remove the field"
                    )
        return data


class SubmitOptions(_Strict):
    """Options of a submit; each defaults to the task's own default, then jobq's."""

    queue: str | None = Field(None, min_length=1, max_length=200, pattern=NAME_PATTERN)
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

    @model_validator(mode="after")
    def _one_of_delay_eta(self) -> SubmitOptions:
        if self.delay is not None and self.eta is not None:
            raise ValueError("give either delay or eta, not both")
        if self.eta is not None and not dt.datetime(1970, 1, 2) <= self.eta.replace(
            tzinfo=None
        ) <= dt.datetime(9000, 1, 1):
            raise ValueError("eta must lie between 1970 and 9000")
        return self

    def as_options(self) -> dict[str, Any]:
        opts = self.model_dump(exclude_none=True, exclude={"task", "args", "kwargs", "calls"})
        return opts


class JobIn(SubmitOptions):
    """One job to submit."""

    task: str = Field(min_length=1, max_length=200, description="A registered task's name.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        description="Idempotency key: the same id twice makes one job.",
    )


class Call(_Strict):
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class BatchIn(SubmitOptions):
    """Many jobs of one task, submitted in one round trip."""

    task: str = Field(min_length=1, max_length=200)
    calls: list[Call] = Field(min_length=1, max_length=10_000)


class RerunIn(_Strict):
    limit: int = Field(100, ge=1, le=10_000, description="Oldest dead-lettered jobs to re-run.")


class Submitted(BaseModel):
    id: str


class SubmittedMany(BaseModel):
    ids: list[str]


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


class JobDetail(JobSummary):
    timeout: float | None
    cancel_requested: bool
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    payload: str | None = Field(description="The raw payload when it is not decodable here.")
    result: Any = None
    error: JobError | None


class JobPage(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end. A page may hold "
        "fewer jobs than the limit (even none) while a cursor is returned."
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


class WorkerOut(BaseModel):
    name: str
    alive: bool
    last_seen: str | None
    info: dict[str, str]
    jobs: list[str]


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
    status: str
    broker: str
    leader: str | None
    this_master_leads: bool | None


class ErrorOut(BaseModel):
    error: str
