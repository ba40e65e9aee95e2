"""`/v1/periodic`: list, add or replace, and remove periodic jobs at run time (as `jobq periodic`
does). The maintenance leader fires them; each tick once, however many masters run."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from ..periodic import PeriodicSpec
from .context import Context, ctx
from .schemas import NAME_PATTERN, ErrorOut, PeriodicIn, PeriodicList, PeriodicOut, Removed

router = APIRouter(prefix="/v1/periodic", tags=["periodic"], responses={503: {"model": ErrorOut}})
Ctx = Annotated[Context, Depends(ctx)]
Name = Annotated[str, Path(min_length=1, max_length=200, pattern=NAME_PATTERN)]


def _out(spec: PeriodicSpec, due_ms: int | None) -> PeriodicOut:
    return PeriodicOut(
        name=spec.name,
        task=spec.task,
        cron=spec.cron,
        every=spec.every_s,
        args=spec.args,
        kwargs=spec.kwargs,
        queue=spec.queue,
        missed=spec.missed,
        next_run=dt.datetime.fromtimestamp(due_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
        if due_ms
        else None,
    )


@router.get("", response_model=PeriodicList, summary="Every periodic job and when it next fires")
def list_periodic(c: Ctx) -> PeriodicList:
    return PeriodicList(periodic=[_out(s, due) for s, due in c.app.store.list_periodic()])


@router.put(
    "/{name}",
    response_model=PeriodicOut,
    summary="Add or replace a periodic job (an unchanged one keeps its schedule)",
    responses={422: {"model": ErrorOut, "description": "Invalid schedule or field"}},
)
def put_periodic(name: Name, body: PeriodicIn, c: Ctx) -> PeriodicOut:
    fields: dict[str, Any] = body.model_dump(exclude={"every"})
    spec = PeriodicSpec(name=name, every_s=body.every, **fields)
    c.app.store.upsert_periodic(spec)
    due = next((d for s, d in c.app.store.list_periodic() if s.name == name), None)
    return _out(spec, due)


@router.delete(
    "/{name}",
    response_model=Removed,
    summary="Remove a periodic job (jobs it already made are kept)",
    responses={
        404: {"model": ErrorOut, "description": "No such periodic job"},
        409: {"model": ErrorOut, "description": "Defined in code: it would return (force)"},
    },
)
def delete_periodic(
    name: Name,
    c: Ctx,
    force: Annotated[
        bool, Query(description="Remove one defined in code too (it returns on the next start).")
    ] = False,
) -> Removed:
    spec = next((s for s, _due in c.app.store.list_periodic() if s.name == name), None)
    why = spec.removal_refused() if spec is not None else None
    if why and not force:
        raise HTTPException(409, why.replace("--force", "force=true"))
    if not c.app.store.remove_periodic(name):
        raise HTTPException(404, f"no periodic job named {name!r}")
    return Removed(name=name, removed=True)
