"""Cost of a maintenance tick and of the queues view with a flooded queue registry (100k
distinct `worker=` names, as a stranger submitting over HTTP leaves them), and the hot-path
cost of the scripts' up-front checks (submit + claim + complete of 20k jobs).

Run from this folder: ``python registry_walk.py [n_names]``. Prints one line per figure.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from valkey_server import start_valkey

from jobq import App
from jobq.maintenance import tick
from jobq.model import JobSpec, Outcome

T = 1_000_000_000


def main(n: int) -> None:
    proc, url = start_valkey(Path(tempfile.mkdtemp(prefix="jobq-bench-registry-")))
    try:
        app = App(url, prefix="bench")
        store, r, k = app.store, app.store.r, app.keys
        names = [f"@worker:w{i}" for i in range(n)]
        for i in range(0, n, 10_000):
            r.sadd(k.queues, *names[i : i + 10_000])
        t0 = time.perf_counter()
        store.queues()
        print(f"queues view, {r.scard(k.queues)} queues: {time.perf_counter() - t0:.2f} s")
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            tick(store, now=T, gone_ms=300_000)
            times.append(time.perf_counter() - t0)
        times.sort()
        print(
            f"tick, {n} queues registered: median {times[10] * 1000:.1f} ms, max "
            f"{times[-1] * 1000:.1f} ms; registry now {r.scard(k.queues)}"
        )
        ticks = 20
        while r.scard(k.queues) and ticks < 10 * n:
            tick(store, now=T, gone_ms=300_000)
            ticks += 1
        t0 = time.perf_counter()
        store.queues()
        print(
            f"after {ticks} ticks: registry {r.scard(k.queues)}, queues view "
            f"{(time.perf_counter() - t0) * 1000:.1f} ms"
        )
        r.flushall()
        jobs = 20_000
        t0 = time.perf_counter()
        for i in range(0, jobs, 100):
            store.submit([JobSpec(f"j{i + j}", "t", "default", b"[[],{}]") for j in range(100)])
        t1 = time.perf_counter()
        done = 0
        while done < jobs:
            got = store.claim("w", ["default"], 100, 30_000)
            store.report([Outcome(c, ok=True, result=b"[1]") for c in got])
            done += len(got)
        t2 = time.perf_counter()
        print(f"{jobs} jobs: submit {t1 - t0:.2f} s, claim+complete {t2 - t1:.2f} s")
        app.close()
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
