"""Shared by the search, bulk and graph API tests: a live master and a named worker over real
HTTP on the test Valkey (on every layout the module runs on), and small waiting helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from live_master import LiveMaster, LiveWorker

from jobq import App

WORKER = "w-api"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def worker_app(url: str, prefix: str) -> Iterator[App]:
    a = App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50)
    yield a
    a.close()


@pytest.fixture
def live(app: App, worker_app: App) -> Iterator[LiveMaster]:
    worker = LiveWorker(worker_app, name=WORKER).start()
    master = LiveMaster(app, rate_interval_s=0.2).start()
    yield master
    master.stop()
    worker.stop()


@pytest.fixture
def http(live: LiveMaster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


def state_of(http: httpx.Client, job_id: str) -> str | None:
    r = http.get(f"/v1/jobs/{job_id}")
    return r.json()["state"] if r.status_code == 200 else None


def wait_state(http: httpx.Client, job_id: str, state: str, timeout: float = 30.0) -> None:
    wait_for(lambda: state_of(http, job_id) == state, timeout, f"job {job_id} to be {state}")


def walk(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every row of a listing, page after page (bounded)."""
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        r = http.get("/v1/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        rows += page["jobs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination did not end")
