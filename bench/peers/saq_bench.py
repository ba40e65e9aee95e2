"""SAQ driver: `saq saq_bench.settings --workers 2` (2 worker processes).

concurrency is SAQ's default (10) for no-ops and 32 for the sleep workload.
Run with bench/.venvs/saq/bin/python.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from importlib.metadata import version
from typing import Any

from _common import IO_CONCURRENCY, Driver, bench_url, main
from saq import Queue

BASE = bench_url()
KIND = os.environ.get("BENCH_KIND", "noop")

queue = Queue.from_url(f"{BASE}/0")


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def sleep10(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(0.01)


settings: dict[str, Any] = {
    "queue": queue,
    "functions": [noop, sleep10],
    "concurrency": IO_CONCURRENCY if KIND == "sleep" else 10,
}


class SaqDriver(Driver):
    name = "saq"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.queue = Queue.from_url(f"{BASE}/0")
        self.loop.run_until_complete(self.queue.connect())
        self.n_enqueued = 0
        self.statuses: Counter[str] = Counter()

    def version(self) -> str:
        return version("saq")

    def config(self) -> str:
        return f"`saq --workers 2`, concurrency 10 (noop) / {IO_CONCURRENCY} (sleep)"

    def worker_cmds(self, kind: str) -> list[list[str]]:
        return [[str(self.bin / "saq"), "saq_bench.settings", "--workers", "2", "--quiet"]]

    def enqueue(self, kind: str, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await self.queue.enqueue(kind if kind == "noop" else "sleep10")

        self.loop.run_until_complete(go())
        self.n_enqueued = n

    def count_done(self) -> int:
        # Fast proxy while polling: jobs no longer queued/active. verify_done() checks the
        # stored status of every job once at the end.
        return self.n_enqueued - int(self.r.zcard("saq:default:incomplete"))

    def verify_done(self) -> int:
        statuses: Counter[str] = Counter()
        keys = list(self.r.scan_iter(match="saq:job:default:*", count=5000))
        for i in range(0, len(keys), 1000):
            for raw in self.r.mget(keys[i : i + 1000]):
                statuses[json.loads(raw).get("status", "?") if raw else "missing"] += 1
        statuses["missing"] += self.n_enqueued - len(keys)
        self.statuses = statuses
        return statuses["complete"]

    def failure_detail(self) -> str:
        other = {k: v for k, v in self.statuses.items() if k != "complete" and v}
        return f"; the others ended as {other}" if other else ""

    def latency(self, n: int, timeout: float) -> list[float]:
        async def go() -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                # enqueue + refresh(until_complete) waits on SAQ's pub/sub job updates;
                # Queue.apply() would poll every 0.5 s.
                job = await self.queue.enqueue("noop")
                assert job is not None
                await job.refresh(until_complete=timeout)
                if job.status != "complete":
                    raise RuntimeError(f"job ended as {job.status}")
                out.append(time.perf_counter() - t0)
            return out

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.queue.disconnect())


if __name__ == "__main__":
    import saq_bench

    main(saq_bench.SaqDriver)
