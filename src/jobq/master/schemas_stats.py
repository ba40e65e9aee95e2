"""Schemas of the per-task figures and a worker's page (stats_api.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .schemas import JobSummary, WorkerOut


class TaskOut(BaseModel):
    queue: str
    task: str
    succeeded: int
    failed: int
    retried: int
    cancelled: int
    failure_rate: float | None = Field(
        description="failed / (succeeded + failed); null before any outcome."
    )
    succeeded_per_s: float = Field(description="Over the last 60 s (sampled by this master).")
    failed_per_s: float = Field(description="Over the last 60 s (sampled by this master).")
    runtime_p50_ms: float | None
    runtime_p95_ms: float | None
    wait_p50_ms: float | None = Field(
        description="Queue wait: from when the job became ready to its claim; null: no data."
    )
    wait_p95_ms: float | None
    runs: int = Field(description="Attempts that ran to an outcome (the runtime samples).")


class TasksOut(BaseModel):
    tasks: list[TaskOut]


class WorkerDetail(WorkerOut):
    recent: list[JobSummary] = Field(
        description="Up to 50 jobs this worker ran lately, newest first (running ones first)."
    )
