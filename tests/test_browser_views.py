"""The dashboard's newer views in a real headless Chromium (as tests/test_browser.py): search and
the bulk actions behind a counted confirmation (the 409 when the count changed), the per-task
figures, a worker's page, a job's received parent results, the workflow graph, and the whole page
at phone width (390 px, no horizontal overflow). Each saves a screenshot: to pytest's tmp_path,
or to docs/dashboard-<view>.png with JOBQ_UPDATE_SCREENSHOT=1, for a person to look at."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT
from live_master import LiveMaster, LiveWorker
from test_browser import ARGS, ensure_chromium

from jobq import App

TERMINAL = {"succeeded", "failed", "cancelled"}
NONE = "\u2013"  # what the page shows for a figure it has no data for


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    exe = ensure_chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def live(url: str, prefix: str, app: App) -> Iterator[LiveMaster]:
    worker_app = App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50)
    worker = LiveWorker(worker_app, concurrency=2, name="worker-a").start()
    master = LiveMaster(app, rate_interval_s=0.5).start()
    yield master
    master.stop()
    worker.stop()
    worker_app.close()


@pytest.fixture
def api(live: LiveMaster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def shot(page: Any, name: str, tmp_path: Path, *, full_page: bool = True) -> Path:
    """docs/dashboard-<name>.png only when asked (so test runs leave the tree clean); `page`
    may be a locator, then only that element is taken."""
    out = tmp_path / f"dashboard-{name}.png"
    if os.environ.get("JOBQ_UPDATE_SCREENSHOT") == "1":
        out = ROOT / "docs" / f"dashboard-{name}.png"
    if full_page:  # a page; a locator (one card) has no full_page option
        page.screenshot(path=str(out), full_page=True)
    else:
        page.screenshot(path=str(out))
    assert out.stat().st_size > 5_000
    return out


def open_page(browser: Any, live: LiveMaster, hash_: str = "", width: int = 1400) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.errors = []  # type: ignore[attr-defined]
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))

    def accept(dialog: Any) -> None:
        page.dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    page.on("dialog", accept)
    page.goto(live.url + "/" + hash_)
    return page


def submit(api: httpx.Client, task: str, **body: Any) -> str:
    r = api.post("/v1/jobs", json={"task": task, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_done(api: httpx.Client, ids: list[str], timeout: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = {i: api.get(f"/v1/jobs/{i}").json()["state"] for i in ids}
        if all(s in TERMINAL for s in states.values()):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.1)


def test_search_and_bulk_cancel_then_delete(
    browser: Any, live: LiveMaster, api: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    needle = "needle-" + uuid.uuid4().hex[:6]
    api.post("/v1/jobs/batch", json={"task": "add", "calls": [{"args": [i, i]} for i in range(12)]})
    parked = [submit(api, "boom", kwargs={"msg": f"{needle} {i}"}, delay=600) for i in range(3)]
    page = open_page(browser, live)
    # Newest first: the last job submitted heads the unfiltered list.
    expect(page.locator("#jobs tbody tr").first).to_have_attribute(
        "data-job", parked[-1], timeout=30_000
    )

    # Argument text finds exactly the three parked jobs.
    page.fill('#filters input[name="q"]', needle)
    page.click('#filters button[type="submit"]')
    expect(page.locator("#jobs tbody tr")).to_have_count(3, timeout=30_000)
    for i in parked:
        expect(page.locator(f'#jobs tr[data-job="{i}"] td.state')).to_have_text("scheduled")

    # Bulk cancel: the confirmation says how many, from a dry run.
    page.click('button.bulk[data-action="cancel"]')
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Cancel 3 job(s)")
    expect(page.locator("#confirm-text")).to_contain_text(needle)
    shot(page, "search", tmp_path, full_page=False)

    # Two more match before the user clicks: the POST's expect=3 is refused (409) and the
    # page counts again and asks again, saying the count changed.
    parked += [submit(api, "boom", kwargs={"msg": f"{needle} late {i}"}, delay=600) for i in (1, 2)]
    page.click("#confirm-ok")
    expect(page.locator("#confirm-text")).to_contain_text("Cancel 5 job(s)", timeout=30_000)
    expect(page.locator("#confirm-note")).to_contain_text("count changed")
    assert {api.get(f"/v1/jobs/{i}").json()["state"] for i in parked} == {"scheduled"}
    page.click("#confirm-ok")
    expect(page.locator("#bulk-result")).to_contain_text("5 of 5 done", timeout=30_000)
    expect(page.locator("#confirm")).to_be_hidden()
    assert {api.get(f"/v1/jobs/{i}").json()["state"] for i in parked} == {"cancelled"}

    # Cancelling nothing is said in the page, and a declined confirmation changes nothing.
    page.select_option('#filters select[name="state"]', "cancelled")
    page.click('#filters button[type="submit"]')
    expect(page.locator("#jobs tbody tr")).to_have_count(5, timeout=30_000)
    page.click('button.bulk[data-action="delete"]')
    expect(page.locator("#confirm-text")).to_contain_text("Delete 5 job(s)")
    page.click("#confirm-cancel")
    expect(page.locator("#bulk-result")).to_contain_text("not done")
    assert api.get(f"/v1/jobs/{parked[0]}").status_code == 200

    page.click('button.bulk[data-action="delete"]')
    page.click("#confirm-ok")
    expect(page.locator("#bulk-result")).to_contain_text("5 of 5 done", timeout=30_000)
    expect(page.locator("#jobs tbody tr")).to_have_count(0, timeout=30_000)
    assert all(api.get(f"/v1/jobs/{i}").status_code == 404 for i in parked)
    assert page.dialogs == []  # type: ignore[attr-defined]  # no alert(), no confirm()
    assert page.errors == []  # type: ignore[attr-defined]


def test_tasks_figures_and_rerun_notice(
    browser: Any, live: LiveMaster, api: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ok = api.post(
        "/v1/jobs/batch", json={"task": "add", "calls": [{"args": [i, 1]} for i in range(20)]}
    ).json()["ids"]
    bad = [submit(api, "boom", kwargs={"msg": "for the tasks table"}, retries=0) for _ in range(4)]
    naps = [submit(api, "nap", args=[0.2]) for _ in range(3)]
    wait_done(api, ok + bad + naps)

    page = open_page(browser, live, "#/tasks")
    row = page.locator('#tasks tr[data-task="add"][data-queue="default"]')
    expect(row).to_be_visible(timeout=30_000)
    cells = row.locator("td")
    expect(cells.nth(2)).to_have_text("20")  # runs
    expect(row.locator("td.failure-rate")).to_have_text("0.0 %")
    boom = page.locator('#tasks tr[data-task="boom"]')
    expect(boom.locator("td.failure-rate")).to_have_text("100.0 %")
    nap = page.locator('#tasks tr[data-task="nap"] td')
    expect(nap.nth(10)).to_contain_text("ms")  # runtime p50 of a 0.2 s nap
    expect(nap.nth(12)).not_to_have_text(NONE)  # queue wait p50
    shot(page, "tasks", tmp_path)

    # A task's name opens the jobs list searched for it.
    boom.locator("td").nth(1).locator("a").click()
    expect(page.locator("#view-overview")).to_be_visible()
    expect(page.locator("#jobs tbody tr")).to_have_count(4, timeout=30_000)

    # Purge, then re-run the dead-lettered: the purge message goes, the re-run's result shows.
    api.post("/v1/jobs/batch", json={"task": "add", "calls": [{"args": [1, 1]}], "queue": "idle"})
    purge = page.locator('#queues tr[data-queue="idle"] button.purge')
    expect(purge).to_be_visible(timeout=30_000)
    purge.click()
    expect(page.locator("#notice")).to_contain_text("1 job(s) of idle cancelled", timeout=30_000)
    page.click("#rerun-dead")
    expect(page.locator("#notice")).to_have_text(
        "4 dead-lettered job(s) queued again", timeout=30_000
    )
    assert [t for t, _ in page.dialogs] == ["confirm", "confirm"]  # type: ignore[attr-defined]

    # The chart: a time axis, a legend and a chosen window.
    page.select_option("#chart-window", "60")
    expect(page.locator("#chart svg text.tick").filter(has_text=":").first).to_be_visible()
    expect(page.locator("#chart-legend")).to_contain_text("succeeded/s")
    expect(page.locator("#chart-legend")).to_contain_text("failed/s")
    assert page.errors == []  # type: ignore[attr-defined]


def test_worker_page(browser: Any, live: LiveMaster, api: httpx.Client, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    done = api.post(
        "/v1/jobs/batch", json={"task": "add", "calls": [{"args": [i, 2]} for i in range(6)]}
    ).json()["ids"]
    failed = submit(api, "boom", kwargs={"msg": "worker history"}, retries=0)
    wait_done(api, [*done, failed])
    naps = [submit(api, "nap", args=[4]) for _ in range(2)]

    page = open_page(browser, live)
    link = page.locator('#workers tr[data-worker="worker-a"] a.worker')
    expect(link).to_be_visible(timeout=30_000)
    # The current jobs: two separate links, not one run of text.
    current = page.locator('#workers tr[data-worker="worker-a"] td.current a.jobid')
    expect(current).to_have_count(2, timeout=30_000)
    link.click()
    expect(page.locator("#view-worker")).to_be_visible()
    expect(page.locator("#worker-name")).to_have_text("worker-a")
    expect(page.locator('#worker-facts dd[data-fact="jobs done"]')).to_have_text("6")
    expect(page.locator('#worker-facts dd[data-fact="failures"]')).to_have_text("1")
    expect(page.locator('#worker-facts dd[data-fact="uptime"]')).not_to_have_text(NONE)
    chips = page.locator("#worker-current a.jobid")
    expect(chips).to_have_count(2, timeout=30_000)
    expect(page.locator("#worker-recent tbody tr")).not_to_have_count(0)
    expect(page.locator(f'#worker-recent tr[data-job="{failed}"] td.state')).to_have_text("failed")
    shot(page, "worker", tmp_path)
    first = chips.first.get_attribute("data-job")
    assert first in naps
    chips.first.click()
    expect(page.locator("#detail-id")).to_have_text(first)

    page.goto(live.url + "/#/worker/nobody-here")
    expect(page.locator("#worker-msg")).to_contain_text("No worker named nobody-here")
    assert page.errors == []  # type: ignore[attr-defined]


def test_received_results_and_workflow_graph(
    browser: Any, live: LiveMaster, api: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # a -> (b, c) -> d: a fan-out and a chord (d has two parents), plus a failing branch e.
    a = submit(api, "add", args=[1, 2])
    b = submit(api, "double", depends_on=[a], pass_results="one")
    c = submit(api, "double", depends_on=[a], pass_results="one")
    d = submit(api, "total", depends_on=[b, c], pass_results="list")
    e = submit(api, "boom", depends_on=[a], retries=0)
    states = wait_done(api, [a, b, c, d, e])
    assert states[d] == "succeeded" and states[e] == "failed"

    page = open_page(browser, live, "#/job/" + d)
    expect(page.locator("#detail-id")).to_have_text(d, timeout=30_000)
    received = page.locator("#detail-received li")
    expect(received).to_have_count(2)
    expect(page.locator(f'#detail-received li[data-parent="{b}"]')).to_contain_text("6")
    expect(page.locator(f'#detail-received li[data-parent="{c}"]')).to_contain_text("succeeded")
    expect(page.locator("#detail")).to_contain_text("12")
    shot(page.locator("#detail-card"), "job", tmp_path, full_page=False)

    page.click("#detail-actions a.graph-link")
    expect(page.locator("#view-graph")).to_be_visible()
    nodes = page.locator("#graph g.node")
    expect(nodes).to_have_count(5, timeout=30_000)
    expect(page.locator("#graph path.edge")).to_have_count(5)
    expect(page.locator(f'#graph g.node[data-job="{e}"]')).to_have_attribute("data-state", "failed")
    expect(page.locator(f'#graph g.node[data-job="{d}"]')).to_have_class(
        "node node-succeeded current"
    )
    # Layers left to right: a before b and c, d after both.
    x = {
        j: page.locator(f'#graph g.node[data-job="{j}"]').bounding_box()["x"]  # type: ignore[index]
        for j in (a, b, c, d)
    }
    assert x[a] < x[b] == x[c] < x[d]
    # The same graph from any job of it; a click on a node opens that job.
    page.goto(live.url + "/#/graph/" + b)
    expect(page.locator("#graph g.node")).to_have_count(5, timeout=30_000)
    page.locator(f'#graph g.node[data-job="{e}"]').click()
    expect(page.locator("#detail-id")).to_have_text(e)
    expect(page.locator("#detail")).to_contain_text("ValueError")
    page.locator("#view-graph").scroll_into_view_if_needed()
    shot(page, "graph", tmp_path)
    assert page.errors == []  # type: ignore[attr-defined]


def test_phone_width(browser: Any, live: LiveMaster, api: httpx.Client, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    icon = api.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")

    long_id = "a-rather-long-job-id-" + "x" * 60
    api.post("/v1/jobs", json={"task": "add", "args": [1, 2], "job_id": long_id})
    api.post("/v1/jobs/batch", json={"task": "add", "calls": [{"args": [i, i]} for i in range(8)]})
    wait_done(api, [long_id])
    page = open_page(browser, live, width=390)
    expect(page.locator(f'#jobs tr[data-job="{long_id}"]')).to_be_visible(timeout=30_000)
    expect(page.locator("#workers tbody tr").first).to_contain_text("alive", timeout=30_000)

    def width() -> int:
        return int(page.evaluate("document.scrollingElement.scrollWidth"))

    assert width() <= 390
    page.locator(f'#jobs tr[data-job="{long_id}"]').click()
    expect(page.locator("#detail-id")).to_have_text(long_id)
    assert width() <= 390
    page.wait_for_timeout(600)
    shot(page, "phone", tmp_path)
    for view in ("#/tasks", "#/worker/worker-a", "#/graph/" + long_id):
        page.goto(live.url + "/" + view)
        page.wait_for_timeout(500)
        assert width() <= 390, view
    assert page.errors == []  # type: ignore[attr-defined]
