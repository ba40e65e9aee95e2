"""streaq driver: `streaq run streaq_bench:worker --workers 2` (2 worker processes).

concurrency is streaq's default (16) for no-ops and 32 for the sleep workload; results are
stored (streaq always stores them) and `Task.result()` waits on pub/sub. Note: leaving
coredis' pub/sub context takes ~100 ms (measured on its own here), and `Task.result()` opens
one per call: that, not the worker, sets streaq's latency figure.
Run with bench/.venvs/streaq/bin/python.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import anyio
from _common import IO_CONCURRENCY, Driver, bench_url, main
from streaq import Worker

BASE = bench_url()
KIND = os.environ.get("BENCH_KIND", "noop")


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    logging.getLogger("streaq").setLevel(logging.WARNING)  # no log line per task
    yield None


worker = Worker(
    redis_url=f"{BASE}/0",
    concurrency=IO_CONCURRENCY if KIND == "sleep" else 16,
    lifespan=lifespan,
)


@worker.task
async def noop() -> None:
    return None


@worker.task
async def sleep10() -> None:
    await anyio.sleep(0.01)


class StreaqDriver(Driver):
    name = "streaq"

    def version(self) -> str:
        return version("streaq")

    def config(self) -> str:
        return (
            f"`streaq run --workers 2`, concurrency 16 (noop) / {IO_CONCURRENCY} (sleep); "
            "latency is dominated by ~100 ms of coredis pub/sub teardown in `Task.result()`"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        return [[str(self.bin / "streaq"), "run", "streaq_bench:worker", "--workers", "2"]]

    def enqueue(self, kind: str, n: int) -> None:
        task = noop if kind == "noop" else sleep10

        async def go() -> None:
            async with worker:
                for _ in range(n):
                    await task.enqueue()

        anyio.run(go)

    def count_done(self) -> int:
        return int(self.r.zcard("streaq:default:index:results"))

    def latency(self, n: int, timeout: float) -> list[float]:
        async def go() -> list[float]:
            out = []
            async with worker:
                for _ in range(n):
                    t0 = time.perf_counter()
                    t = await noop.enqueue()
                    res = await t.result(timeout=int(timeout))
                    if not res.success:
                        raise RuntimeError("task failed")
                    out.append(time.perf_counter() - t0)
            return out

        return anyio.run(go)


if __name__ == "__main__":
    import streaq_bench

    main(streaq_bench.StreaqDriver)
