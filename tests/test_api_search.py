"""`GET /v1/jobs` search over real HTTP: `q` (id, task, queue, worker, argument text), `worker`,
newest first without a state, `scanned`/`truncated`, on every layout (jobs spread over
partitions in 'three')."""

from __future__ import annotations

import time

import httpx
from conftest import on_every_layout
from jobs_api_support import WORKER, http, live, wait_state, walk, worker_app

from jobq import App

pytestmark = on_every_layout
__all__ = ["http", "live", "worker_app"]  # (fixtures)


def test_any_lists_newest_first_and_pages(http: httpx.Client, worker_app: App) -> None:
    ids = []
    for i in range(6):
        ids.append(worker_app.submit("add", (i, 0), delay=600).id)
        time.sleep(0.005)  # (distinct creation times)
    rows = walk(http, limit=4)
    got = [r["id"] for r in rows]
    assert got == list(reversed(ids)), got
    assert [r["created"] for r in rows] == sorted((r["created"] for r in rows), reverse=True)
    page = http.get("/v1/jobs", params={"limit": 2}).json()
    assert page["scanned"] >= 6 and page["truncated"] is False
    # A state listing keeps its index order (scheduled: by due time).
    assert {r["id"] for r in walk(http, state="scheduled")} == set(ids)


def test_q_matches_id_task_queue_and_argument_text(http: httpx.Client, worker_app: App) -> None:
    a = worker_app.submit("add", ("needle-in-args", "x"), delay=600).id
    b = worker_app.submit("nap", (0,), delay=600, queue="Haystack-Q").id
    c = worker_app.submit("add", (1, 2), delay=600, job_id="find-ME-by-id").id
    worker_app.submit("add", (3, 4), delay=600)

    def search(q: str, **more: str) -> set[str]:
        return {r["id"] for r in walk(http, q=q, **more)}

    assert search("NEEDLE") == {a}  # case-insensitive, in the arguments text
    assert search("haystack-q") == {b}  # the queue
    assert search("find-me") == {c}  # the id
    assert search("nap") == {b}  # the task
    assert search("needle", state="scheduled") == {a}  # with a state: the index walk
    assert search("needle", state="queued") == set()
    assert search("no-such-text-anywhere") == set()


def test_worker_filter_and_search(http: httpx.Client, worker_app: App) -> None:
    ran = [worker_app.submit("add", (i, i)) for i in range(3)]
    waiting = worker_app.submit("add", (9, 9), delay=600).id
    for j in ran:
        wait_state(http, j.id, "succeeded")
    by_worker = {r["id"] for r in walk(http, worker=WORKER)}
    assert by_worker == {j.id for j in ran}
    assert {r["id"] for r in walk(http, worker=WORKER, state="succeeded")} == by_worker
    assert {r["id"] for r in walk(http, q=WORKER.upper())} == by_worker
    assert waiting not in {r["id"] for r in walk(http, worker="someone-else")}


def test_bad_cursor_and_long_query_are_refused(http: httpx.Client) -> None:
    assert http.get("/v1/jobs", params={"cursor": "garbage!"}).status_code == 400
    assert http.get("/v1/jobs", params={"q": "x" * 201}).status_code == 422
    # A cursor of a state listing is not one of the newest-first listing.
    http.get("/v1/jobs", params={"state": "queued"})
    assert http.get("/v1/jobs", params={"cursor": "WzAsbnVsbF0"}).status_code == 400


def test_the_scan_bound_is_reported(http: httpx.Client, worker_app: App) -> None:
    ids = {worker_app.submit("add", (i, 0), delay=600).id for i in range(6)}
    page = worker_app.store.list_jobs_page(scan=1, limit=50)
    assert page.truncated and page.scanned < 6 and {j.id for j in page.jobs} < ids
    full = worker_app.store.list_jobs_page(limit=50)
    assert not full.truncated and {j.id for j in full.jobs} == ids
