"""Huey driver: RedisHuey (blocking BRPOP reads, results stored, notify_result=True so that
`Result.get(blocking=True)` waits on BLPOP instead of polling).

noop/latency: `huey_consumer huey_bench.huey -k process -w 2` (2 worker processes);
sleep: 2 x `huey_consumer -k thread -w 32` (2 processes, 32 threads each).
Run with bench/.venvs/huey/bin/python.
"""

from __future__ import annotations

import time
from importlib.metadata import version

from _common import IO_CONCURRENCY, Driver, bench_url, main
from huey import RedisHuey

BASE = bench_url()

huey = RedisHuey("bench", url=f"{BASE}/0", store_none=True, notify_result=True)


@huey.task(name="noop")
def noop() -> None:
    return None


@huey.task(name="sleep10")
def sleep10() -> None:
    time.sleep(0.01)


class HueyDriver(Driver):
    name = "huey"

    def version(self) -> str:
        return version("huey")

    def config(self) -> str:
        return (
            f"`huey_consumer -k process -w 2` (noop, latency); 2 x `-k thread -w "
            f"{IO_CONCURRENCY}` (sleep); store_none, notify_result"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        base = [str(self.bin / "huey_consumer"), "huey_bench.huey", "-q"]
        if kind == "sleep":
            return [[*base, "-k", "thread", "-w", str(IO_CONCURRENCY)] for _ in range(2)]
        return [[*base, "-k", "process", "-w", "2"]]

    def enqueue(self, kind: str, n: int) -> None:
        task = noop if kind == "noop" else sleep10
        for _ in range(n):
            task()

    def count_done(self) -> int:
        return int(self.r.hlen("huey.results.bench"))

    def latency(self, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            noop().get(blocking=True, timeout=timeout)
            out.append(time.perf_counter() - t0)
        return out


if __name__ == "__main__":
    import huey_bench

    main(huey_bench.HueyDriver)
