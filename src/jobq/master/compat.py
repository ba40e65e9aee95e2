"""The two endpoints of the classic Flask + Celery design, byte for byte, for drop-in users.

``POST /schedule`` ``{"task_id": "123", "task_type": "process_data", ...}`` submits the task
named by ``task_type`` with the other fields as keyword arguments and ``task_id`` as the job id
(so scheduling the same id twice makes one job); a task no live worker has registered is
queued all the same, and the reply adds ``"warning"`` saying so. ``GET /status/<task_id>``
maps jobq's states onto ``pending`` / ``running`` / ``completed`` / ``failed``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ..errors import BrokerError, JobqError
from ..states import JobState
from .api import api_wait_s, unregistered_warning
from .context import Context, ctx
from .schemas import ErrorOut
from .views import decode_result

router = APIRouter(tags=["compatible"], responses={503: {"model": ErrorOut}})

STATUS = {
    JobState.SCHEDULED: "pending",
    JobState.QUEUED: "pending",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",
}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    # json.dumps' default separators: the exact bytes the classic design returns.
    return Response(json.dumps(body), status_code=status, media_type="application/json")


SCHEDULE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "Becomes the job id."},
                    "task_type": {"type": "string", "description": "A registered task's name."},
                },
                "additionalProperties": True,
                "description": "Fields other than task_id/task_type are the task's kwargs.",
            }
        }
    },
}


@router.post(
    "/schedule",
    summary="Schedule a task (compatible endpoint)",
    openapi_extra={"requestBody": SCHEDULE_BODY},
    responses={
        200: {"description": '{"task_id": "123", "status": "scheduled"}'},
        400: {"description": '{"error": "Missing task_id or task_type"}'},
    },
)
async def schedule(request: Request, c: Annotated[Context, Depends(ctx)]) -> Response:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        return _json({"error": "Request body must be a JSON object"}, 400)
    if not isinstance(body, dict):
        return _json({"error": "Request body must be a JSON object"}, 400)
    task_id, task_type = body.pop("task_id", None), body.pop("task_type", None)
    if task_id in (None, "") or task_type in (None, ""):
        return _json({"error": "Missing task_id or task_type"}, 400)
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or len(task_id) > 200:
        return _json({"error": "task_id must be a string of at most 200 characters"}, 400)
    if not isinstance(task_type, str) or len(task_type) > 200:
        return _json({"error": "task_type must be a string of at most 200 characters"}, 400)
    try:
        await run_in_threadpool(
            c.app.submit, task_type, (), body, job_id=task_id, failover_wait_s=api_wait_s(c)
        )
    except BrokerError:
        raise  # the broker's trouble, not the request's: 503 (+ Retry-After) from the handler
    except JobqError as exc:
        return _json({"error": str(exc)}, 400)
    out = {"task_id": task_id, "status": "scheduled"}
    warning = await run_in_threadpool(unregistered_warning, c, task_type)
    if warning:  # (only then: the reply is otherwise the classic design's, byte for byte)
        out["warning"] = warning
    return _json(out)


@router.get(
    "/status/{task_id}",
    summary="A task's status and result (compatible endpoint)",
    responses={
        200: {
            "description": '{"task_id": ..., "status": pending|running|completed|failed, '
            '"result": ...}'
        },
        404: {"description": '{"error": "Task not found"}'},
    },
)
async def status(task_id: str, c: Annotated[Context, Depends(ctx)]) -> Response:
    rec = await run_in_threadpool(c.app.store.get_job, task_id)
    if rec is None:
        return _json({"error": "Task not found"}, 404)
    result: Any = None
    if rec.state == JobState.SUCCEEDED:
        result = decode_result(rec, c.app.serializer)
    elif rec.state == JobState.FAILED:
        e = rec.error or {}
        result = {"error": f"{e.get('type', 'Error')}: {e.get('message', '')}"}
    elif rec.state == JobState.CANCELLED:
        result = {"error": "cancelled"}
    return _json({"task_id": task_id, "status": STATUS[rec.state], "result": result})
