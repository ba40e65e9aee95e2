"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright): load
it, watch a job submitted over the API reach `succeeded`, cancel a delayed job from the page,
and save a screenshot to docs/dashboard.png."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def test_dashboard_follows_and_cancels_jobs(browser: Any, live: LiveMaster) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
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

    page.wait_for_timeout(1500)  # a few more throughput samples for the chart
    out = ROOT / "docs" / "dashboard.png"
    out.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000
    assert errors == []
