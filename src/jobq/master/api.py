"""The `/v1` JSON API: submit, read, list, cancel and re-run jobs; queues, workers, throughput.

Handlers are plain `def`s: FastAPI runs them in a thread pool, where they call the same sync
`App`/`Store` operations as the CLI and the workers (no second, async copy of any operation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse

from ..codes import Cancel, Rerun
from ..errors import BrokerError, DependencyCycle, JobIdConflict, JobNotFound
from ..graph import received, workflow_graph
from ..registry import gone_ms
from ..states import JobState
from . import bulk as bulk_ops
from .context import Context, ctx
from .schemas import (
    ActionResult,
    BatchIn,
    ErrorOut,
    JobDetail,
    JobIn,
    JobPage,
    Purged,
    QueueOut,
    QueuesOut,
    RerunIn,
    RerunResult,
    Submitted,
    SubmittedMany,
    ThroughputOut,
    WorkerOut,
    WorkersOut,
)
from .schemas_jobs import BulkConflict, BulkIn, BulkOut, GraphOut
from .views import job_detail, job_summary, worker_out

router = APIRouter(prefix="/v1", responses={503: {"model": ErrorOut}})
Ctx = Annotated[Context, Depends(ctx)]
SHOWN_PARENTS = 100
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job (or its result expired)"}
}
#: How long an HTTP submit waits for a primary (a failover) before answering 503 with a
#: Retry-After: HTTP clients have timeouts of their own, and a handler thread waiting the whole
#: `failover_wait_s` would tie up the pool; a few seconds still hides a short blip.
API_FAILOVER_WAIT_S = 3.0


def api_wait_s(c: Context) -> float:
    """The failover wait of a submit made over HTTP: the setting, at most a few seconds."""
    return min(API_FAILOVER_WAIT_S, c.app.store.failover_wait_s)


def unregistered_warning(c: Context, task: str) -> str | None:
    """What a by-name submit of `task` answers beside the id when no live worker has registered
    the task (the job is queued all the same): None when one has (the catalog, registry.py),
    or when the catalog cannot be read just now (the job was queued: that is the answer)."""
    try:
        return c.app.catalog.warning(c.app.store, task, gone_ms(c.app.settings))
    except BrokerError:
        return None


@router.post(
    "/jobs",
    status_code=201,
    response_model=Submitted,
    response_model_exclude_none=True,
    tags=["jobs"],
    summary="Submit one job (with dependencies, unique key, target worker, limits...)",
    responses={
        403: {"model": ErrorOut, "description": "result_ttl 0 (keep forever) without a token"},
        409: {"model": ErrorOut, "description": "job_id taken by a job of another task"},
        422: {"model": ErrorOut, "description": "Invalid option, or unknown parent"},
    },
)
def submit(body: JobIn, c: Ctx, response: Response) -> Submitted:
    _check_keep_forever(body.result_ttl, c)
    with _refusals():
        job = c.app.submit(
            body.task, body.args, body.kwargs, failover_wait_s=api_wait_s(c), **body.as_options()
        )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return Submitted(id=job.id, warning=unregistered_warning(c, body.task))


@router.post(
    "/jobs/batch",
    status_code=201,
    response_model=SubmittedMany,
    response_model_exclude_none=True,
    tags=["jobs"],
    summary="Submit many jobs of one task, sharing options, in one round trip",
    responses={
        403: {"model": ErrorOut, "description": "result_ttl 0 (keep forever) without a token"},
        422: {"model": ErrorOut, "description": "Invalid option, or unknown parent"},
    },
)
def submit_batch(body: BatchIn, c: Ctx) -> SubmittedMany:
    _check_keep_forever(body.result_ttl, c)
    calls = [(tuple(call.args), call.kwargs) for call in body.calls]
    with _refusals():
        jobs = c.app.submit_many(
            body.task, calls, failover_wait_s=api_wait_s(c), **body.as_options()
        )
    return SubmittedMany(ids=[j.id for j in jobs], warning=unregistered_warning(c, body.task))


def _check_keep_forever(result_ttl: int | None, c: Context) -> None:
    """A result kept forever fills the server for good: only token-authenticated callers."""
    if result_ttl is not None and result_ttl <= 0 and not c.trusted:
        raise HTTPException(
            403,
            "result_ttl: 0 keeps the result forever, which only a token-authenticated caller "
            "may ask for (start jobq master with --token-file or JOBQ_TOKEN); give a TTL in "
            "seconds instead",
        )


@contextmanager
def _refusals() -> Iterator[None]:
    """A submit the broker refuses (unknown parent, cycle) is the request's fault: 422 naming
    depends_on and the parent (nothing was written); a job id taken by another task's job is
    a 409 naming both tasks."""
    try:
        yield
    except JobIdConflict as exc:
        raise HTTPException(409, f"job_id: {exc}") from exc
    except (JobNotFound, DependencyCycle) as exc:
        text = str(exc)
        raise HTTPException(422, text if "depends_on" in text else f"depends_on: {text}") from exc


@router.get(
    "/jobs",
    response_model=JobPage,
    tags=["jobs"],
    summary="List jobs by state, queue, task, worker or text, a page at a time",
    description="With a state: that state's index order. Without (any state): newest first "
    "by creation time, from a bounded sample of the indexes (`truncated` when some were left "
    "out). `q` matches id, task, queue, worker and the arguments text, case-insensitively.",
    responses={400: {"model": ErrorOut}},
)
def list_jobs(
    c: Ctx,
    state: JobState | None = None,
    queue: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    task: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    worker: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    try:
        page = c.reads().list_jobs_page(
            state=state, queue=queue, task=task, worker=worker, q=q, cursor=cursor, limit=limit
        )
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from exc
    return JobPage.model_validate(
        {
            "jobs": [job_summary(r) for r in page.jobs],
            "next_cursor": page.next_cursor,
            "scanned": page.scanned,
            "truncated": page.truncated,
        }
    )


@router.post(
    "/jobs/bulk",
    response_model=BulkOut,
    tags=["jobs"],
    summary="Retry, cancel or delete every job a filter matches, after confirming the count",
    description="The filter is the one `GET /v1/jobs` takes. `dry_run` returns the count "
    "only; `expect` (the count the user confirmed) answers 409 with the current count when "
    "the filter matches another number now, changing nothing. Each job is changed by one "
    "script call (retry: failed jobs; cancel: queued, scheduled, running; delete: finished "
    "jobs); the others are listed in `skipped` with the reason.",
    responses={409: {"model": BulkConflict, "description": "`expect` differs from the count"}},
)
def bulk(body: BulkIn, c: Ctx) -> Any:
    store = c.app.store
    try:
        ids, truncated = bulk_ops.matching(store, body)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    if body.expect is not None and body.expect != len(ids):
        return JSONResponse(
            status_code=409,
            content={
                "error": f"expect: {body.expect} jobs were confirmed, the filter matches "
                f"{len(ids)} now; confirm the new count",
                "matched": len(ids),
            },
        )
    if body.dry_run:
        return BulkOut(
            action=body.action,
            matched=len(ids),
            done=0,
            skipped=[],
            dry_run=True,
            truncated=truncated,
        )
    return bulk_ops.act(store, body, ids, truncated)


@router.get(
    "/jobs/{job_id}",
    response_model=JobDetail,
    tags=["jobs"],
    summary="One job: arguments, attempts, timings, result or error",
    responses=NOT_FOUND,
)
def get_job(job_id: str, c: Ctx) -> JobDetail:
    store = c.app.store
    rec = store.get_job(job_id)
    if rec is None:
        raise HTTPException(404, f"no job {job_id!r} (never submitted, or its result expired)")
    states = store.get_states(list(rec.parents[:SHOWN_PARENTS]))  # one round trip, not one each
    out = job_detail(rec, c.app.serializer, states)
    out["received"] = received(store, rec.id, rec.parents, c.app.serializer)
    return JobDetail.model_validate(out)


@router.get(
    "/jobs/{job_id}/graph",
    response_model=GraphOut,
    response_model_by_alias=True,
    tags=["jobs"],
    summary="The workflow a job belongs to: parents, children, chords, each with its state",
    description="Walks parents and children from any job of the workflow, breadth first, "
    "bounded at 500 nodes (`truncated`). `root` is its oldest job without parents.",
    responses=NOT_FOUND,
)
def job_graph(job_id: str, c: Ctx) -> GraphOut:
    g = workflow_graph(c.app.store, job_id)
    if g is None:
        raise HTTPException(404, f"no job {job_id!r} (never submitted, or its result expired)")
    return GraphOut.model_validate(
        {
            "root": g.root,
            "nodes": g.nodes,
            "edges": [{"from": a, "to": b} for a, b in g.edges],
            "truncated": g.truncated,
        }
    )


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=ActionResult,
    tags=["jobs"],
    summary="Cancel a queued/scheduled job; ask a running one to stop",
    responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "Already finished"}},
)
def cancel(job_id: str, c: Ctx) -> ActionResult:
    code = c.app.store.cancel(job_id)
    if code == Cancel.NOT_FOUND:
        raise HTTPException(404, f"no job {job_id!r}")
    if code == Cancel.FINISHED:
        raise HTTPException(409, f"job {job_id!r} already finished; nothing to cancel")
    outcome = "cancelled" if code == Cancel.CANCELLED else "cancel_requested"
    return ActionResult(id=job_id, outcome=outcome)


@router.post(
    "/jobs/{job_id}/retry",
    response_model=ActionResult,
    tags=["jobs"],
    summary="Queue a failed (dead-lettered) job again, attempts reset",
    responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "Not in state failed"}},
)
def retry(job_id: str, c: Ctx) -> ActionResult:
    code = c.app.store.rerun(job_id)
    if code == Rerun.NOT_FOUND:
        raise HTTPException(404, f"no job {job_id!r}")
    if code != Rerun.QUEUED:
        raise HTTPException(409, f"job {job_id!r} is not failed; only failed jobs are retried")
    return ActionResult(id=job_id, outcome="queued")


@router.post(
    "/dead/rerun",
    response_model=RerunResult,
    tags=["jobs"],
    summary="Re-run the oldest dead-lettered jobs",
)
def rerun_dead(c: Ctx, body: RerunIn | None = None) -> RerunResult:
    limit = body.limit if body else 100
    done = [i for i in c.app.store.dead_letters(limit) if c.app.store.rerun(i) == Rerun.QUEUED]
    return RerunResult(rerun=done)


@router.get(
    "/queues",
    response_model=QueuesOut,
    tags=["system"],
    summary="Queues, a page at a time: depths per state, lifetime counters, recent rates",
)
def queues(
    c: Ctx,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> QueuesOut:
    at = int(cursor or 0)
    if at >= 2**64:  # (SSCAN cursors are unsigned 64-bit; Valkey refuses anything larger)
        raise HTTPException(400, "cursor: not a cursor of this listing; pass its next_cursor")
    page, nxt = c.reads().queue_page(at, limit)
    out = []
    for q in page:
        ok, bad = c.rates.recent(q.name)
        out.append(
            QueueOut(
                name=q.name,
                queued=q.queued,
                scheduled=q.scheduled,
                running=q.running,
                succeeded=q.succeeded,
                failed=q.failed,
                cancelled=q.cancelled,
                retried=q.retried,
                succeeded_per_s=round(ok, 3),
                failed_per_s=round(bad, 3),
            )
        )
    return QueuesOut(
        queues=out, dead_lettered=c.reads().dead_count(), next_cursor=str(nxt) if nxt else None
    )


@router.post(
    "/queues/{queue}/purge",
    response_model=Purged,
    tags=["system"],
    summary="Cancel every queued job of a queue (scheduled and running jobs stay)",
    responses={404: {"model": ErrorOut, "description": "No such queue"}},
)
def purge(queue: Annotated[str, Path(min_length=1, max_length=200)], c: Ctx) -> Purged:
    if not c.app.store.has_queue(queue):
        raise HTTPException(404, f"no queue {queue!r} (no job was ever submitted to it)")
    return Purged(queue=queue, cancelled=c.app.store.purge(queue))


@router.get(
    "/throughput",
    response_model=ThroughputOut,
    tags=["system"],
    summary="Finished jobs per second over the last minutes (sampled by this master)",
)
def throughput(
    c: Ctx, window_s: Annotated[float | None, Query(gt=0, le=86400)] = None
) -> ThroughputOut:
    return ThroughputOut.model_validate(
        {"interval_s": c.rates.interval_s, "points": c.rates.points(window_s)}
    )


@router.get(
    "/workers",
    response_model=WorkersOut,
    tags=["system"],
    summary="Workers, newest first: alive or gone, last heartbeat, registry entry, current jobs",
)
def workers(c: Ctx, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> WorkersOut:
    out = [WorkerOut.model_validate(worker_out(w)) for w in c.reads().list_workers(limit)]
    return WorkersOut(workers=out)
