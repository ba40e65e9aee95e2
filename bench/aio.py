"""The asyncio API beside the sync one, in the same run on the same private Valkey.

Measures, each repetition interleaving the two flavours (medians over `--reps`):

- **enqueue**: N no-op submits from one producer, no worker running: `noop.submit()` in a loop
  (sync), `await noop.asubmit()` one at a time (async, sequential), and N asubmits with
  `--inflight` of them in flight (async, concurrent);
- **latency**: with 2 idle `jobq worker` processes, L jobs one at a time, timed from before the
  submit to the result in hand: `noop.submit().result()` vs
  `await (await noop.asubmit()).aresult()`;
- **in flight**: M jobs submitted and waited for with `--inflight` at a time: that many
  coroutines on one event loop (async) vs that many threads each calling submit + result
  (sync): jobs/s, per-job p50/p99, and the threads the producer process used.

    .venv/bin/python bench/aio.py                  # 3 repetitions, prints a table
    .venv/bin/python bench/aio.py --write-docs     # and writes docs/benchmarks-aio.md
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from valkey_server import start_valkey, stop_workers, use_server

from jobq.aio import EXECUTOR_THREADS
from jobq.aio_wait import LANES

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks-aio.md"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Peak:
    """The most threads the process ran at once while sampling (every 5 ms, in a thread)."""

    def __init__(self) -> None:
        self.most = threading.active_count()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.most = max(self.most, threading.active_count())

    def __enter__(self) -> Peak:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.most -= 1  # the sampler itself


def one_rep(args: argparse.Namespace, url: str, env: dict[str, str]) -> dict[str, float]:
    from bench_tasks import app, noop

    out: dict[str, float] = {}
    n, lat_n, m, c = args.n, args.latency_n, args.m, args.inflight

    # -- enqueue, no worker ------------------------------------------------------------------
    out["enqueue_sync"] = n / timed(lambda: [noop.submit() for _ in range(n)])

    async def seq() -> None:
        for _ in range(n):
            await noop.asubmit()

    async def conc() -> None:
        sem = asyncio.Semaphore(c)

        async def one() -> None:
            async with sem:
                await noop.asubmit()

        await asyncio.gather(*(one() for _ in range(n)))

    async def enqueue() -> tuple[float, float]:
        await noop.asubmit()  # executor made
        return n / await timed_coro(seq()), n / await timed_coro(conc())

    out["enqueue_async_seq"], out["enqueue_async_inflight"] = asyncio.run(enqueue())
    app.store.purge("default")

    # -- workers on --------------------------------------------------------------------------
    cmd = [sys.executable, "-m", "jobq", "worker", "bench_tasks:app", "-c", "8"]
    workers = [subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        for _ in range(20):  # warm: both workers serving
            noop.submit().result(timeout=60)

        lat_sync: list[float] = []
        for _ in range(lat_n):
            t = time.perf_counter()
            noop.submit().result(timeout=30)
            lat_sync.append((time.perf_counter() - t) * 1000)

        async def lat_async() -> list[float]:
            got = []
            for _ in range(lat_n):
                t = time.perf_counter()
                await (await noop.asubmit()).aresult(timeout=30)
                got.append((time.perf_counter() - t) * 1000)
            return got

        lat_a = asyncio.run(lat_async())
        out["latency_sync_p50"], out["latency_sync_p99"] = (
            statistics.median(lat_sync),
            pct(lat_sync, 99),
        )
        out["latency_async_p50"], out["latency_async_p99"] = (
            statistics.median(lat_a),
            pct(lat_a, 99),
        )

        # -- M jobs, `c` in flight: threads vs coroutines --------------------------------
        def sync_job() -> float:
            t = time.perf_counter()
            noop.submit().result(timeout=60)
            return (time.perf_counter() - t) * 1000

        with Peak() as peak_sync, concurrent.futures.ThreadPoolExecutor(c) as pool:
            t = time.perf_counter()
            per = list(pool.map(lambda _: sync_job(), range(m)))
            wall = time.perf_counter() - t
        out["inflight_sync_per_s"] = m / wall
        out["inflight_sync_p50"], out["inflight_sync_p99"] = statistics.median(per), pct(per, 99)
        out["inflight_sync_threads"] = float(peak_sync.most)

        async def inflight() -> tuple[float, list[float]]:
            sem = asyncio.Semaphore(c)

            async def one() -> float:
                async with sem:
                    t = time.perf_counter()
                    await (await noop.asubmit()).aresult(timeout=60)
                    return (time.perf_counter() - t) * 1000

            t = time.perf_counter()
            got = await asyncio.gather(*(one() for _ in range(m)))
            return time.perf_counter() - t, list(got)

        with Peak() as peak_async:
            wall, per = asyncio.run(inflight())
        out["inflight_async_per_s"] = m / wall
        out["inflight_async_p50"], out["inflight_async_p99"] = statistics.median(per), pct(per, 99)
        out["inflight_async_threads"] = float(peak_async.most)
    finally:
        stop_workers(workers)
        app.close()
    return out


async def timed_coro(coro: Any) -> float:
    t = time.perf_counter()
    await coro
    return time.perf_counter() - t


ROWS = [
    ("enqueue, one producer (jobs/s)", "enqueue_sync", "enqueue_async_seq", "rate"),
    ("enqueue, async with N in flight (jobs/s)", "enqueue_sync", "enqueue_async_inflight", "rate"),
    ("submit -> result latency p50 (ms)", "latency_sync_p50", "latency_async_p50", "time"),
    ("submit -> result latency p99 (ms)", "latency_sync_p99", "latency_async_p99", "time"),
    ("N in flight: jobs/s", "inflight_sync_per_s", "inflight_async_per_s", "rate"),
    ("N in flight: per-job p50 (ms)", "inflight_sync_p50", "inflight_async_p50", "time"),
    ("N in flight: per-job p99 (ms)", "inflight_sync_p99", "inflight_async_p99", "time"),
    ("N in flight: producer threads", "inflight_sync_threads", "inflight_async_threads", "time"),
]


def table(med: dict[str, float], inflight: int) -> str:
    lines = [
        "| measure | sync | async | async / sync |",
        "|---|---:|---:|---:|",
    ]
    for label, s, a, _kind in ROWS:
        ratio = med[a] / med[s] if med[s] else float("nan")
        name = label.replace("N in flight", f"{inflight} in flight").replace(
            "with N", f"with {inflight}"
        )
        lines.append(f"| {name} | {med[s]:,.1f} | {med[a]:,.1f} | {ratio:.2f}x |")
    return "\n".join(lines)


def page(med: dict[str, float], args: argparse.Namespace, load: str) -> str:
    cpu = os.cpu_count()
    return f"""# The asyncio API beside the sync API

