"""taskiq driver: taskiq-redis RedisStreamBroker (db 0, the broker its README recommends,
with acknowledgements) + RedisAsyncResultBackend (db 1).

`taskiq worker taskiq_bench:broker --workers 2`: 2 worker processes, taskiq's default
max-async-tasks for no-ops and 32 for the sleep workload. `wait_result()` polls (default
every 0.2 s): the latency run polls every 1 ms to give taskiq its best figure.
Run with bench/.venvs/taskiq/bin/python.
"""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import version

from _common import IO_CONCURRENCY, Driver, bench_url, main
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

BASE = bench_url()

# consumer_id="0": the consumer group reads the stream from its start, so jobs enqueued before
# the first worker starts are not skipped (the default "$" would skip them).
broker = RedisStreamBroker(url=f"{BASE}/0", consumer_id="0").with_result_backend(
    RedisAsyncResultBackend(redis_url=f"{BASE}/1", result_ex_time=3600)
)


@broker.task(task_name="noop")
async def noop() -> None:
    return None


@broker.task(task_name="sleep10")
async def sleep10() -> None:
    await asyncio.sleep(0.01)


class TaskiqDriver(Driver):
    name = "taskiq"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.results = self.redis_db(1)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(broker.startup())

    def version(self) -> str:
        return f"{version('taskiq')} (taskiq-redis {version('taskiq-redis')})"

    def config(self) -> str:
        return (
            f"`taskiq worker --workers 2` on RedisStreamBroker, default max-async-tasks "
            f"(noop) / {IO_CONCURRENCY} (sleep); wait_result polls every 1 ms"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        cmd = [
            str(self.bin / "taskiq"),
            "worker",
            "taskiq_bench:broker",
            "--workers",
            "2",
            "--log-level",
            "WARNING",
        ]
        if kind == "sleep":
            cmd += ["--max-async-tasks", str(IO_CONCURRENCY)]
        return [cmd]

    def enqueue(self, kind: str, n: int) -> None:
        task = noop if kind == "noop" else sleep10

        async def go() -> None:
            for _ in range(n):
                await task.kiq()

        self.loop.run_until_complete(go())

    def count_done(self) -> int:
        return int(self.results.dbsize())

    def latency(self, n: int, timeout: float) -> list[float]:
        async def go() -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                t = await noop.kiq()
                res = await t.wait_result(check_interval=0.001, timeout=timeout)
                if res.is_err:
                    raise RuntimeError(str(res.error))
                out.append(time.perf_counter() - t0)
            return out

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(broker.shutdown())


if __name__ == "__main__":
    import taskiq_bench

    main(taskiq_bench.TaskiqDriver)
