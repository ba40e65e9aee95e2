"""Huey driver: RedisHuey (blocking BRPOP reads, results stored, notify_result=True so that
`Result.get(blocking=True)` waits on BLPOP instead of polling).

noop/latency: `huey_consumer huey_bench.huey -k process -w 2` (2 worker processes);
sleep: 2 x `huey_consumer -k thread -w 32` (2 processes, 32 threads each).
`--variant thread8`: 2 x `-k thread -w 8` for no-ops (the "2 processes x 8 threads" class).
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

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.thread8 = self.args.variant == "thread8"
        if self.args.variant:
            self.name = f"huey_{self.args.variant}"

    def version(self) -> str:
        return version("huey")

    def config(self) -> str:
        noop = (
            "2 x `huey_consumer -k thread -w 8`"
            if self.thread8
            else "`huey_consumer -k process -w 2`"
        )
        return (
            f"{noop} (noop, latency); 2 x `-k thread -w "
            f"{IO_CONCURRENCY}` (sleep); store_none, notify_result"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        base = [str(self.bin / "huey_consumer"), "huey_bench.huey", "-q"]
        if kind == "sleep" or self.thread8:
            w = IO_CONCURRENCY if kind == "sleep" else 8
            return [[*base, "-k", "thread", "-w", str(w)] for _ in range(2)]
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
