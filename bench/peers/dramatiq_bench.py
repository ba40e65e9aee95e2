"""Dramatiq driver: RedisBroker (db 0), Results middleware with RedisBackend (db 1).

`dramatiq dramatiq_bench -p 2 -t T`: 2 worker processes, T threads each (8, the default, for
no-ops; 32 for the sleep workload). `--variant p2t1`: `-p 2 -t 1` for no-ops, dramatiq's
"2 process slots" (the class of jobq's `--pool process -c 2`).
Run with bench/.venvs/dramatiq/bin/python.
"""

from __future__ import annotations

import time
from importlib.metadata import version

import dramatiq
from _common import IO_CONCURRENCY, Driver, bench_url, main
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

BASE = bench_url()

backend = RedisBackend(url=f"{BASE}/1")
broker = RedisBroker(url=f"{BASE}/0")
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def noop() -> None:
    return None


@dramatiq.actor(store_results=True, max_retries=0)
def sleep10() -> None:
    time.sleep(0.01)


class DramatiqDriver(Driver):
    name = "dramatiq"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.results = self.redis_db(1)
        self.noop_threads = 1 if self.args.variant == "p2t1" else 8
        if self.args.variant:
            self.name = f"dramatiq_{self.args.variant}"

    def version(self) -> str:
        return version("dramatiq")

    def config(self) -> str:
        return (
            f"`dramatiq -p 2 -t {self.noop_threads}` (noop, latency), "
            f"`-p 2 -t {IO_CONCURRENCY}` (sleep); Results middleware stores every result"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        threads = IO_CONCURRENCY if kind == "sleep" else self.noop_threads
        return [[str(self.bin / "dramatiq"), "dramatiq_bench", "-p", "2", "-t", str(threads)]]

    def enqueue(self, kind: str, n: int) -> None:
        actor = noop if kind == "noop" else sleep10
        for _ in range(n):
            actor.send()

    def count_done(self) -> int:
        return int(self.results.dbsize())

    def latency(self, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            noop.send().get_result(block=True, timeout=int(timeout * 1000))
            out.append(time.perf_counter() - t0)
        return out


if __name__ == "__main__":
    import dramatiq_bench

    main(dramatiq_bench.DramatiqDriver)
