"""Operations endpoints: `/healthz` (open, for load balancers) and `/metrics` (Prometheus)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from ..errors import BrokerError
from ..outage import Outage
from .context import Context, ctx
from .rates import MAX_QUEUES, first_queues
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


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics: depths, outcome counters, workers, dead letters",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(c: Annotated[Context, Depends(ctx)]) -> PlainTextResponse:
    store = c.reads()  # may be a replica at most max_staleness_ms behind (replicas.py)
    qs, more = first_queues(store, MAX_QUEUES)  # bounded however many queue names exist
    workers = store.list_workers(1000)
    lines = [
        "# HELP jobq_jobs Jobs waiting or running, per queue and state.",
        "# TYPE jobq_jobs gauge",
    ]
    for q in qs:
        n = _label(q.name)
        for state, v in (("queued", q.queued), ("scheduled", q.scheduled), ("running", q.running)):
            lines.append(f'jobq_jobs{{queue="{n}",state="{state}"}} {v}')
    lines += [
        "# HELP jobq_jobs_finished_total Jobs that reached a terminal state, per queue.",
        "# TYPE jobq_jobs_finished_total counter",
    ]
    for q in qs:
        n = _label(q.name)
        for outcome, v in (
            ("succeeded", q.succeeded),
            ("failed", q.failed),
            ("cancelled", q.cancelled),
        ):
            lines.append(f'jobq_jobs_finished_total{{queue="{n}",outcome="{outcome}"}} {v}')
    lines += [
        "# HELP jobq_jobs_retried_total Attempts retried (failure back-off or expired lease).",
        "# TYPE jobq_jobs_retried_total counter",
        *(f'jobq_jobs_retried_total{{queue="{_label(q.name)}"}} {q.retried}' for q in qs),
        "# HELP jobq_dead_letter_jobs Failed jobs waiting in the dead-letter set.",
        "# TYPE jobq_dead_letter_jobs gauge",
        f"jobq_dead_letter_jobs {store.dead_count()}",
        "# HELP jobq_queues_truncated 1 if queues past the first few thousand are not shown.",
        "# TYPE jobq_queues_truncated gauge",
        f"jobq_queues_truncated {int(more)}",
        "# HELP jobq_workers Workers with a live registry entry.",
        "# TYPE jobq_workers gauge",
        f"jobq_workers {sum(1 for w in workers if w.alive)}",
        "# HELP jobq_events_stream_length Entries in the (capped) event stream.",
        "# TYPE jobq_events_stream_length gauge",
        f"jobq_events_stream_length {store.events_length()}",
        "# HELP jobq_event_clients Open /v1/events streams on this master.",
        "# TYPE jobq_event_clients gauge",
        f"jobq_event_clients {len(c.hub.subscribers)}",
        "# HELP jobq_event_clients_dropped_total Streams closed for falling too far behind.",
        "# TYPE jobq_event_clients_dropped_total counter",
        f"jobq_event_clients_dropped_total {c.hub.dropped}",
    ]
    if c.maintainer is not None:
        lines += [
            "# HELP jobq_master_leading 1 if this master runs the maintenance loop now.",
            "# TYPE jobq_master_leading gauge",
            f"jobq_master_leading {int(c.maintainer.leading)}",
        ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
