"""Run every chaos scenario and write docs/reliability.md (`make chaos`).

Runs pytest on tests/chaos with both markers selected, each scenario leaving one JSON row in a
fresh results directory, then writes the table from the rows, failed scenarios included. Exits
with pytest's status, so `make chaos` fails while any row fails.

    python tests/chaos/report.py [-k EXPR] [--out docs/reliability.md] [--rows-only DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

HEADER = """# Reliability: the chaos suite

Every row is one scenario of `tests/chaos/`, run against real processes: `jobq worker`
subprocesses, private Valkey servers (the embedded binary, AOF `everysec`), real signals,
`CLIENT PAUSE`, `maxmemory`, network namespaces. Each task execution appends itself (job,
attempt, fencing token, pid, start and end) to the scenario's log; each client call is recorded
ok, failed (with its error type) or indeterminate. After the faults the checker waits (bounded)
for every job to finish, then counts:

- **lost**: acknowledged submits with no committed outcome (vanished, or never finished);
- **failed**: jobs that ended failed although they should have succeeded (only poison pills
  and jobs for workers that never existed are expected to fail);
- **duplicates**: executions beyond a job's first; *unexcused* ones belong to jobs no fault
  touched (the fault's window and processes did not overlap any of their executions);
- **stale rejected**: executions that ran to their end under a token that was no longer the
  job's (their result was refused); a committed result from any but the newest execution, or
  one token handed to two executions, fails the row;
- **recovery**: from the end of a fault to the next execution that finished *and* committed
  (the worst over the scenario's faults; a measurement, never asserted).
- **gap** (the high-availability rows, `test_chaos_ha.py`): the failover gap, the longest
  stretch from the fault (the primary killed, paused or told to fail over; the leading master
  killed) on with no job succeeding; also a measurement. Those rows also check that no jobq
  write lands on the old primary once another node is the primary, and name what did.

A row passes when it shows 0 lost, 0 failed that should have succeeded, no unexcused
duplicate, no wedge, no stranger in (HTTP), plus the scenario's own checks (the *why* column).

Regenerate with `make chaos` (about ten minutes). `pytest` runs the `chaos_ci` subset (marked
in the test files, under a minute) with every test run; `python tests/chaos/report.py -k NAME`
reruns some scenarios and writes a table of those rows only.
"""


def run_pytest(results: Path, extra: list[str]) -> int:
    env = dict(os.environ, CHAOS_RESULTS=str(results))
    cmd = [
        sys.executable, "-m", "pytest", "tests/chaos", "-m", "chaos or chaos_ci",
        "-p", "no:randomly", "-q", "-o", "console_output_style=classic", *extra,
    ]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def recovery(rec: float | None, gap: float | None) -> str:
    """The recovery cell: the time, and the failover gap of the rows that measure one."""
    text = "-" if rec is None else f"{rec:.1f} s"
    return text if gap is None else f"{text}; gap {gap:.1f} s"


def render(rows: list[dict[str, Any]], started: str, took_s: float) -> str:
    lines = [
        HEADER,
        f"Last run: {started} UTC, {took_s / 60:.1f} min, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.\n",
        "| scenario | faults | jobs | lost | failed | duplicates (unexcused) | stale rejected "
        "| recovery | verdict | why |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    passed = 0
    for r in rows:
        verdict = {"passed": "PASS", "skipped": "SKIP"}.get(r["outcome"], "FAIL")
        passed += verdict == "PASS"
        rec = r.get("recovery_s")
        notes = [n for n in r.get("notes", []) if n not in r["reason"]][:2]
        why = " — ".join(x for x in (r["reason"], "; ".join(notes)) if x)
        why = re.sub(r"/tmp/\S+", "<tmp>", why.replace(str(ROOT) + "/", ""))
        dup = f"{r['duplicates']} ({r['unexcused']})" if r.get("checked") else "-"
        nums = [r[k] if r.get("checked") else None for k in ("jobs", "lost", "failed", "stale")]
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{r['scenario']}`",
                    r["faults"] or "-",
                    cell(nums[0]),
                    cell(nums[1]),
                    cell(nums[2]),
                    dup,
                    cell(nums[3]),
                    recovery(rec, r.get("gap_s")),
                    f"**{verdict}**",
                    why.replace("|", "\\|").replace("\n", " ")[:500] or "all checks hold",
                ]
            )
            + " |"
        )
    lines.append(f"\n{passed} of {len(rows)} scenarios pass.\n")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", help="only the scenarios matching this pytest -k expression")
    ap.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    ap.add_argument("--rows-only", help="render the rows already in this directory, run nothing")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    t0 = time.monotonic()
    if args.rows_only:
        results, status = Path(args.rows_only), 0
    else:
        # The rows of the last run stay in build/ (`--rows-only build/chaos-last` re-renders).
        results = ROOT / "build" / "chaos-last"
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
        status = run_pytest(results, ["-k", args.k] if args.k else [])
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    Path(args.out).write_text(render(rows, started, time.monotonic() - t0))
    print(f"wrote {args.out}: {len(rows)} scenarios")
    return status if rows else max(status, 1)


if __name__ == "__main__":
    sys.exit(main())
