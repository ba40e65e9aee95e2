"""A dead worker is shown dead: a real `jobq worker` subprocess, SIGKILLed, turns `gone` in
``GET /v1/workers`` and `jobq workers` within a few heartbeat intervals of its last heartbeat
(not when its registry entry expires, 3 leases later); a gone worker is listed for
`GONE_LISTED_MS`, then left out."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import ROOT, jobq_cmd, subprocess_env
from live_master import LiveMaster
from procs import JobqProcess, kill_all, wait_until

from jobq import App
from jobq.reads import GONE_LISTED_MS

pytestmark = pytest.mark.timeout(120)

HEARTBEAT_MS = 1000
#: The worker publishes its heartbeat interval; readers call it gone after 3 of them (3 s).
#: Allowed here: that plus a loaded machine's slack, well under the 30 s its registry entry
#: lives (3 leases of 10 s), which is when the old reading called it gone.
GONE_WITHIN_S = 10.0


@pytest.fixture
def master(app: App) -> Iterator[LiveMaster]:
    m = LiveMaster(app).start()
    try:
        yield m
    finally:
        m.stop()


def _listed(master: LiveMaster, name: str) -> dict[str, Any] | None:
    rows = httpx.get(f"{master.url}/v1/workers", timeout=10).json()["workers"]
    return next((w for w in rows if w["name"] == name), None)


def _cli_workers(url: str, prefix: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        jobq_cmd("workers", "--json"),
        env=subprocess_env(url, prefix),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT / "tests",
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_sigkilled_worker_is_gone_within_a_few_heartbeats(
    app: App, master: LiveMaster, url: str, prefix: str, tmp_path: Path
) -> None:
    env = subprocess_env(url, prefix, JOBQ_HEARTBEAT_MS=str(HEARTBEAT_MS), JOBQ_LEASE_MS="10000")
    worker = JobqProcess.spawn(
        "worker",
        jobq_cmd("worker", "cli_tasks:app", "--name", "doomed", "--pool", "thread", "-c", "1"),
        tmp_path / "worker.log",
        env,
        cwd=ROOT / "tests",
    )
    try:
        row = wait_until(
            lambda: (w := _listed(master, "doomed")) and w["alive"] and w, 60, "the worker listed"
        )
        assert row["state"] == "alive" and row["info"]["heartbeat_ms"] == str(HEARTBEAT_MS)
        assert row["seen_ago_s"] < GONE_WITHIN_S
        # Still alive over several heartbeat intervals: beats keep it so, no flapping.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert _listed(master, "doomed")["state"] == "alive"  # type: ignore[index]
            time.sleep(0.2)
        cli = {w["name"]: w for w in _cli_workers(url, prefix)}
        assert cli["doomed"]["state"] == "alive"

        worker.signal(signal.SIGKILL)
        worker.wait_exit(10)
        killed = time.monotonic()
        gone = wait_until(
            lambda: (w := _listed(master, "doomed")) and w["state"] == "gone" and w,
            GONE_WITHIN_S + 5,
            "the killed worker shown gone",
        )
        took = time.monotonic() - killed
        assert took < GONE_WITHIN_S, f"shown gone {took:.1f}s after the kill"
        assert gone["alive"] is False and gone["last_seen"]
        # Its registry entry (TTL: 3 leases) is still there: liveness is judged by the beat.
        assert gone["info"].get("queues")
        cli = {w["name"]: w for w in _cli_workers(url, prefix)}
        assert cli["doomed"]["state"] == "gone" and cli["doomed"]["alive"] is False
        assert cli["doomed"]["seen_ago_s"] >= 2.9
        text = subprocess.run(
            jobq_cmd("workers"),
            env=subprocess_env(url, prefix),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert text.returncode == 0 and "doomed" in text.stdout and " gone " in text.stdout
    finally:
        kill_all([worker])


def test_gone_workers_are_dropped_after_the_listing_window(
    app: App, server_url: str, url: str, prefix: str
) -> None:
    """A worker last seen longer than GONE_LISTED_MS ago is left out; one seen within it is
    listed as gone; none at all says so in `jobq workers`."""
    out = subprocess.run(
        jobq_cmd("workers"), env=subprocess_env(url, prefix), capture_output=True, text=True
    )
    assert out.returncode == 0 and "no workers seen in the last 15 minutes" in out.stderr
    r = redis.Redis.from_url(server_url)
    try:
        sec, usec = r.time()
        now = sec * 1000 + usec // 1000
        r.zadd(app.keys.workers, {"ancient": now - GONE_LISTED_MS - 5_000})
        r.zadd(app.keys.workers, {"recent": now - 60_000})
    finally:
        r.close()
    rows = {w.name: w for w in app.store.list_workers()}
    assert "ancient" not in rows
    assert rows["recent"].alive is False and rows["recent"].seen_ago_ms >= 60_000
