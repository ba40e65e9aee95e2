"""The "bare limit": redis-py (the client jobq uses, with hiredis) sending one LPUSH per round
trip from one process, N times. The enqueue target is >= 90% of this figure.

Run with the project's venv python: `python bare_bench.py redis://127.0.0.1:PORT --n 20000`.
"""

from __future__ import annotations

import argparse
import json
import time

import redis
from _common import redis_base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--workloads", default="")  # accepted for a uniform command line
    p.add_argument("--sleep-n", type=int, default=0)
    p.add_argument("--lat-n", type=int, default=0)
    p.add_argument("--variant", default="")
    a = p.parse_args()
    r = redis.Redis.from_url(redis_base(a.url) + "/0")
    r.flushall()
    payload = b"x" * 100  # about the size of a small job message
    r.lpush("bare:warmup", payload)
    t0 = time.perf_counter()
    for _ in range(a.n):
        r.lpush("bare:q", payload)
    dt = time.perf_counter() - t0
    n = int(r.llen("bare:q"))
    r.flushall()
    out = {
        "peer": "bare",
        "version": f"redis-py {redis.__version__}",
        "config": "one LPUSH per round trip, one process",
        "ok": n == a.n,
        "errors": [] if n == a.n else [f"{n}/{a.n} pushed"],
        "bare": {"ok": n == a.n, "enqueue_rate": a.n / dt},
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
