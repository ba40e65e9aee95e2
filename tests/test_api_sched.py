"""The scheduling side of the HTTP API over real HTTP, with real workers: dependencies (a diamond
whose fan-in gets both results), unique keys, targeted jobs, concurrency keys, progress,
periodic jobs and queue purges, and the 4xx answers naming the field."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from conftest import ValkeyProcess
from live_master import LiveMaster, LiveWorker
from test_api import job_state, wait_for, wait_state

from jobq import App


@pytest.fixture
def live(url: str, prefix: str, app: App) -> Iterator[LiveMaster]:
    """A master and two named workers: `w-a` (group `gpu`) and `w-b`, both serving default."""
    apps = [App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50) for _ in range(2)]
    workers = [
        LiveWorker(apps[0], name="w-a", group="gpu").start(),
        LiveWorker(apps[1], name="w-b").start(),
    ]
    master = LiveMaster(app).start()
    yield master
    master.stop()
    for w in workers:
        w.stop()
    for a in apps:
        a.close()


@pytest.fixture
def http(live: LiveMaster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def bare(valkey: ValkeyProcess) -> Iterator[httpx.Client]:
    """One master without workers for the module, for requests refused before anything is
    written (so its prefix stays empty)."""
    app = App(valkey.url, prefix="t" + uuid.uuid4().hex[:10])
    master = LiveMaster(app).start()
    with httpx.Client(base_url=master.url, timeout=30) as c:
        yield c
    master.stop()
    app.close()


def submit(http: httpx.Client, **body: Any) -> str:
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


def detail(http: httpx.Client, job_id: str) -> dict[str, Any]:
    r = http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


# -- dependencies --------------------------------------------------------------------------


def test_diamond_fan_in_gets_both_results(http: httpx.Client) -> None:
    # a -> (b, c) -> d: b doubles a's result, c adds 10 to it, d sums both.
    a = submit(http, task="add", args=[1, 2])
    b = submit(http, task="double", depends_on=[a], pass_results="one")
    c = submit(http, task="add", args=[10], depends_on=[a], pass_results=True)  # = "one"
    d = submit(http, task="total", depends_on=[b, c], pass_results="list")
    wait_state(http, d, "succeeded")
    assert detail(http, b)["result"] == 6 and detail(http, c)["result"] == 13
    job = detail(http, d)
    assert job["result"] == 19
    assert job["parents"] == [b, c]
    assert job["dependencies"] == [{"id": b, "state": "succeeded"}, {"id": c, "state": "succeeded"}]


def test_child_waits_then_fails_with_its_parent(http: httpx.Client) -> None:
    parent = submit(http, task="add", args=[1, 1], delay=600)
    child = submit(http, task="add", args=[2, 2], depends_on=[parent])
    grandchild = submit(http, task="add", args=[3, 3], depends_on=[child])
    job = detail(http, child)
    assert job["state"] == "scheduled"
    assert job["dependencies"] == [{"id": parent, "state": "scheduled"}]
    assert http.post(f"/v1/jobs/{parent}/cancel").json()["outcome"] == "cancelled"
    for j in (child, grandchild):
        wait_state(http, j, "failed")
        err = detail(http, j)["error"]
        assert err["type"] == "DependencyFailed"
    assert parent in detail(http, child)["error"]["message"]
    # A job depending on an already-succeeded parent runs at once; the batch route takes
    # depends_on for every call.
    done = submit(http, task="add", args=[5, 5])
    wait_state(http, done, "succeeded")
    calls = [{"args": [i]} for i in range(3)]
    r = http.post(
        "/v1/jobs/batch",
        json={"task": "add", "calls": calls, "depends_on": [done], "pass_results": "one"},
    )
    assert r.status_code == 201, r.text
    for i, job_id in enumerate(r.json()["ids"]):
        wait_state(http, job_id, "succeeded")
        assert detail(http, job_id)["result"] == 10 + i


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"depends_on": ["no-such-parent"]}, ["depends_on", "no-such-parent"]),
        ({"job_id": "me", "depends_on": ["me"]}, ["depends_on", "itself"]),
        ({"depends_on": ["a", "a"]}, ["depends_on", "twice"]),
        ({"depends_on": ["a,b"]}, ["depends_on"]),
        ({"depends_on": "a"}, ["depends_on"]),
        ({"pass_results": "list"}, ["pass_results", "depends_on"]),
        ({"pass_results": "all", "depends_on": ["x"]}, ["pass_results"]),
        ({"pass_results": "yes", "depends_on": ["x"]}, ["pass_results"]),
        ({"pass_results": "one", "depends_on": ["x", "y"]}, ["pass_results", "one"]),
        ({"unique_key": ""}, ["unique_key"]),
        ({"worker": "w-a", "worker_group": "gpu"}, ["worker", "worker_group"]),
        ({"worker": "has space"}, ["worker"]),
        ({"worker_group": ""}, ["worker_group"]),
        ({"fallback": True}, ["fallback", "worker"]),
        ({"worker": "w-a", "fallback": "bad queue"}, ["fallback"]),
        ({"concurrency_limit": 2}, ["concurrency_limit", "concurrency_key"]),
        ({"concurrency_key": "k", "concurrency_limit": 0}, ["concurrency_limit"]),
    ],
)
def test_invalid_scheduling_options_name_the_field(
    bare: httpx.Client, body: dict[str, Any], words: list[str]
) -> None:
    r = bare.post("/v1/jobs", json={"task": "add", **body})
    assert r.status_code == 422, r.text
    assert all(w in r.json()["error"] for w in words), r.json()


def test_batch_with_unknown_parent_writes_nothing(bare: httpx.Client) -> None:
    calls = [{"args": [1, 1]}, {"args": [2, 2]}]
    r = bare.post("/v1/jobs/batch", json={"task": "add", "calls": calls, "depends_on": ["gone"]})
    assert r.status_code == 422 and "gone" in r.json()["error"]
    assert bare.get("/v1/jobs").json()["jobs"] == []


# -- unique keys ---------------------------------------------------------------------------


def test_unique_key_returns_the_pending_job(http: httpx.Client) -> None:
    first = submit(http, task="add", args=[1, 1], delay=600, unique_key="report:42")
    r = http.post("/v1/jobs", json={"task": "add", "args": [9, 9], "unique_key": "report:42"})
    assert r.status_code == 201 and r.json() == {"id": first}
    assert r.headers["location"] == f"/v1/jobs/{first}"
    assert submit(http, task="add", job_id="other", unique_key="report:42") == first
    assert detail(http, first)["unique_key"] == "report:42"
    assert http.get("/v1/jobs/other").status_code == 404  # no second job was made
    # A batch sharing the key stands for the same pending job.
    calls = [{"args": [i, i]} for i in range(3)]
    r = http.post("/v1/jobs/batch", json={"task": "add", "calls": calls, "unique_key": "report:42"})
    assert r.json() == {"ids": [first] * 3}
    # Once the holder is no longer pending, the key makes a new job.
    http.post(f"/v1/jobs/{first}/cancel")
    again = submit(http, task="add", args=[2, 3], unique_key="report:42")
    assert again != first
    wait_state(http, again, "succeeded")


# -- targeted dispatch, concurrency keys, progress -------------------------------------------


def test_targeted_jobs_run_on_the_named_worker(
    http: httpx.Client, rclient: redis.Redis, app: App
) -> None:
    to_b = [submit(http, task="nap", args=[0.05], worker="w-b") for _ in range(6)]
    to_gpu = [submit(http, task="nap", args=[0.05], worker_group="gpu") for _ in range(6)]
    for job_id in to_b + to_gpu:
        wait_state(http, job_id, "succeeded")
    assert {detail(http, j)["worker"] for j in to_b} == {"w-b"}
    assert {detail(http, j)["worker"] for j in to_gpu} == {"w-a"}
    # A job for a worker nobody runs waits on that worker's own queue, with its fallback kept.
    ghost = submit(http, task="add", args=[1, 1], worker="ghost", fallback="default")
    job = detail(http, ghost)
    assert job["state"] == "queued" and job["queue"] == "@worker:ghost"
    assert rclient.hget(app.keys.job(ghost), "fallback") == b"default"
    own = submit(http, task="add", worker_group="nobody", fallback=True, queue="slow")
    assert rclient.hget(app.keys.job(own), "fallback") == b"slow"


def test_concurrency_key_runs_one_at_a_time(http: httpx.Client) -> None:
    # Four workers' worth of slots, but a key with limit 1: the runs never overlap.
    ids = [
        submit(http, task="nap", args=[0.3], concurrency_key="customer-7", concurrency_limit=1)
        for _ in range(4)
    ]
    spans = []
    for job_id in ids:
        wait_state(http, job_id, "succeeded")
        job = detail(http, job_id)
        start, end = job["started"], job["finished"]
        spans.append((dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - dt.timedelta(milliseconds=5), spans


def test_progress_in_job_detail(http: httpx.Client) -> None:
    job_id = submit(http, task="report_progress", args=[1.5])
    job = wait_for(
        lambda: (j := detail(http, job_id))["progress"] is not None and j,
        what="progress to be reported",
    )
    assert job["progress"] == pytest.approx(0.4)
    assert job["progress_message"] == "parsed 4000 rows"
    fresh = detail(http, submit(http, task="add", delay=600))
    assert fresh["progress"] is None and fresh["progress_message"] is None
    assert fresh["parents"] == [] and fresh["dependencies"] == [] and fresh["unique_key"] is None


# -- periodic jobs ---------------------------------------------------------------------------


def ms(iso: str) -> int:
    return round(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def test_periodic_add_list_replace_delete(http: httpx.Client) -> None:
    assert http.get("/v1/periodic").json() == {"periodic": []}
    body = {"task": "add", "every": 1, "args": [20, 22], "missed": "once"}
    r = http.put("/v1/periodic/answer", json=body)
    assert r.status_code == 200, r.text
    entry = r.json()
    assert entry["name"] == "answer" and entry["every"] == 1 and entry["cron"] is None
    assert entry["queue"] == "default" and entry["next_run"]
    listed = http.get("/v1/periodic").json()["periodic"]
    assert listed == [entry]
    # It fires (the workers run maintenance: no master process in this test) under the id
    # of its tick.
    first = f"periodic:answer:{ms(entry['next_run'])}"
    wait_for(lambda: http.get(f"/v1/jobs/{first}").status_code == 200, what="the first tick")
    wait_state(http, first, "succeeded")
    assert detail(http, first)["result"] == 42
    # Replace: a cron schedule on another queue.
    r = http.put(
        "/v1/periodic/answer",
        json={"task": "add", "cron": "0 3 * * *", "queue": "nightly", "kwargs": {"x": 1, "y": 1}},
    )
    assert r.status_code == 200, r.text
    (entry,) = http.get("/v1/periodic").json()["periodic"]
    assert (entry["cron"], entry["every"], entry["queue"]) == ("0 3 * * *", None, "nightly")
    nxt = dt.datetime.fromisoformat(entry["next_run"])
    assert (nxt.hour, nxt.minute) == (3, 0)
    r = http.delete("/v1/periodic/answer")
    assert r.status_code == 200 and r.json() == {"name": "answer", "removed": True}
    assert http.get("/v1/periodic").json() == {"periodic": []}
    r = http.delete("/v1/periodic/answer")
    assert r.status_code == 404 and "answer" in r.json()["error"]


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("p", {"task": "add", "cron": "every day"}, "cron"),
        ("p", {"task": "add", "cron": "0 0 31 2 *"}, "cron"),  # valid syntax, never fires
        ("p", {"task": "add", "cron": "*/0 * * * *"}, "cron"),
        ("p", {"task": "add"}, "cron or every"),
        ("p", {"task": "add", "cron": "* * * * *", "every": 5}, "cron or every"),
        ("p", {"task": "add", "every": 0}, "every"),
        ("p", {"task": "add", "every": 0.5}, "every"),
        ("p", {"task": "add", "every": "soon"}, "every"),
        ("p", {"task": "", "every": 5}, "task"),
        ("p", {"every": 5}, "task"),
        ("p", {"task": "add", "every": 5, "missed": "sometimes"}, "missed"),
        ("p", {"task": "add", "every": 5, "queue": "a b"}, "queue"),
        ("p", {"task": "add", "every": 5, "args": {"x": 1}}, "args"),
        ("p", {"task": "add", "every": 5, "args": [2**70]}, "args"),
        ("p", {"task": "add", "every": 5, "name": "other"}, "name"),
        ("has space", {"task": "add", "every": 5}, "name"),
    ],
)
def test_invalid_periodic_names_the_field(
    bare: httpx.Client, name: str, body: dict[str, Any], field: str
) -> None:
    r = bare.put(f"/v1/periodic/{name}", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]
    assert bare.get("/v1/periodic").json() == {"periodic": []}


# -- purge -----------------------------------------------------------------------------------


def test_purge_cancels_queued_jobs_only(http: httpx.Client) -> None:
    calls = [{"args": [i, i]} for i in range(5)]
    ids = http.post("/v1/jobs/batch", json={"task": "add", "calls": calls, "queue": "parked"})
    later = submit(http, task="add", queue="parked", delay=600)
    r = http.post("/v1/queues/parked/purge")
    assert r.status_code == 200 and r.json() == {"queue": "parked", "cancelled": 5}
    assert {job_state(http, j) for j in ids.json()["ids"]} == {"cancelled"}
    assert job_state(http, later) == "scheduled"
    (q,) = [q for q in http.get("/v1/queues").json()["queues"] if q["name"] == "parked"]
    assert (q["queued"], q["scheduled"], q["cancelled"]) == (0, 1, 5)
    assert http.post("/v1/queues/parked/purge").json()["cancelled"] == 0
    r = http.post("/v1/queues/never-used/purge")
    assert r.status_code == 404 and "never-used" in r.json()["error"]


def test_openapi_documents_the_scheduling_fields(bare: httpx.Client) -> None:
    spec = bare.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    options = {"depends_on", "pass_results", "unique_key", "worker", "worker_group", "fallback",
               "concurrency_key", "concurrency_limit"}  # fmt: skip
    assert options <= set(schemas["JobIn"]["properties"])
    assert options <= set(schemas["BatchIn"]["properties"])
    detail_fields = {"parents", "dependencies", "progress", "progress_message", "unique_key"}
    assert detail_fields <= set(schemas["JobDetail"]["properties"])
    assert set(spec["paths"]["/v1/periodic/{name}"]) == {"put", "delete"}
    assert "post" in spec["paths"]["/v1/queues/{queue}/purge"]
    assert {"task", "cron", "every", "missed"} <= set(schemas["PeriodicIn"]["properties"])
