"""Per-task figures (`GET /v1/tasks`) and one worker's page (`GET /v1/workers/{name}`).

The figures are counted by the broker's scripts (histograms.py, `tstats:<queue>`), so they
cover every worker and survive master restarts; only the per-second rates come from this
master's sampler (rates.py). Reads go where the other stale-tolerant reads go (`reads()`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from .context import Context, ctx
from .schemas import ErrorOut, JobSummary
from .schemas_stats import TaskOut, TasksOut, WorkerDetail
from .views import job_summary, worker_out

router = APIRouter(prefix="/v1", responses={503: {"model": ErrorOut}})
Ctx = Annotated[Context, Depends(ctx)]
#: The window of the per-task rates (seconds).
RATE_WINDOW_S = 60.0
#: How many jobs a worker's page lists, and how many finished entries it examines for them.
RECENT_JOBS = 50
RECENT_SCAN = 2000
#: How many workers the lookup of one by name reads (the registry's newest first).
WORKER_LOOKUP = 1000


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


@router.get(
    "/tasks",
    response_model=TasksOut,
    tags=["system"],
    summary="Per task and queue: outcomes, failure rate, rates, runtime and queue-wait p50/p95",
)
def tasks(
    c: Ctx, queue: Annotated[str | None, Query(min_length=1, max_length=200)] = None
) -> TasksOut:
    stats = c.reads().task_stats([queue] if queue else None)
    rates = c.rates.task_rates(RATE_WINDOW_S)
    out = []
    for t in stats:
        ok, bad = rates.get((t.queue, t.task), (0.0, 0.0))
        out.append(
            TaskOut(
                queue=t.queue,
                task=t.task,
                succeeded=t.succeeded,
                failed=t.failed,
                retried=t.retried,
                cancelled=t.cancelled,
                failure_rate=_round(t.failure_rate),
                succeeded_per_s=round(ok, 3),
                failed_per_s=round(bad, 3),
                runtime_p50_ms=_round(t.runtime.quantile(0.5)),
                runtime_p95_ms=_round(t.runtime.quantile(0.95)),
                wait_p50_ms=_round(t.wait.quantile(0.5)),
                wait_p95_ms=_round(t.wait.quantile(0.95)),
                runs=t.runtime.count,
            )
        )
    return TasksOut(tasks=out)


@router.get(
    "/workers/{name}",
    response_model=WorkerDetail,
    tags=["system"],
    summary="One worker: liveness, history (uptime, jobs done, failures), current and recent jobs",
    responses={404: {"model": ErrorOut, "description": "No such worker (or gone for long)"}},
)
def worker(name: Annotated[str, Path(min_length=1, max_length=200)], c: Ctx) -> WorkerDetail:
    found = next((w for w in c.reads().list_workers(WORKER_LOOKUP) if w.name == name), None)
    if found is None:
        raise HTTPException(404, f"no worker {name!r} (never seen, or gone for long)")
    recent = c.app.store.worker_jobs(name, found.jobs, RECENT_JOBS, RECENT_SCAN)
    return WorkerDetail.model_validate(
        {
            **worker_out(found),
            "recent": [JobSummary.model_validate(job_summary(r)) for r in recent],
        }
    )
