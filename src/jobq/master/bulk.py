"""Bulk retry / cancel / delete of the jobs a listing filter matches (`POST /v1/jobs/bulk`).

The set is found with the same listing `GET /v1/jobs` uses (read from the primary: the
count must be the one acted on), at most `limit` jobs. The count is the confirmation: a
request whose `expect` differs from the count found now changes nothing (the UI showed one
number, the set moved since), and `dry_run` only counts. Each job's change is then one script
call of the existing transition (retry = rerun.lua, as `POST /v1/jobs/{id}/retry`; cancel =
cancel.lua; delete = delete.lua), so each job moves atomically and a job that changed state in
between is skipped with its reason, never half-changed.
"""

from __future__ import annotations

from collections.abc import Callable

from ..codes import Cancel, Delete, Rerun
from ..store import Store
from .schemas_jobs import BulkIn, BulkOut, Skipped

#: Pages of the listing read to find the set (a rare filter returns short pages).
MAX_PAGES = 400
PAGE = 500


def matching(store: Store, body: BulkIn) -> tuple[list[str], bool]:
    """The ids the filter lists now (at most `body.limit`), and whether the scan bound may
    have left some out."""
    f = body.filter
    scan = min(max(2000, 2 * body.limit), 20_000)
    ids: list[str] = []
    cursor: str | None = None
    truncated = False
    for _ in range(MAX_PAGES):
        page = store.list_jobs_page(
            state=f.state, queue=f.queue, task=f.task, worker=f.worker, q=f.q,
            cursor=cursor, limit=min(PAGE, body.limit - len(ids)), scan=scan,
        )  # fmt: skip
        ids += [j.id for j in page.jobs]
        truncated = truncated or page.truncated
        cursor = page.next_cursor
        if cursor is None or len(ids) >= body.limit:
            break
    else:
        truncated = True
    return list(dict.fromkeys(ids))[: body.limit], truncated or cursor is not None


def _retry(store: Store, job_id: str) -> str | None:
    code = store.rerun(job_id)
    if code == Rerun.QUEUED:
        return None
    return "not found" if code == Rerun.NOT_FOUND else "not failed; only failed jobs are retried"


def _cancel(store: Store, job_id: str) -> str | None:
    code = store.cancel(job_id)
    if code in (Cancel.CANCELLED, Cancel.REQUESTED):
        return None
    return "not found" if code == Cancel.NOT_FOUND else "already finished"


def _delete(store: Store, job_id: str) -> str | None:
    code = store.delete(job_id)
    if code == Delete.DELETED:
        return None
    if code == Delete.NOT_FOUND:
        return "not found"
    return "not finished (queued, scheduled or running); cancel it first"


ACTIONS: dict[str, Callable[[Store, str], str | None]] = {
    "retry": _retry,
    "cancel": _cancel,
    "delete": _delete,
}


def act(store: Store, body: BulkIn, ids: list[str], truncated: bool) -> BulkOut:
    """Apply the action to each job, one script call each; what could not be done is listed."""
    do = ACTIONS[body.action]
    skipped = []
    for job_id in ids:
        reason = do(store, job_id)
        if reason is not None:
            skipped.append(Skipped(id=job_id, reason=reason))
    return BulkOut(
        action=body.action,
        matched=len(ids),
        done=len(ids) - len(skipped),
        skipped=skipped,
        truncated=truncated,
    )
