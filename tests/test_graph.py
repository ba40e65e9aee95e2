"""`GET /v1/jobs/{id}/graph` and a job detail's `received` over real HTTP, with a real worker
running the workflow, on every layout (parents and children in other partitions in 'three')."""

from __future__ import annotations

import time

import httpx
from conftest import on_every_layout
from jobs_api_support import http, live, wait_state, worker_app

from jobq import App
from jobq.graph import workflow_graph

pytestmark = on_every_layout
__all__ = ["http", "live", "worker_app"]  # (fixtures)


def edges(g: dict[str, object]) -> set[tuple[str, str]]:
    return {(e["from"], e["to"]) for e in g["edges"]}  # type: ignore[attr-defined]


def test_a_chord_and_a_chain_from_any_job(http: httpx.Client, worker_app: App) -> None:
    a = worker_app.submit("add", (1, 2))
    time.sleep(0.005)
    b = worker_app.submit("add", (3, 4))
    c = worker_app.submit("total", depends_on=[a, b], pass_results="list")  # the chord
    d = worker_app.submit("double", depends_on=c, pass_results=True)
    wait_state(http, d.id, "succeeded")
    want = {(a.id, c.id), (b.id, c.id), (c.id, d.id)}
    for start in (a.id, b.id, c.id, d.id):
        r = http.get(f"/v1/jobs/{start}/graph")
        assert r.status_code == 200, r.text
        g = r.json()
        assert edges(g) == want, start
        assert {n["id"]: n["state"] for n in g["nodes"]} == dict.fromkeys(
            (a.id, b.id, c.id, d.id), "succeeded"
        )
        assert {n["task"] for n in g["nodes"]} == {"add", "total", "double"}
        assert g["root"] == a.id and g["truncated"] is False
    # What each job was handed.
    got = http.get(f"/v1/jobs/{c.id}").json()
    assert got["result"] == 10
    assert got["received"] == [
        {"parent": a.id, "state": "succeeded", "result": 3},
        {"parent": b.id, "state": "succeeded", "result": 7},
    ]
    assert http.get(f"/v1/jobs/{d.id}").json()["received"] == [
        {"parent": c.id, "state": "succeeded", "result": 10}
    ]
    assert http.get(f"/v1/jobs/{a.id}").json()["received"] is None


def test_pending_workflow_states_and_failed_parent(http: httpx.Client, worker_app: App) -> None:
    p = worker_app.submit("add", (1, 1), delay=600)
    k = worker_app.submit("double", depends_on=p, pass_results=True)
    g = http.get(f"/v1/jobs/{p.id}/graph").json()
    assert edges(g) == {(p.id, k.id)}
    assert {n["id"]: n["state"] for n in g["nodes"]} == {p.id: "scheduled", k.id: "scheduled"}
    assert http.get(f"/v1/jobs/{k.id}").json()["received"] == [
        {"parent": p.id, "state": "scheduled", "result": None}
    ]
    bad = worker_app.submit("boom")
    after = worker_app.submit("double", depends_on=bad, pass_results=True)
    wait_state(http, after.id, "failed")
    g = http.get(f"/v1/jobs/{bad.id}/graph").json()
    assert {n["id"]: n["state"] for n in g["nodes"]} == {bad.id: "failed", after.id: "failed"}
    assert http.get(f"/v1/jobs/{after.id}").json()["received"] == [
        {"parent": bad.id, "state": "failed", "result": None}
    ]


def test_graph_is_bounded_and_unknown_is_404(http: httpx.Client, worker_app: App) -> None:
    parents = [worker_app.submit("add", (i, 0), delay=600) for i in range(6)]
    child = worker_app.submit("total", depends_on=parents, pass_results="list")
    g = workflow_graph(worker_app.store, child.id, max_nodes=3)
    assert g is not None and g.truncated and len(g.nodes) == 3
    assert all(b == child.id for _, b in g.edges)
    full = http.get(f"/v1/jobs/{parents[0].id}/graph").json()
    assert len(full["nodes"]) == 7 and not full["truncated"]
    r = http.get("/v1/jobs/no-such-job/graph")
    assert r.status_code == 404 and "no-such-job" in r.json()["error"]
