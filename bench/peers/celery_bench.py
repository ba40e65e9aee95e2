"""Celery driver: prefork pool, redis broker (db 0) + redis result backend (db 1).

`--variant threads8`: 2 x `celery worker -P threads -c 8` for no-ops (the "2 processes x 8
threads" class). Run with bench/.venvs/celery/bin/python; this module is also the worker's app
module (``celery -A celery_bench worker``).
"""

from __future__ import annotations

import time
from importlib.metadata import version

from _common import IO_CONCURRENCY, Driver, bench_url, main
from celery import Celery

BASE = bench_url()

app = Celery("celery_bench", broker=f"{BASE}/0", backend=f"{BASE}/1")
app.conf.update(
    worker_prefetch_multiplier=16,  # high-throughput setting for short tasks
    worker_disable_rate_limits=True,
    task_acks_late=False,  # the default: ack on receipt
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="sleep10")
def sleep10() -> None:
    time.sleep(0.01)


class CeleryDriver(Driver):
    name = "celery"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.results = self.redis_db(1)
        self.threads8 = self.args.variant == "threads8"
        if self.args.variant:
            self.name = f"celery_{self.args.variant}"

    def version(self) -> str:
        return version("celery")

    def config(self) -> str:
        noop = (
            "2 x `celery worker -P threads -c 8`"
            if self.threads8
            else "1 `celery worker -P prefork -c 2`"
        )
        return (
            f"noop/latency: {noop}, prefetch multiplier 16; "
            f"sleep: 2 x `celery worker -P threads -c {IO_CONCURRENCY}`"
        )

    def worker_cmds(self, kind: str) -> list[list[str]]:
        base = [
            str(self.bin / "celery"),
            "-A",
            "celery_bench",
            "worker",
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if kind == "sleep" or self.threads8:
            c = IO_CONCURRENCY if kind == "sleep" else 8
            return [[*base, "-P", "threads", "-c", str(c), "-n", f"w{i}@%h"] for i in range(2)]
        return [[*base, "-P", "prefork", "-c", "2", "-n", "w0@%h"]]

    def enqueue(self, kind: str, n: int) -> None:
        task = noop if kind == "noop" else sleep10
        for _ in range(n):
            task.delay()

    def count_done(self) -> int:
        return int(self.results.dbsize())  # the backend db holds one key per result

    def latency(self, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            noop.delay().get(timeout=timeout)
            out.append(time.perf_counter() - t0)
        return out


if __name__ == "__main__":
    # Import ourselves by name so that jobs reference `celery_bench.*`, never `__main__.*`.
    import celery_bench

    main(celery_bench.CeleryDriver)
