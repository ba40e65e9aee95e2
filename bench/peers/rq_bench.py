"""RQ driver: `rq worker` with the default Worker (fork per job) or SimpleWorker (--variant
simple). RQ runs one job at a time per worker process, so both workloads use 2 processes.

Run with bench/.venvs/rq/bin/python; this module also holds the job functions.
"""

from __future__ import annotations

import time
from importlib.metadata import version

from _common import Driver, bench_url, main
from redis import Redis
from rq import Queue

BASE = bench_url()
QUEUE = "bench"


def noop() -> None:
    return None


def sleep10() -> None:
    time.sleep(0.01)


class RQDriver(Driver):
    name = "rq"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.simple = self.args.variant == "simple"
        if self.simple:
            self.name = "rq_simple"
        self.q = Queue(QUEUE, connection=Redis.from_url(f"{BASE}/0"))

    def version(self) -> str:
        return version("rq")

    def config(self) -> str:
        cls = "SimpleWorker (no fork)" if self.simple else "Worker (fork per job)"
        return f"2 x `rq worker` with {cls}; RQ has no in-process concurrency"

    def worker_cmds(self, kind: str) -> list[list[str]]:
        cmd = [
            str(self.bin / "rq"),
            "worker",
            QUEUE,
            "--url",
            f"{BASE}/0",
            "--logging_level",
            "WARNING",
            "--disable-job-desc-logging",
        ]
        if self.simple:
            cmd += ["--worker-class", "rq.worker.SimpleWorker"]
        return [list(cmd) for _ in range(2)]

    def enqueue(self, kind: str, n: int) -> None:
        fn = noop if kind == "noop" else sleep10
        for _ in range(n):
            self.q.enqueue(fn)

    def count_done(self) -> int:
        return int(self.r.zcard(f"rq:finished:{QUEUE}"))

    def latency(self, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            job = self.q.enqueue(noop)
            res = job.latest_result(timeout=int(timeout))
            if res is None:
                raise TimeoutError("no result")
            out.append(time.perf_counter() - t0)
        return out


if __name__ == "__main__":
    # Import ourselves by name so that jobs reference `rq_bench.*`, never `__main__.*`.
    import rq_bench

    main(rq_bench.RQDriver)
