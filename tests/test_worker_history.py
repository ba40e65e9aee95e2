"""A worker's history over real HTTP: its registry entry's `started`, `succeeded`, `failed`
(counted by the worker where it counts `processed`), the WorkerOut fields derived from them
(uptime, concurrency, busy, free) on `/v1/workers` and `/v1/workers/{name}` with its recent
jobs newest first, and 404 for a worker never seen. A real worker and master, real Valkey."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from live_master import LiveMaster, LiveWorker

from jobq import App

pytestmark = pytest.mark.timeout(90)
NAME = "hist-worker"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def worker_app(url: str, prefix: str) -> Iterator[App]:
    a = App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50)
    yield a
    a.close()


@pytest.fixture
def http(app: App, worker_app: App) -> Iterator[httpx.Client]:
    worker = LiveWorker(worker_app, concurrency=3, name=NAME).start()
    master = LiveMaster(app, rate_interval_s=0.2).start()
    try:
        with httpx.Client(base_url=master.url, timeout=30) as c:
            yield c
    finally:
        master.stop()
        worker.stop()


def test_worker_history_and_page(http: httpx.Client, worker_app: App) -> None:
    t0 = time.time()
    ok = [worker_app.submit("add", (i, 1)).id for i in range(4)]
    bad = worker_app.submit("boom", ("no",)).id
    napper = http.post("/v1/jobs", json={"task": "nap", "args": [3]}).json()["id"]

    def mine() -> dict[str, Any] | None:
        r = http.get(f"/v1/workers/{NAME}")
        if r.status_code != 200:
            return None
        w: dict[str, Any] = r.json()
        done = w["succeeded"] == 4 and w["failed"] == 1 and napper in w["jobs"]
        return w if done else None

    w = wait_for(mine, what="the worker's entry to count its attempts")
    assert w["alive"] and w["state"] == "alive" and w["concurrency"] == 3
    assert w["busy"] == 1 and w["free"] == 2
    assert w["started"] and 0 <= w["uptime_s"] < time.time() - t0 + 60
    assert w["info"]["succeeded"] == "4" and w["info"]["failed"] == "1"
    recent = [j["id"] for j in w["recent"]]
    assert recent[0] == napper  # running first, then newest finished first
    assert set(recent) == {napper, bad, *ok}
    finished = [j for j in w["recent"] if j["finished"]]
    assert [j["finished"] for j in finished] == sorted(
        (j["finished"] for j in finished), reverse=True
    )
    assert all(j["worker"] == NAME for j in w["recent"])

    (listed,) = [x for x in http.get("/v1/workers").json()["workers"] if x["name"] == NAME]
    assert listed["succeeded"] == 4 and listed["concurrency"] == 3 and "recent" not in listed


def test_unknown_worker_is_404(http: httpx.Client) -> None:
    r = http.get("/v1/workers/nobody-here")
    assert r.status_code == 404 and "error" in r.json()


def test_entry_without_history_fields_reads_null(http: httpx.Client, app: App) -> None:
    # An older worker (or a damaged entry): no started/succeeded/failed, garbage concurrency.
    store = app.store
    sec, _ = store.control.r.time()
    store.control.r.hset(store.keys.worker("old-one"), mapping={"concurrency": "x", "pid": "1"})
    store.control.r.zadd(store.keys.workers, {"old-one": int(sec) * 1000})
    w = http.get("/v1/workers/old-one").json()
    assert w["name"] == "old-one" and w["started"] is None and w["uptime_s"] is None
    assert w["succeeded"] is None and w["concurrency"] is None and w["free"] is None
    assert w["recent"] == []
