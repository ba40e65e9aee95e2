"""arq driver: `arq arq_bench.WorkerSettings`, started twice (2 processes).

max_jobs is arq's default (10) for no-ops and 32 for the sleep workload. arq polls its queue
when idle (default poll_delay 0.5 s) and `Job.result()` polls too (default 0.5 s): both are
tuned down here (worker 2 ms, client 1 ms) to give arq its best latency.
Run with bench/.venvs/arq/bin/python.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from importlib.metadata import version
from typing import Any, ClassVar

from _common import IO_CONCURRENCY, Driver, bench_url, main
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

BASE = bench_url()
KIND = os.environ.get("BENCH_KIND", "noop")


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def sleep10(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(0.01)


async def startup(ctx: dict[str, Any]) -> None:
    logging.getLogger("arq").setLevel(logging.WARNING)  # no log line per job


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop, sleep10]
    redis_settings = RedisSettings.from_dsn(f"{BASE}/0")
    max_jobs = IO_CONCURRENCY if KIND == "sleep" else 10
    poll_delay = 0.002
    on_startup = startup
    handle_signals = True


class ArqDriver(Driver):
    name = "arq"
    poll_interval = 0.02  # counting result keys is O(N)

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.pool: ArqRedis = self.loop.run_until_complete(
            create_pool(RedisSettings.from_dsn(f"{BASE}/0"))
        )
        self._count = self.r.register_script("return #redis.call('keys', 'arq:result:*')")

    def version(self) -> str:
        return version("arq")

    def config(self) -> str:
        return (
            f"2 x `arq`, max_jobs 10 (noop) / {IO_CONCURRENCY} (sleep), "
            "poll_delay 2 ms, result poll 1 ms"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        return [[str(self.bin / "arq"), "arq_bench.WorkerSettings"] for _ in range(2)]

    def enqueue(self, kind: str, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await self.pool.enqueue_job(kind if kind == "noop" else "sleep10")

        self.loop.run_until_complete(go())

    def count_done(self) -> int:
        return int(self._count())  # type: ignore[arg-type]

    def latency(self, n: int, timeout: float) -> list[float]:
        async def go() -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                job = await self.pool.enqueue_job("noop")
                assert job is not None
                await job.result(timeout=timeout, poll_delay=0.001)
                out.append(time.perf_counter() - t0)
            return out

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())


if __name__ == "__main__":
    import arq_bench

    main(arq_bench.ArqDriver)
