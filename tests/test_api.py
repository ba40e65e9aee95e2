"""The master's HTTP API over real HTTP (uvicorn on a free port) against the test Valkey and a
real in-process worker: every route, the compatible pair byte for byte, auth and bad input."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from conftest import free_port, jobq_cmd, subprocess_env
from live_master import LiveMaster, LiveWorker

from jobq import App

TOKEN = "s3cret-token"
JSON = {"Content-Type": "application/json"}


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
    worker = LiveWorker(worker_app).start()
    master = LiveMaster(app, rate_interval_s=0.2).start()
    yield master
    master.stop()
    worker.stop()


@pytest.fixture
def http(live: LiveMaster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


def job_state(http: httpx.Client, job_id: str) -> str:
    r = http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    state: str = r.json()["state"]
    return state


def wait_state(http: httpx.Client, job_id: str, state: str, timeout: float = 30.0) -> None:
    wait_for(lambda: job_state(http, job_id) == state, timeout, f"job {job_id} to be {state}")


# -- the compatible pair -------------------------------------------------------------------


def test_schedule_and_status_byte_for_byte(http: httpx.Client) -> None:
    r = http.post("/schedule", json={"task_id": "123", "task_type": "add", "x": 2, "y": 3})
    assert r.status_code == 200
    assert r.content == b'{"task_id": "123", "status": "scheduled"}'
    assert r.headers["content-type"] == "application/json"

    def done() -> bool:
        return b'"completed"' in http.get("/status/123").content

    wait_for(done, what="task 123 to complete")
    r = http.get("/status/123")
    assert r.status_code == 200
    assert r.content == b'{"task_id": "123", "status": "completed", "result": 5}'


@pytest.mark.parametrize(
    "body",
    [{"task_type": "add"}, {"task_id": "1"}, {}, {"task_id": "", "task_type": "add"}],
)
def test_schedule_missing_fields(http: httpx.Client, body: dict[str, Any]) -> None:
    r = http.post("/schedule", json=body)
    assert r.status_code == 400
    assert r.content == b'{"error": "Missing task_id or task_type"}'


def test_schedule_rejects_non_object_and_bad_types(http: httpx.Client) -> None:
    r = http.post("/schedule", content=b"[1, 2]", headers=JSON)
    assert r.status_code == 400 and r.json() == {"error": "Request body must be a JSON object"}
    r = http.post("/schedule", content=b"{not json", headers=JSON)
    assert r.status_code == 400
    r = http.post("/schedule", json={"task_id": ["x"], "task_type": "add"})
    assert r.status_code == 400 and "task_id" in r.json()["error"]


def test_status_not_found(http: httpx.Client) -> None:
    r = http.get("/status/no-such-task")
    assert r.status_code == 404
    assert r.content == b'{"error": "Task not found"}'


def test_status_pending_running_failed(http: httpx.Client, worker_app: App) -> None:
    worker_app.submit("add", (1, 1), job_id="later", delay=3600)
    assert http.get("/status/later").content == (
        b'{"task_id": "later", "status": "pending", "result": null}'
    )
    http.post("/schedule", json={"task_id": "slow", "task_type": "nap", "seconds": 1.5})
    wait_for(lambda: b'"running"' in http.get("/status/slow").content, what="slow to run")
    assert http.get("/status/slow").content == (
        b'{"task_id": "slow", "status": "running", "result": null}'
    )
    http.post("/schedule", json={"task_id": "bad", "task_type": "boom", "msg": "kaput"})
    wait_for(lambda: b'"failed"' in http.get("/status/bad").content, what="bad to fail")
    assert http.get("/status/bad").content == (
        b'{"task_id": "bad", "status": "failed", "result": {"error": "ValueError: kaput"}}'
    )


def test_schedule_same_task_id_twice_makes_one_job(http: httpx.Client, app: App) -> None:
    for _ in range(2):
        r = http.post("/schedule", json={"task_id": "dup", "task_type": "add", "x": 1, "y": 1})
        assert r.status_code == 200
    wait_for(lambda: b'"completed"' in http.get("/status/dup").content)
    assert app.store.queues()[0].succeeded == 1


# -- /v1 jobs ------------------------------------------------------------------------------


def test_submit_with_every_option(http: httpx.Client, rclient: redis.Redis, app: App) -> None:
    body = {
        "task": "add",
        "args": [1],
        "kwargs": {"y": 2},
        "queue": "elsewhere",
        "priority": 7,
        "delay": 600,
        "retries": 4,
        "backoff": 2.5,
        "timeout": 9.5,
        "job_id": "opt-1",
        "result_ttl": 120,
    }
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json() == {"id": "opt-1"}
    assert r.headers["location"] == "/v1/jobs/opt-1"
    job = http.get("/v1/jobs/opt-1").json()
    assert job["state"] == "scheduled"
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("elsewhere", 7, 5)
    assert job["timeout"] == 9.5
    assert job["args"] == [1] and job["kwargs"] == {"y": 2}
    eta = dt.datetime.fromisoformat(job["eta"])
    assert 590 < (eta - dt.datetime.now(dt.UTC)).total_seconds() <= 601
    raw = rclient.hgetall(app.keys.job("opt-1"))
    assert raw[b"backoff"] == b"2500" and raw[b"ttl"] == b"120"
    # Idempotent: the same job_id again is the same job.
    assert http.post("/v1/jobs", json=body).json() == {"id": "opt-1"}


def test_submit_runs_and_reports_result(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"task": "add", "args": [20, 22]}).json()["id"]
    wait_state(http, job_id, "succeeded")
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["result"] == 42 and job["attempt"] == 1 and job["worker"]
    assert job["started"] and job["finished"] and job["error"] is None


def test_submit_with_eta(http: httpx.Client) -> None:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    job_id = http.post("/v1/jobs", json={"task": "add", "eta": when}).json()["id"]
    assert job_state(http, job_id) == "scheduled"
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)).isoformat()
    r = http.post("/v1/jobs", json={"task": "add", "args": [1, 2], "eta": soon})
    wait_state(http, r.json()["id"], "succeeded")


def test_failed_job_carries_error_and_retry_reruns_it(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"task": "boom", "kwargs": {"msg": "bad"}}).json()["id"]
    wait_state(http, job_id, "failed")
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["type"] == "ValueError" and job["error"]["message"] == "bad"
    assert "Traceback" in job["error"]["traceback"]
    failed = http.get("/v1/jobs", params={"state": "failed"}).json()["jobs"]
    assert [j["id"] for j in failed] == [job_id]
    r = http.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 200 and r.json() == {"id": job_id, "outcome": "queued"}
    wait_state(http, job_id, "failed")  # it fails again: same id, attempts reset
    # Bulk re-run of the dead-letter set.
    r = http.post("/v1/dead/rerun", json={"limit": 10})
    assert r.status_code == 200 and r.json() == {"rerun": [job_id]}


def test_retry_refusals(http: httpx.Client) -> None:
    assert http.post("/v1/jobs/nope/retry").status_code == 404
    job_id = http.post("/v1/jobs", json={"task": "add", "delay": 600}).json()["id"]
    r = http.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 409 and "not failed" in r.json()["error"]


def test_cancel(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"task": "add", "delay": 600}).json()["id"]
    r = http.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json() == {"id": job_id, "outcome": "cancelled"}
    assert job_state(http, job_id) == "cancelled"
    r = http.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "already finished" in r.json()["error"]
    assert http.post("/v1/jobs/nope/cancel").status_code == 404
    running = http.post("/v1/jobs", json={"task": "nap", "args": [1.5]}).json()["id"]
    wait_state(http, running, "running")
    r = http.post(f"/v1/jobs/{running}/cancel")
    assert r.json() == {"id": running, "outcome": "cancel_requested"}
    assert http.get(f"/v1/jobs/{running}").json()["cancel_requested"] is True


def test_get_unknown_job(http: httpx.Client) -> None:
    r = http.get("/v1/jobs/does-not-exist")
    assert r.status_code == 404 and "does-not-exist" in r.json()["error"]


def test_batch_submit(http: httpx.Client) -> None:
    calls = [{"args": [i, i]} for i in range(20)]
    r = http.post("/v1/jobs/batch", json={"task": "add", "calls": calls, "priority": 3})
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert len(set(ids)) == 20
    for i, job_id in enumerate(ids):
        wait_state(http, job_id, "succeeded")
        assert http.get(f"/v1/jobs/{job_id}").json()["result"] == 2 * i


def test_list_pages_and_filters(http: httpx.Client, worker_app: App) -> None:
    a = worker_app.submit_many("add", [((i, 0), {}) for i in range(23)], delay=600)
    b = worker_app.submit_many("nap", [((0,), {}) for _ in range(6)], delay=600)
    parked = worker_app.submit_many("add", [((i, 1), {}) for i in range(5)], queue="parked")

    def walk(**params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        for _ in range(50):
            q = {**params, **({"cursor": cursor} if cursor else {})}
            r = http.get("/v1/jobs", params=q)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["jobs"]) <= params.get("limit", 50)
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen
        raise AssertionError("pagination did not end")

    sched = walk(state="scheduled", limit=7)
    assert sorted(sched) == sorted(j.id for j in a + b) and len(set(sched)) == len(sched)
    assert sorted(walk(state="scheduled", task="nap", limit=4)) == sorted(j.id for j in b)
    queued = walk(state="queued", queue="parked", limit=2)
    assert queued == [j.id for j in parked]  # FIFO within a priority
    everything = walk(limit=5)
    assert set(everything) >= {j.id for j in a + b + parked}
    assert walk(queue="parked", limit=3) == [j.id for j in parked]
    assert walk(task="no-such-task") == []


def test_list_skips_expired_index_entries(
    http: httpx.Client, app: App, rclient: redis.Redis
) -> None:
    job_id = http.post("/v1/jobs", json={"task": "add", "args": [1, 1]}).json()["id"]
    wait_state(http, job_id, "succeeded")
    rclient.delete(app.keys.job(job_id))  # as if its result TTL had run out
    assert http.get("/v1/jobs", params={"state": "succeeded"}).json()["jobs"] == []


def test_queues_workers_throughput(http: httpx.Client, worker_app: App) -> None:
    worker_app.submit("add", (1, 2), delay=600)
    worker_app.submit("add", (1, 2), queue="idle")
    ids = [j.id for j in worker_app.submit_many("add", [((i, i), {}) for i in range(10)])]
    for job_id in ids:
        wait_state(http, job_id, "succeeded")
    napper = http.post("/v1/jobs", json={"task": "nap", "args": [2]}).json()["id"]
    wait_state(http, napper, "running")
    qs = {q["name"]: q for q in http.get("/v1/queues").json()["queues"]}
    assert qs["default"]["scheduled"] == 1 and qs["default"]["running"] == 1
    assert qs["default"]["succeeded"] == 10 and qs["idle"]["queued"] == 1

    def worker_with_job() -> Any:
        ws = http.get("/v1/workers").json()["workers"]
        return [w for w in ws if napper in w["jobs"]]

    (w,) = wait_for(worker_with_job, what="the worker to show its running job")
    assert w["alive"] and "default" in w["info"]["queues"].split(",") and w["last_seen"]

    def has_rate() -> bool:
        pts = http.get("/v1/throughput").json()["points"]
        return any(p["succeeded_per_s"] > 0 for p in pts)

    # Samples every 0.2 s; the 10 jobs above finished within the sampled window.
    wait_for(has_rate, 10, "a throughput sample with finished jobs")


def test_metrics(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"task": "add", "args": [1, 1]}).json()["id"]
    wait_state(http, job_id, "succeeded")
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'jobq_jobs_finished_total{queue="default",outcome="succeeded"} 1' in text
    assert 'jobq_jobs{queue="default",state="queued"} 0' in text
    assert "# TYPE jobq_jobs gauge" in text and "jobq_dead_letter_jobs 0" in text


def test_healthz(http: httpx.Client) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["broker"] == "ok"


# -- events ----------------------------------------------------------------------------------


def read_events(
    http: httpx.Client,
    headers: dict[str, str],
    until: Callable[[dict[str, Any]], bool],
    params: dict[str, str] | None = None,
    on_open: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """The stream's events up to the first one `until` accepts. `on_open` runs once the server
    says `: connected`: its subscription is taken by then and its cursor was fixed before, so
    whatever `on_open` causes reaches this stream (no sleep, no race with the connect)."""
    got: list[dict[str, Any]] = []
    with http.stream("GET", "/v1/events", headers=headers, params=params or {}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in r.iter_lines():
            if line == ": connected" and on_open is not None:
                on_open()
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["id"] == event_id
                got.append(data)
                if until(data):
                    return got
    raise AssertionError("event stream ended")


def test_events_stream_and_resume(http: httpx.Client, live: LiveMaster) -> None:
    first = http.post("/v1/jobs", json={"task": "add", "args": [1, 1]}).json()["id"]
    wait_state(http, first, "succeeded")
    # From the start of the stream: the whole life of `first`.
    evs = read_events(http, {}, lambda e: e["job"] == first and e["state"] == "succeeded",
                      {"since": "0-0"})  # fmt: skip
    states = [e["state"] for e in evs if e["job"] == first]
    assert states == ["queued", "running", "succeeded"]
    # Live: a job submitted once the stream is open shows up (submitted when the server says
    # the stream is connected, not after a sleep the connect could outlast).
    second: list[str] = []

    def submit_second() -> None:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            second.append(c.post("/v1/jobs", json={"task": "add", "args": [2, 2]}).json()["id"])

    evs = read_events(http, {}, lambda e: bool(second) and e["job"] == second[0]
                      and e["state"] == "succeeded", on_open=submit_second)  # fmt: skip
    assert second and [e["state"] for e in evs if e["job"] == second[0]] == [
        "queued", "running", "succeeded"
    ]  # fmt: skip
    # Resume after the first event seen: the rest follows, nothing before it.
    resume_from = evs[0]["id"]
    again = read_events(http, {"Last-Event-ID": resume_from}, lambda e: e["id"] == evs[-1]["id"])
    assert [e["id"] for e in again] == [e["id"] for e in evs[1:]]
    # Filter by job.
    only = read_events(http, {}, lambda e: e["state"] == "succeeded",
                       {"since": "0-0", "job": first})  # fmt: skip
    assert {e["job"] for e in only} == {first}


def test_events_bad_last_event_id(http: httpx.Client) -> None:
    r = http.get("/v1/events", headers={"Last-Event-ID": "yesterday"})
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]
    r = http.get("/v1/events", params={"since": "x"})
    assert r.status_code == 400 and "since" in r.json()["error"]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "add", "priority": 5000}, "priority"),
        ({"task": "add", "args": {"a": 1}}, "args"),
        ({"task": "add", "kwargs": [1]}, "kwargs"),
        ({"task": ""}, "task"),
        ({"args": []}, "task"),
        ({"task": "add", "delay": -1}, "delay"),
        ({"task": "add", "retries": -1}, "retries"),
        ({"task": "add", "timeout": 0}, "timeout"),
        ({"task": "add", "eta": "not a date"}, "eta"),
        ({"task": "add", "queue": "has space"}, "queue"),
        ({"task": "add", "job_id": "a/b"}, "job_id"),
        ({"task": "add", "colour": "red"}, "colour"),
        ({"task": "add", "depends_on": ["x"]}, "depends_on"),
        ({"task": "add", "unique_key": ""}, "unique_key"),
        ({"task": "add", "worker": "node 3"}, "worker"),
    ],
)
def test_invalid_submit_names_the_field(http: httpx.Client, body: Any, field: str) -> None:
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]


def test_more_bad_input(http: httpx.Client) -> None:
    r = http.post("/v1/jobs", json={"task": "add", "delay": 1, "eta": "2030-01-01T00:00:00"})
    assert r.status_code == 422 and "delay or eta" in r.json()["error"]
    r = http.post("/v1/jobs", content=b"{oops", headers=JSON)
    assert r.status_code == 422
    r = http.post("/v1/jobs", json={"task": "add", "args": [2**70]})
    assert r.status_code == 422 and "argument 0" in r.json()["error"]
    r = http.post("/v1/jobs/batch", json={"task": "add", "calls": []})
    assert r.status_code == 422 and "calls" in r.json()["error"]
    r = http.get("/v1/jobs", params={"limit": 0})
    assert r.status_code == 422 and "limit" in r.json()["error"]
    r = http.get("/v1/jobs", params={"state": "sleeping"})
    assert r.status_code == 422 and "state" in r.json()["error"]
    r = http.get("/v1/jobs", params={"cursor": "garbage!"})
    assert r.status_code == 400 and "cursor" in r.json()["error"]
    assert http.get("/v1/nothing-here").status_code == 404
    assert http.delete("/v1/jobs").status_code == 405


def test_body_size_limit(http: httpx.Client) -> None:
    big = {"task": "add", "args": ["x" * (1 << 20)]}
    r = http.post("/v1/jobs", json=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"task": "add", "args": ["'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"]}'

    r = http.post("/v1/jobs", content=chunks(), headers=JSON)
    assert r.status_code == 413


def test_body_must_be_declared_json(http: httpx.Client) -> None:
    # A browser's "simple" cross-site POST (form or text/plain) must not pass for JSON.
    body = b'{"task": "add", "args": [1, 2]}'
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        r = http.post("/v1/jobs", content=body, headers={"content-type": ctype})
        assert r.status_code == 415 and "application/json" in r.json()["error"], ctype
    assert http.post("/v1/jobs", content=body).status_code == 415  # a body, no type
    r = http.post(
        "/v1/jobs", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 201, r.text


# -- auth ------------------------------------------------------------------------------------


@pytest.fixture
def secured(app: App) -> Iterator[LiveMaster]:
    master = LiveMaster(app, TOKEN).start()
    yield master
    master.stop()


def test_auth_on_every_route(secured: LiveMaster) -> None:
    with httpx.Client(base_url=secured.url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/").status_code == 200  # the data-free page; its API calls need the token
        spec = c.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert c.get("/openapi.json").status_code == 401
        for path, ops in spec["paths"].items():
            url = re.sub(r"\{[a-z_]+\}", "x", path)
            for method in ops:
                if path == "/healthz":
                    continue
                r = c.request(method, url)
                assert r.status_code == 401, (method, path)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert "Authorization: Bearer" in r.json()["error"]
                r = c.request(method, url, headers={"Authorization": "Bearer wrong"})
                assert r.status_code == 403, (method, path)
                r = c.request(method, url, headers={"Authorization": "Basic abc"})
                assert r.status_code == 401, (method, path)
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/v1/queues", headers=ok).status_code == 200
        assert c.get("/status/x", headers=ok).status_code == 404
        r = c.post("/schedule", headers=ok, json={"task_id": "t1", "task_type": "add"})
        assert r.status_code == 200


# -- OpenAPI and the dashboard's assets --------------------------------------------------------


def test_openapi_lists_every_route(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    from fastapi.routing import APIRoute

    from jobq.master import api, compat, events, ops, schedules, stats_api

    served = {
        (r.path, m)
        for module in (api, compat, events, ops, schedules, stats_api)
        for r in module.router.routes
        if isinstance(r, APIRoute) and r.include_in_schema
        for m in r.methods or ()
    }
    assert served == documented
    assert {
        "/schedule",
        "/status/{task_id}",
        "/v1/events",
        "/metrics",
        "/healthz",
        "/v1/periodic",
        "/v1/periodic/{name}",
        "/v1/queues/{queue}/purge",
    } <= {p for p, _ in documented}


def test_dashboard_assets_are_local(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        r = http.get(asset)
        assert r.status_code == 200 and r.content
        assert b"https://" not in r.content and b"http://" not in r.content
    assert b"https://" not in page.content and b"http://" not in page.content
    assert http.get("/static/../../etc/passwd").status_code == 404
    assert http.get("/static/nope.js").status_code == 404


# -- the CLI ---------------------------------------------------------------------------------


def test_jobq_master_serves_http_with_token(url: str, prefix: str) -> None:
    port = free_port()
    env = subprocess_env(url, prefix, JOBQ_TOKEN=TOKEN)
    proc = subprocess.Popen(
        jobq_cmd("master", "--http", f"127.0.0.1:{port}"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(base + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "jobq master to serve HTTP")
        health = httpx.get(base + "/healthz").json()
        wait_for(lambda: httpx.get(base + "/healthz").json()["this_master_leads"], 15)
        assert health["broker"] == "ok"
        assert httpx.get(base + "/v1/queues").status_code == 401
        ok = httpx.get(base + "/v1/queues", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()


def test_jobq_master_explicit_port_in_use_fails_clearly(url: str, prefix: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            jobq_cmd("master", "--http", f"127.0.0.1:{port}"),
            env=subprocess_env(url, prefix),
            capture_output=True,
            timeout=60,
        )
    assert r.returncode != 0
    assert b"cannot serve HTTP" in r.stderr and b"--no-http" in r.stderr
