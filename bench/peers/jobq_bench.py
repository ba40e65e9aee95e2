"""jobq driver: same workloads and JSON as the peers, plus batch submit (`Task.map`).

Workers: 2 x `jobq worker jobq_bench:app --url URL --prefix P -c C --pool thread`
(C = 1 for no-ops and latency, 32 for the sleep workload), started from the project's venv.
`--variant` picks another worker layout for the throughput classes of compare.py:

- ``process2``: one `jobq worker --pool process -c 2` (2 process slots, as huey `-k process
  -w 2` or celery prefork `-c 2`);
- ``thread2``: one `jobq worker --pool thread -c 2` (the same slots in threads: the process
  pool's overhead is the ratio of the two);
- ``io``: 2 x `jobq worker --pool thread -c 8` (2 processes x 8 threads, as dramatiq `-p 2 -t 8`).

Run with .venv/bin/python (the project's own venv).
"""

from __future__ import annotations

import os
import time
from typing import Any

from _common import IO_CONCURRENCY, Driver, ServerCost, bench_url, main

from jobq import App

BASE = bench_url()
PREFIX = os.environ.get("JOBQ_PREFIX", "benchq")
MAP_BATCH = 1000

app = App(f"{BASE}/0", prefix=PREFIX)


@app.task()
def noop() -> None:
    return None


@app.task()
def sleep10() -> None:
    time.sleep(0.01)


# variant -> (worker processes, pool, slots per process for no-ops and latency)
VARIANTS: dict[str, tuple[int, str, int]] = {
    "": (2, "thread", 1),
    "process2": (1, "process", 2),
    "thread2": (1, "thread", 2),
    "io": (2, "thread", 8),
}


class JobqDriver(Driver):
    name = "jobq"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.env["JOBQ_PREFIX"] = PREFIX
        self.env["JOBQ_URL"] = f"{BASE}/0"
        if self.args.variant not in VARIANTS:
            raise SystemExit(f"unknown jobq variant {self.args.variant!r}")
        self.procs, self.pool, self.slots = VARIANTS[self.args.variant]
        if self.args.variant:
            self.name = f"jobq_{self.args.variant}"

    def version(self) -> str:
        import jobq

        return str(jobq.__version__)

    def config(self) -> str:
        return (
            f"{self.procs} x `jobq worker --pool {self.pool} -c {self.slots}` (noop, latency), "
            f"`--pool thread -c {IO_CONCURRENCY}` (sleep); results stored, events, leases and "
            "heartbeats on"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        c = IO_CONCURRENCY if kind == "sleep" else self.slots
        pool = "thread" if kind == "sleep" else self.pool
        cmd = [
            str(self.bin / "jobq"),
            "worker",
            "jobq_bench:app",
            "--url",
            f"{BASE}/0",
            "--prefix",
            PREFIX,
            "-c",
            str(c),
            "--pool",
            pool,
        ]
        return [list(cmd) for _ in range(2 if kind == "sleep" else self.procs)]

    def enqueue(self, kind: str, n: int) -> None:
        task = noop if kind == "noop" else sleep10
        for _ in range(n):
            task.submit()

    def count_done(self) -> int:
        return sum(q.succeeded for q in app.queue_info())

    def latency(self, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            noop.submit().result(timeout=timeout)
            out.append(time.perf_counter() - t0)
        return out

    def before_samples(self) -> dict[str, Any]:
        """The bare-RPC floor again, right before jobq's own samples: bare_bench measures it
        at the start of each repetition, minutes away, when the shared machine's load may
        differ; this one sees the load jobq's samples see (its ratios are the Targets')."""
        from bare_bench import rpc_floor

        try:
            return {"floor": rpc_floor(self.r, f"{BASE}/0", self.args.lat_n, self.cost)}
        except Exception as e:  # the floor is context: never fail jobq's own run for it
            return {"floor": {"ok": False, "error": repr(e)}}

    def extra(self) -> dict[str, Any]:
        """Batch submit: `noop.map` in batches of MAP_BATCH, no worker running."""
        n = self.args.n
        self.flush()
        s0 = self.cost.snap()
        t0 = time.perf_counter()
        done = 0
        while done < n:
            k = min(MAP_BATCH, n - done)
            jobs = noop.map([() for _ in range(k)])
            assert len(jobs) == k
            done += k
        dt = time.perf_counter() - t0
        cpu, cmds = self.cost.delta(s0, self.cost.snap())
        queued = sum(q.queued for q in app.queue_info())
        self.flush()
        out = {
            "map": {
                "ok": queued == n,
                "rate": n / dt,
                "batch": MAP_BATCH,
                "queued": queued,
                "cost": ServerCost.per_job(cpu, cmds, n),
            }
        }
        out["submit_vs_lpush"] = self.submit_vs_lpush(n)
        return out

    def submit_vs_lpush(self, n: int, rounds: int = 10) -> dict[str, Any]:
        """One submit per call against one bare LPUSH per round trip, interleaved in rounds in
        this one process, so that both see the same machine load (separate runs minutes apart
        do not: the load of a shared machine moves the bare figure by 2-3x)."""
        self.flush()
        k = max(1, n // (2 * rounds))
        payload = b"x" * 100  # as bare_bench.py
        t_push = t_submit = 0.0
        noop.submit()  # warm: library loaded, connection up
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(k):
                self.r.lpush("bare:q", payload)
            t1 = time.perf_counter()
            for _ in range(k):
                noop.submit()
            t_push, t_submit = t_push + t1 - t0, t_submit + time.perf_counter() - t1
        self.flush()
        jobs = rounds * k
        return {
            "ok": True,
            "lpush_rate": jobs / t_push,
            "submit_rate": jobs / t_submit,
            "ratio": t_push / t_submit,
            "jobs": jobs,
        }


if __name__ == "__main__":
    import jobq_bench

    main(jobq_bench.JobqDriver)
