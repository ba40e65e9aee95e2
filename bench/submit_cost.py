"""What a batched submit costs: client wall time and Valkey CPU per job, on a private server.

Submits N jobs in one `Store.submit` call (streamed as enqueue calls of 500 jobs, as `map`
does), R times on an emptied server, and prints the best and median of: jobs/s (wall, client
side: building rows, packing, the round trip), Valkey CPU per job (INFO cpu, user + sys) and
FCALL time per job (INFO commandstats). `--options` picks the jobs: `none` (every option at its
default), `task` (attempts and a timeout, as a task declared with retries and a timeout
submits), `some` (priority, attempts, timeout, a unique key), `all` (every option, parents
included). Server CPU is the figure to compare between versions on a shared
machine: wall time also counts whatever else runs.

    .venv/bin/python bench/submit_cost.py --n 20000 --repeat 7 --options none
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from valkey_server import start_valkey  # noqa: E402

from jobq.keys import Keys  # noqa: E402
from jobq.model import JobSpec  # noqa: E402
from jobq.store import Store  # noqa: E402

PAYLOAD = b"[[1,2],{}]"


def specs(n: int, options: str, run: int) -> list[JobSpec]:
    out = []
    for i in range(n):
        jid = f"r{run}-{i}"
        if options == "none":
            out.append(JobSpec(jid, "add", "default", PAYLOAD))
        elif options == "task":  # what a task declared with retries and a timeout submits
            out.append(JobSpec(jid, "add", "default", PAYLOAD, max_attempts=4, timeout_ms=30_000))
        elif options == "some":
            out.append(
                JobSpec(
                    jid,
                    "add",
                    "default",
                    PAYLOAD,
                    priority=i % 3,
                    max_attempts=3,
                    timeout_ms=30_000,
                    unique_key=f"u{run}-{i}",
                )
            )
        else:
            parents = (f"r{run}-{i - 1}",) if i else ()
            out.append(
                JobSpec(
                    jid,
                    "add",
                    "default",
                    PAYLOAD,
                    priority=2,
                    max_attempts=3,
                    timeout_ms=30_000,
                    backoff_ms=500,
                    result_ttl_s=600,
                    delay_ms=0,
                    parents=parents,
                    pass_results="one" if parents else "",
                    unique_key=f"u{run}-{i}",
                    concurrency_key="ck",
                    concurrency_limit=4,
                    fallback_queue="fb",
                )
            )
    return out


def cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def fcall_usec(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_fcall", {}).get("usec", 0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--options", choices=["none", "task", "some", "all"], default="none")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="jobq-bench-"))
    server, url = start_valkey(tmp)
    r = redis.Redis.from_url(url)
    store = Store(redis.Redis.from_url(url), url, Keys("bench"))
    rate, cpu, fcall = [], [], []
    try:
        store.submit(specs(100, args.options, -1))  # load the library, warm the connection
        for run in range(args.repeat):
            r.flushall()
            jobs = specs(args.n, args.options, run)
            r.config_resetstat()
            c0 = cpu_s(r)
            t = time.perf_counter()
            created = store.submit(jobs)
            wall = time.perf_counter() - t
            c1 = cpu_s(r)
            assert all(created), "every job must be created"
            rate.append(args.n / wall)
            cpu.append((c1 - c0) / args.n * 1e6)
            fcall.append(fcall_usec(r) / args.n)
    finally:
        store.close()
        r.close()
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "n": args.n,
        "options": args.options,
        "jobs_per_s_best": max(rate),
        "jobs_per_s_median": statistics.median(rate),
        "server_cpu_us_per_job_best": min(cpu),
        "server_cpu_us_per_job_median": statistics.median(cpu),
        "fcall_us_per_job_best": min(fcall),
        "fcall_us_per_job_median": statistics.median(fcall),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:32} {v:,.2f}" if isinstance(v, float) else f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
