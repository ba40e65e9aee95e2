"""One chaos scenario: its log, recorder, workers, and the result row it leaves for
docs/reliability.md (written to CHAOS_RESULTS, default build/chaos/, pass or fail)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from chaos.harness import ROOT, SHORT_LEASES, Recorder, Verdict, Workers


def results_dir() -> Path:
    path = Path(os.environ.get("CHAOS_RESULTS") or ROOT / "build" / "chaos")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
