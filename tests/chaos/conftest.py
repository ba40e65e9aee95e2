"""Fixtures of the chaos suite: a scenario (its log, recorder, workers, result row) per test.

Every scenario writes one result row (JSON) to CHAOS_RESULTS (default build/chaos/), pass or
fail, which tests/chaos/report.py turns into docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT, SHORT_LEASES, Recorder, Verdict, Workers


def results_dir() -> Path:
    path = Path(os.environ.get("CHAOS_RESULTS") or ROOT / "build" / "chaos")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, "chaos_" + report.when, report)


class Scenario:
    """One scenario's log, recorder, workers, and the row it leaves in the table."""

    def __init__(self, tmp: Path, url: str, prefix: str, name: str) -> None:
        self.tmp, self.url, self.prefix, self.name = tmp, url, prefix, name
        self.log = tmp / "chaos.log"
        self.rec = Recorder(self.log)
        self.workers = Workers(tmp, url, prefix, self.log, dict(SHORT_LEASES))
        self.faults = ""
        self.verdict: Verdict | None = None
        self.extra: dict[str, Any] = {}
        self.t0 = time.monotonic()

    def use(self, url: str) -> None:
        """Point the scenario (and the workers it starts from now on) at another server."""
        self.url = self.workers.url = url

    def row(self, outcome: str, reason: str) -> dict[str, Any]:
        v = self.verdict or Verdict()
        return {
            "scenario": self.name,
            "faults": self.faults,
            "jobs": v.jobs,
            "lost": v.lost,
            "failed": v.failed,
            "duplicates": v.duplicates,
            "unexcused": v.unexcused_duplicates,
            "stale": v.stale_rejected,
            "recovery_s": v.recovery_s,
            "indeterminate": v.indeterminate,
            "refused": v.refused,
            "notes": v.notes,
            "checked": self.verdict is not None,
            "outcome": outcome,
            "reason": reason,
            "seconds": round(time.monotonic() - self.t0, 1),
            **self.extra,
        }


@pytest.fixture
def scenario(request: pytest.FixtureRequest, tmp_path: Path, url: str) -> Iterator[Scenario]:
    name = request.node.name.removeprefix("test_")
    sc = Scenario(tmp_path, url, "x" + uuid.uuid4().hex[:10], name)
    try:
        yield sc
    finally:
        sc.workers.close()
        rep = getattr(request.node, "chaos_call", None) or getattr(
            request.node, "chaos_setup", None
        )
        outcome, reason = "error", "did not run"
        if rep is not None:
            outcome = rep.outcome
            if rep.skipped and isinstance(rep.longrepr, tuple):
                reason = str(rep.longrepr[2]).removeprefix("Skipped: ")
            elif rep.failed:
                crash = getattr(rep.longrepr, "reprcrash", None)
                reason = crash.message if crash is not None else str(rep.longrepr)[-300:]
            else:
                reason = ""
        row = sc.row(outcome, " ".join(reason.split())[:400])
        (results_dir() / f"{time.time_ns()}-{name}.json").write_text(json.dumps(row))
