"""Operations endpoints: `/healthz` (open, for load balancers) and `/metrics` (Prometheus)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from ..autoscale import DEFAULT_TARGET_S
from ..errors import BrokerError
from ..outage import Outage
from .context import Context, ctx
from .metrics import cache_of, render
from .schemas import Health

router = APIRouter(tags=["system"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Broker reachable and not full? This master's loops alive? (no auth)",
    responses={503: {"model": Health, "description": "Broker unreachable or full, or a loop down"}},
)
def healthz(c: Annotated[Context, Depends(ctx)]) -> JSONResponse:
    """The truth for a load balancer: 200 only if the broker answers, has room for new jobs,
    and every background loop of this master runs without failing; 503 (JSON) otherwise."""
    mine = c.maintainer.leading if c.maintainer else None
    threads, problems = _loops(c)
    try:
        c.app.store.ping()
        leader = c.app.store.leader_holder()
        mem = c.app.store.memory()
    except BrokerError as exc:
        body = Health(
            status="unavailable",
            broker="unreachable",
            leader=None,
            this_master_leads=mine,
            threads=threads,
            problems=[str(exc), *problems],
        )
        return JSONResponse(body.model_dump(), status_code=503)
    if c.maintainer is not None:  # the lease, not the loop's last view of it (it may be stale)
        mine = leader == c.maintainer.name
    limit = c.app.store.room.limit
    share = mem.share
    full = share is not None and share >= limit
    if full:
        problems.insert(
            0, f"Valkey is {share:.0%} full (jobq submits up to {limit:.0%}): new jobs are refused"
        )
    warnings = []
    if mem.evicts:
        warnings.append(
            f"maxmemory-policy is {mem.policy}: a full server deletes jobs; set noeviction"
        )
    memory = {
        "used": mem.used,
        "maxmemory": mem.maxmemory,
        "share": None if share is None else round(share, 4),
        "limit": limit,
        "policy": mem.policy,
    }
    body = Health(
        status="degraded" if problems else "ok",
        broker="full" if full else "ok",
        leader=leader,
        this_master_leads=mine,
        memory=memory,
        threads=threads,
        problems=problems,
        warnings=warnings,
    )
    return JSONResponse(body.model_dump(), status_code=503 if problems else 200)


def _loops(c: Context) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each background loop of this master: its thread alive, and its failure episode if any."""
    loops: list[tuple[str, bool | None, Outage]] = [
        ("events", c.hub.thread_alive(), c.hub.outage),
        ("rates", c.rates.thread_alive(), c.rates.outage),
    ]
    if c.maintainer is not None:
        alive = c.maintainer.thread.is_alive() if c.maintainer.thread is not None else None
        loops.insert(0, ("maintenance", alive, c.maintainer.outage))
    threads: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, alive, outage in loops:
        threads[name] = {"thread_alive": alive, **outage.state()}
        if alive is False:
            problems.append(f"the {name} thread of this master is not running")
        elif outage.down:
            problems.append(
                f"{name} loop failing for {outage.down_for():.0f} s: {outage.last_error}"
            )
    return threads, problems


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics: depths, ages, outcomes, histograms, workers, memory, autoscaling",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(
    request: Request,
    c: Annotated[Context, Depends(ctx)],
    target_s: Annotated[float, Query(gt=0, le=86400)] = DEFAULT_TARGET_S,
) -> PlainTextResponse:
    """The exposition built by metrics.py from a snapshot at most `metrics.CACHE_S` old
    (bounded reads however many jobs); `target_s` is the drain target of
    ``jobq_queue_desired_workers`` (docs/autoscaling.md)."""
    snap = cache_of(request.app.state).get(c)
    text = render(c, snap, target_s)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
