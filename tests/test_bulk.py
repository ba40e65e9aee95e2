"""`POST /v1/jobs/bulk` over real HTTP against a real worker: the count confirmation (dry run,
409 on a stale count), retry / cancel / delete of a filtered set one script call per job, the
skipped jobs with their reasons; and delete.lua's refusals. On every layout."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import on_every_layout
from jobs_api_support import http, live, wait_state, walk, worker_app
from live_master import LiveWorker

from jobq import App
from jobq.codes import Delete

pytestmark = on_every_layout
__all__ = ["http", "live", "worker_app"]  # (fixtures)


def bulk(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/jobs/bulk", json=body)


def test_cancel_a_filtered_set_behind_a_count(http: httpx.Client, worker_app: App) -> None:
    mine = [worker_app.submit("add", (i, 0), delay=600, queue="bulk-q").id for i in range(5)]
    other = worker_app.submit("add", (9, 9), delay=600, queue="other-q").id
    flt = {"queue": "bulk-q"}
    r = bulk(http, action="cancel", filter=flt, dry_run=True)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "action": "cancel", "matched": 5, "done": 0, "skipped": [], "dry_run": True,
        "truncated": False,
    }  # fmt: skip
    worker_app.submit("add", (7, 7), delay=600, queue="bulk-q")  # the set moved since
    r = bulk(http, action="cancel", filter=flt, expect=5)
    assert r.status_code == 409 and r.json()["matched"] == 6 and "6" in r.json()["error"]
    assert all(j["state"] == "scheduled" for j in walk(http, queue="bulk-q"))  # untouched
    r = bulk(http, action="cancel", filter=flt, expect=6)
    assert r.status_code == 200, r.text
    assert (r.json()["matched"], r.json()["done"], r.json()["skipped"]) == (6, 6, [])
    assert {j["state"] for j in walk(http, queue="bulk-q")} == {"cancelled"}
    assert {j["id"] for j in walk(http, queue="bulk-q")} >= set(mine)
    assert http.get(f"/v1/jobs/{other}").json()["state"] == "scheduled"
    # Again: every one is finished now, so each is skipped with its reason.
    again = bulk(http, action="cancel", filter=flt).json()
    assert again["done"] == 0 and {s["reason"] for s in again["skipped"]} == {"already finished"}


def test_retry_failed_jobs_of_a_task(http: httpx.Client, worker_app: App) -> None:
    bad = [worker_app.submit("boom", kwargs={"msg": f"m{i}"}).id for i in range(3)]
    good = worker_app.submit("add", (1, 1)).id
    for j in bad:
        wait_state(http, j, "failed")
    wait_state(http, good, "succeeded")
    r = bulk(http, action="retry", filter={"state": "failed", "task": "boom"}, expect=3)
    assert r.status_code == 200, r.text
    assert r.json()["done"] == 3
    for j in bad:  # queued again, run again, failed again (attempts reset)
        wait_state(http, j, "failed")
    # Retry of a filter that takes in a succeeded job: skipped, named.
    r = bulk(http, action="retry", filter={"q": good}).json()
    assert r["matched"] == 1 and r["done"] == 0
    assert r["skipped"] == [{"id": good, "reason": "not failed; only failed jobs are retried"}]


def test_delete_finished_jobs_refusing_active_ones(http: httpx.Client, worker_app: App) -> None:
    done = [worker_app.submit("add", (i, 1), queue="del-q") for i in range(3)]
    failed = worker_app.submit("boom", queue="del-q")
    waiting = worker_app.submit("add", (0, 0), delay=600, queue="del-q").id
    w = LiveWorker(worker_app, ["del-q"]).start()
    try:
        for j in done:
            wait_state(http, j.id, "succeeded")
        wait_state(http, failed.id, "failed")
    finally:
        w.stop()
    r = bulk(http, action="delete", filter={"queue": "del-q"}, expect=5)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["done"] == 4
    assert out["skipped"] == [
        {"id": waiting, "reason": "not finished (queued, scheduled or running); cancel it first"}
    ]
    for j in [*done, failed]:
        assert http.get(f"/v1/jobs/{j.id}").status_code == 404
    assert [j["id"] for j in walk(http, queue="del-q")] == [waiting]
    assert walk(http, state="failed", queue="del-q") == []  # out of the dead-letter set
    assert walk(http, state="succeeded", queue="del-q") == []  # out of the finished index
    assert worker_app.store.delete(failed.id) == Delete.NOT_FOUND
    assert worker_app.store.delete(waiting) == Delete.WRONG_STATE


def test_bulk_input_is_checked(http: httpx.Client) -> None:
    assert bulk(http, action="explode").status_code == 422
    assert bulk(http, action="cancel", limit=10_001).status_code == 422
    assert bulk(http, action="cancel", filter={"state": "sleeping"}).status_code == 422
    assert bulk(http, action="cancel", filter={"colour": "red"}).status_code == 422
    r = bulk(http, action="delete", filter={"q": "nothing-matches-this"}, dry_run=True)
    assert r.status_code == 200 and r.json()["matched"] == 0


def test_delete_removes_a_corrupt_key_but_not_an_active_job(worker_app: App) -> None:
    store = worker_app.store
    shard = store.shard_of("junk-x")  # (its home partition: where a lookup tries first)
    shard.r.set(shard.keys.job("junk-x"), "not a hash")
    shard.r.hset(shard.keys.job("odd-x"), mapping={"state": "weird", "task": "t"})
    shard.r.zadd(shard.keys.finished, {"odd-x": 1})
    assert store.delete("junk-x") == Delete.DELETED
    assert store.delete("odd-x") == Delete.DELETED
    assert not shard.r.exists(shard.keys.job("junk-x"), shard.keys.job("odd-x"))
    assert shard.r.zscore(shard.keys.finished, "odd-x") is None
    queued = worker_app.submit("add", (1, 1))  # (no worker in this test: it stays queued)
    assert store.delete(queued.id) == Delete.WRONG_STATE
    assert store.get_state(queued.id) == "queued"
    assert store.delete("never-submitted") == Delete.NOT_FOUND
