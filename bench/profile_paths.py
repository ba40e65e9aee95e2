"""Where a job's time goes: server-side cost of each jobq function next to a bare LPUSH, and
the client-side profile of one-at-a-time submit. Evidence for the targets in docs/benchmarks.md.

    .venv/bin/python bench/profile_paths.py [--n 5000]

Runs against its own private Valkey (the embedded binary). Prints a Markdown report
(docs/profile.md holds one).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from valkey_server import start_valkey  # noqa: E402


def usec_per_call(r: redis.Redis, command: str) -> float:
    stats = r.info("commandstats").get(f"cmdstat_{command}", {})
    return float(stats.get("usec_per_call", 0.0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jobq-profile-"))
    server, url = start_valkey(tmp)
    os.environ.update(JOBQ_URL=url, JOBQ_PREFIX="prof")
    from bench_tasks import app, noop

    from jobq.worker import Worker

    r = redis.Redis.from_url(url)
    out = io.StringIO()
    try:
        noop.submit()  # load the function library
        r.config_resetstat()
        for i in range(args.n):
            r.lpush("bare", i)
        lpush = usec_per_call(r, "lpush")
        t = time.perf_counter()
        for i in range(args.n):
            r.lpush("bare", i)
        bare_rt = (time.perf_counter() - t) / args.n * 1e6

        r.config_resetstat()
        t = time.perf_counter()
        for _ in range(args.n):
            noop.submit()
        submit_rt = (time.perf_counter() - t) / args.n * 1e6
        enqueue = usec_per_call(r, "fcall")

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.n):
            noop.submit()
        prof.disable()

        # Claim + complete + await, measured on a worker draining the queue, then idle latency.
        r.config_resetstat()
        worker = Worker(app, concurrency=1, pool="thread", maintenance=False)
        th = threading.Thread(target=worker.run, daemon=True)
        th.start()
        last = noop.submit()
        last.result(timeout=120)
        lifecycle = usec_per_call(r, "fcall")
        fcalls = r.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0)
        worker.stop()
        th.join(30)

        print("## Server-side cost per call (Valkey `INFO commandstats`)\n", file=out)
        print("| call | µs per call |\n|---|---|", file=out)
        print(f"| LPUSH (the bare limit's only command) | {lpush:.2f} |", file=out)
        print(f"| FCALL enqueue (one job) | {enqueue:.2f} |", file=out)
        print(
            f"| FCALL, all calls while a worker drained {args.n * 2} jobs "
            f"({fcalls} calls: claim/complete batches) | {lifecycle:.2f} |",
            file=out,
        )
        print("\n## Client round trip, one at a time\n", file=out)
        print("| call | µs per call (wall) |\n|---|---|", file=out)
        print(f"| redis-py LPUSH | {bare_rt:.1f} |", file=out)
        print(f"| jobq `task.submit()` | {submit_rt:.1f} |", file=out)
        print(
            f"\nsubmit / bare = {bare_rt / submit_rt:.0%} of the bare rate; the gap "
            f"({submit_rt - bare_rt:.1f} µs) against the server-side difference "
            f"({enqueue - lpush:.1f} µs).\n",
            file=out,
        )
        print(
            "## Client-side profile of `task.submit()` (cProfile, top 12 by own time)\n", file=out
        )
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
        # The standard library's own path is this machine's; the table names it <stdlib>.
        table = s.getvalue().strip().replace(sysconfig.get_path("stdlib") + "/", "<stdlib>/")
        print("```\n" + table + "\n```", file=out)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
