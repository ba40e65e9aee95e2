"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright): load
it, watch a job submitted over the API reach `succeeded`, cancel a delayed job from the page,
purge a queue (behind a confirm), follow a job's dependencies and progress, and save a
screenshot: to pytest's tmp_path, or to docs/dashboard.png with JOBQ_UPDATE_SCREENSHOT=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT
from live_master import LiveMaster, LiveWorker

from jobq import App

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium() -> str:
    """Debian's chromium, installed here if missing (as the Makefile does); else skip."""
    if shutil.which("chromium") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && apt-get install -y -qq chromium",
            shell=True,
            capture_output=True,
            timeout=900,
            check=False,
        )
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        pytest.skip("Debian's chromium is not installed and `apt-get install chromium` failed")
    return path


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
    worker = LiveWorker(worker_app, concurrency=2).start()
    master = LiveMaster(app, rate_interval_s=0.5).start()
    yield master
    master.stop()
    worker.stop()
    worker_app.close()


def screenshot_path(tmp_path: Path) -> Path:
    """docs/dashboard.png only when asked (so test runs leave the tree clean)."""
    if os.environ.get("JOBQ_UPDATE_SCREENSHOT") == "1":
        return ROOT / "docs" / "dashboard.png"
    return tmp_path / "dashboard.png"


def test_dashboard_follows_and_cancels_jobs(browser: Any, live: LiveMaster, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1250})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    with httpx.Client(base_url=live.url, timeout=30) as api:
        r = api.put("/v1/periodic/nightly-report", json={"task": "add", "cron": "0 3 * * *"})
        assert r.status_code == 200, r.text
    page.goto(live.url + "/")
    expect(page.locator("#live")).to_have_text("live: on", timeout=30_000)
    expect(page.locator("#health")).to_contain_text("broker ok", timeout=30_000)

    with httpx.Client(base_url=live.url, timeout=30) as api:
        # Some history for the chart and the tables.
        api.post(
            "/v1/jobs/batch", json={"task": "add", "calls": [{"args": [i, i]} for i in range(40)]}
        )
        api.post("/v1/jobs", json={"task": "boom", "kwargs": {"msg": "for the screenshot"}})
        # A job submitted over the API shows up and reaches `succeeded` on the page.
        job = api.post("/v1/jobs", json={"task": "nap", "args": [1.5]}).json()["id"]
        state = page.locator(f'#jobs tr[data-job="{job}"] td.state')
        expect(state).to_have_text("succeeded", timeout=30_000)
        assert api.get(f"/v1/jobs/{job}").json()["state"] == "succeeded"

        # A delayed job is cancelled from the page.
        delayed = api.post("/v1/jobs", json={"task": "add", "args": [1, 2], "delay": 600})
        delayed_id = delayed.json()["id"]
        row = page.locator(f'#jobs tr[data-job="{delayed_id}"]')
        expect(row.locator("td.state")).to_have_text("scheduled", timeout=30_000)
        row.locator("button.cancel").click()
        expect(row.locator("td.state")).to_have_text("cancelled", timeout=30_000)
        assert api.get(f"/v1/jobs/{delayed_id}").json()["state"] == "cancelled"

        # Job detail: arguments and result.
        page.locator(f'#jobs tr[data-job="{job}"]').click()
        expect(page.locator("#detail-id")).to_have_text(job)
        expect(page.locator("#detail")).to_contain_text("succeeded")
        expect(page.locator("#detail")).to_contain_text("1.5")

        # Queues and workers tables filled from the API.
        expect(page.locator('#queues tr[data-queue="default"]')).to_be_visible()
        expect(page.locator("#workers tbody tr").first).to_contain_text("alive", timeout=30_000)
        expect(page.locator('#periodic tr[data-periodic="nightly-report"]')).to_contain_text(
            "0 3 * * *", timeout=30_000
        )

        # Purge a queue nobody serves, after the confirm() the page asks.
        parked = [{"args": [i, i]} for i in range(3)]
        api.post("/v1/jobs/batch", json={"task": "add", "calls": parked, "queue": "parked"})
        queued = page.locator('#queues tr[data-queue="parked"] td').nth(1)
        expect(queued).to_have_text("3", timeout=30_000)
        page.locator('#queues tr[data-queue="parked"] button.purge').click()
        expect(queued).to_have_text("0", timeout=30_000)
        assert any("parked" in m for m in dialogs)
        expect(page.locator("#notice")).to_contain_text("3 job(s) of parked cancelled")

        # A job with a dependency reports progress; its detail shows both.
        child = api.post(
            "/v1/jobs", json={"task": "report_progress", "args": [30], "depends_on": [job]}
        ).json()["id"]
        expect(page.locator(f'#jobs tr[data-job="{child}"] td.state')).to_have_text(
            "running", timeout=30_000
        )
        deadline = time.monotonic() + 30
        while api.get(f"/v1/jobs/{child}").json()["progress"] is None:
            assert time.monotonic() < deadline, "the task reported no progress"
            page.wait_for_timeout(100)
        page.locator(f'#jobs tr[data-job="{child}"]').click()
        expect(page.locator("#detail-id")).to_have_text(child)
        deps = page.locator(f'#detail-deps li[data-parent="{job}"]')
        expect(deps).to_contain_text("succeeded")
        expect(page.locator("#detail-progress")).to_contain_text("40% · parsed 4000 rows")

    page.wait_for_timeout(1500)  # a few more throughput samples for the chart
    out = screenshot_path(tmp_path)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000
    assert errors == []