Measured by `bench/aio.py` (`make aio-bench`): one private Valkey (the embedded binary on a
loopback port, no persistence), one producer process, 2 `jobq worker` processes
(`--pool thread -c 8`) for the latency and in-flight parts; both flavours in every repetition,
medians of {args.reps}. Machine: {cpu} CPUs, Python {platform.python_version()}, load average
{load} during the run (a shared machine: compare the two columns of one run, not runs).
N = {args.n:,} submits, L = {args.latency_n} latency samples, M = {args.m:,} in-flight jobs.

{table(med, args.inflight)}

How to read it:

- **enqueue, one producer**: the same `submit` runs on the App's executor thread; awaiting
  each one in turn pays a hand-off to that thread and back per job on top of the round trip.
- **enqueue with {args.inflight} in flight**: plain submits (no options) that arrive while
  one is on the wire go out together as one `submit_many` (one round trip per batch), on the
  executor's {EXECUTOR_THREADS} threads.
- **latency**: a job at a time with idle workers. The async wait is registered from the
  executor and waited for by the App's listener threads (one BLPOP over the done lists of all
  their pending results) instead of the calling thread, which then hands the outcome to the
  loop: a few thread hops more than the sync BLPOP.
- **{args.inflight} in flight**: the sync side needs {args.inflight} threads (one blocked per
  pending result); the async side serves every pending result from {LANES} listener threads
  per partition and the small executor, on one event loop. A listener pops one outcome per
  round trip, so with many results flowing the async side trades throughput for threads.

Re-run with `make aio-bench` (writes this page); `.venv/bin/python bench/aio.py --json` prints
the medians as one JSON line.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="submits per enqueue measurement")
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--m", type=int, default=3000, help="jobs of the in-flight measurement")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the medians as one JSON line")
    ap.add_argument("--write-docs", action="store_true", help=f"write {DOCS.name} in docs/")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="jobq-bench-aio-"))
    server, url = start_valkey(tmp)
    prefix = "benchaio"
    env = use_server(url, prefix, HERE)
    reps: list[dict[str, float]] = []
    loads = [os.getloadavg()[0]]
    try:
        for i in range(args.reps):
            got = one_rep(args, url, env)
            print(f"rep {i + 1}/{args.reps}: {json.dumps(got)}", file=sys.stderr)
            reps.append(got)
            loads.append(os.getloadavg()[0])
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
    if args.json:
        print(json.dumps(med))
    else:
        print(table(med, args.inflight))
    if args.write_docs:
        DOCS.write_text(page(med, args, f"{min(loads):.1f} to {max(loads):.1f}"))
        print(f"wrote {DOCS.relative_to(HERE.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
