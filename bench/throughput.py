"""Throughput and latency of jobq as users run it: a private Valkey, 2 `jobq worker` processes.

Prints the enqueue rate (one submit per call from one producer), the batch submit rate (`map`),
the processing rate of N no-op jobs (verified by count: every job must end `succeeded`), and
submit->result latency p50/p99 with idle workers. Results stored, events written, leases and
heartbeats on: nothing is switched off for the benchmark.

    .venv/bin/python bench/throughput.py --n 20000 --pool thread -c 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from valkey_server import start_valkey, use_server

HERE = Path(__file__).resolve().parent


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="no-op jobs for the processing run")
    ap.add_argument("--latency-n", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool", default="thread", choices=["thread", "process", "async"])
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="jobq-bench-"))
    server, url = start_valkey(tmp)
    prefix = "bench"
    env = use_server(url, prefix, HERE)
    from bench_tasks import app, noop  # imported late: it reads the env set above

    r = redis.Redis.from_url(url)
    out: dict[str, object] = {
        "n": args.n,
        "workers": args.workers,
        "pool": args.pool,
        "concurrency": args.concurrency,
    }
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # Bare limit: the same client library, one LPUSH per round trip.
        t = time.perf_counter()
        for i in range(args.n):
            r.lpush("bare", i)
        out["bare_lpush_per_s"] = args.n / (time.perf_counter() - t)
        r.delete("bare")

        # Enqueue rate, one submit per call, no worker running.
        t = time.perf_counter()
        jobs = [noop.submit() for _ in range(args.n)]
        out["enqueue_per_s"] = args.n / (time.perf_counter() - t)

        mem0 = r.info("memory")["used_memory"]
        cmd = [
            sys.executable,
            "-m",
            "jobq",
            "worker",
            "bench_tasks:app",
            "--pool",
            args.pool,
            "-c",
            str(args.concurrency),
        ]
        if args.prefetch is not None:
            cmd += ["--prefetch", str(args.prefetch)]
        workers = [
            subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL) for _ in range(args.workers)
        ]
        t = time.perf_counter()
        # Wait for the last job: the queue is FIFO, so its result arrives last.
        jobs[-1].result(timeout=600)
        deadline = time.time() + 120
        while True:
            info = {q.name: q for q in app.queue_info()}["default"]
            if info.succeeded >= args.n or time.time() > deadline:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - t
        out["process_per_s"] = args.n / elapsed
        out["verified_succeeded"] = info.succeeded
        out["ok"] = info.succeeded == args.n and info.failed == 0
        del mem0

        # Batch submit (map), workers busy processing them afterwards.
        t = time.perf_counter()
        batch = noop.map([() for _ in range(args.n)])
        out["map_per_s"] = args.n / (time.perf_counter() - t)
        batch[-1].result(timeout=600)

        # Latency: one job at a time with idle workers.
        time.sleep(0.5)
        lat = []
        for _ in range(args.latency_n):
            t = time.perf_counter()
            noop.submit().result(timeout=10)
            lat.append((time.perf_counter() - t) * 1000)
        out["latency_ms_p50"] = statistics.median(lat)
        out["latency_ms_p99"] = pct(lat, 99)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v:,.1f}" if isinstance(v, float) else f"{k:>22}: {v}")
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
