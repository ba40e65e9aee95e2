"""`GET /v1/autoscale`: per queue, the workers needed to drain its backlog within a target time.

The figures come from the same cached snapshot as `/metrics` (metrics.py; one bounded read
however many jobs), the rule from autoscale.py; docs/autoscaling.md shows a KEDA ScaledObject
polling this route and an HPA reading the matching metric.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from ..autoscale import DEFAULT_TARGET_S, Decision
from ..names import encodable
from .context import Context, ctx
from .metrics import cache_of

router = APIRouter(tags=["autoscaling"])


class QueueScale(BaseModel):
    queue: str
    desired_workers: int = Field(description="Workers this queue needs now (0: idle).")
    backlog: int = Field(description="Jobs ready and waiting.")
    arrival_per_s: float | None = Field(description="Jobs arriving per second (null: unmeasured).")
    runtime_mean_s: float | None = Field(description="Mean attempt runtime (null: none ran yet).")
    slots_per_worker: int = Field(description="Slots one more worker brings (its concurrency).")
    workers: int = Field(description="Live workers serving the queue.")
    busy: int = Field(description="Their slots running a job now.")
    free: int = Field(description="Their slots free now.")
    reason: str = Field(description="How the number came about.")


class Autoscale(BaseModel):
    target_s: float = Field(description="The drain target: backlog cleared within this time.")
    queues: list[QueueScale]


def _out(d: Decision) -> QueueScale:
    return QueueScale(
        queue=d.queue,
        desired_workers=d.desired_workers,
        backlog=d.backlog,
        arrival_per_s=None if d.arrival_per_s is None else round(d.arrival_per_s, 6),
        runtime_mean_s=None if d.runtime_mean_s is None else round(d.runtime_mean_s, 6),
        slots_per_worker=d.slots_per_worker,
        workers=d.workers,
        busy=d.busy,
        free=d.free,
        reason=d.reason,
    )


@router.get(
    "/v1/autoscale",
    response_model=Autoscale,
    summary="Workers each queue needs to drain its backlog within target_s",
)
def autoscale(
    request: Request,
    c: Annotated[Context, Depends(ctx)],
    target_s: Annotated[float, Query(gt=0, le=86400)] = DEFAULT_TARGET_S,
    queue: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Autoscale:
    """Every queue (the first few thousand), or only `queue`: an unknown queue answers with
    zero workers (idle), so a scaler polling a queue not created yet scales to its minimum."""
    if queue is not None and not encodable(queue):
        return Autoscale(target_s=target_s, queues=[])
    snap = cache_of(request.app.state).get(c, None if queue is None else [queue])
    return Autoscale(target_s=target_s, queues=[_out(d) for d in snap.decisions(target_s)])
