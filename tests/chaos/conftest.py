"""Fixtures of the chaos suite: a scenario (tests/chaos/scenario.py) per test, whose result
row is written at teardown with the test's outcome, pass or fail."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.scenario import Scenario, results_dir


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, "chaos_" + report.when, report)


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
                reason = reason.split("\nassert ")[0]  # the message, not pytest's rewrite
            else:
                reason = ""
        row = sc.row(outcome, " ".join(reason.split())[:400])
        (results_dir() / f"{time.time_ns()}-{name}.json").write_text(json.dumps(row))
