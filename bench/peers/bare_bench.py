"""The bare limits, with redis-py (the client jobq uses, with hiredis), in the project's venv:

- **bare LPUSH**: one LPUSH of a 100-byte value per round trip from one process, N times. The
  enqueue target is >= 90% of this figure.
- **bare-RPC floor**: the least a submit -> result over Valkey can cost. A client LPUSHes a
  request onto one list and BRPOPs the reply from another; a worker process (started here, same
  interpreter) BRPOPs the request and LPUSHes the reply. Timed from before the LPUSH to the reply
  in hand, `--lat-n` times one at a time after a warm-up, like every queue's latency workload:
  jobq's submit -> result is reported as a ratio to its p50 and p99.

Both are read with the harness's server cost readings (Valkey CPU and commands per push / per
RPC), so a queue's figures can be set against the least the server can do per job.

Run with the project's venv python: `python bare_bench.py redis://127.0.0.1:PORT --n 20000`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import redis
from _common import ServerCost, percentile, redis_base

# The echo worker: its own process, as a queue's worker is. It leaves on b"stop" or after
# 30 s without a request (so a crashed driver cannot leave it behind).
ECHO = """
import sys, redis
r = redis.Redis.from_url(sys.argv[1])
r.lpush("bare:ready", 1)
while True:
    m = r.brpop("bare:req", 30)
    if m is None or m[1] == b"stop":
        break
    r.lpush("bare:rep", m[1])
"""


def lpush_rate(r: redis.Redis, n: int, cost: ServerCost) -> dict[str, Any]:
    payload = b"x" * 100  # about the size of a small job message
    r.lpush("bare:warmup", payload)
    s0 = cost.snap()
    t0 = time.perf_counter()
    for _ in range(n):
        r.lpush("bare:q", payload)
    dt = time.perf_counter() - t0
    cpu, cmds = cost.delta(s0, cost.snap())
    pushed = int(r.llen("bare:q"))
    return {
        "ok": pushed == n,
        "enqueue_rate": n / dt,
        "cost": ServerCost.per_job(cpu, cmds, n),
        **({} if pushed == n else {"error": f"{pushed}/{n} pushed"}),
    }


def rpc_floor(r: redis.Redis, url: str, n: int, cost: ServerCost) -> dict[str, Any]:
    worker = subprocess.Popen([sys.executable, "-c", ECHO, url], stdin=subprocess.DEVNULL)
    try:
        if r.brpop(["bare:ready"], 30) is None:
            return {"ok": False, "error": "echo worker did not start"}

        def rpc(i: int) -> float:
            t0 = time.perf_counter()
            r.lpush("bare:req", i)
            if r.brpop(["bare:rep"], 10) is None:
                raise TimeoutError("no reply from the echo worker")
            return time.perf_counter() - t0

        for i in range(21):  # warm-up, as the queues' latency workload
            rpc(i)
        time.sleep(0.5)
        s0 = cost.snap()
        samples = [rpc(i) for i in range(n)]
        cpu, cmds = cost.delta(s0, cost.snap())
        r.lpush("bare:req", "stop")
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return {
        "ok": len(samples) == n,
        "p50": percentile(samples, 50) * 1e3,
        "p95": percentile(samples, 95) * 1e3,
        "p99": percentile(samples, 99) * 1e3,
        "cost": ServerCost.per_job(cpu, cmds, n),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--lat-n", type=int, default=300)
    p.add_argument("--workloads", default="")  # accepted for a uniform command line
    p.add_argument("--sleep-n", type=int, default=0)
    p.add_argument("--variant", default="")
    a = p.parse_args()
    url = redis_base(a.url) + "/0"
    r = redis.Redis.from_url(url)
    cost = ServerCost(r)
    r.flushall()
    out: dict[str, Any] = {
        "peer": "bare",
        "version": f"redis-py {redis.__version__}",
        "config": "LPUSH: one per round trip, one process; RPC floor: client LPUSH + BRPOP, "
        "a worker process BRPOP + LPUSH, one request at a time",
        "errors": [],
    }
    out["bare"] = lpush_rate(r, a.n, cost)
    r.flushall()
    try:
        out["floor"] = rpc_floor(r, url, max(1, a.lat_n), cost)
    except Exception as e:
        out["floor"] = {"ok": False, "error": repr(e)}
    r.flushall()
    for k in ("bare", "floor"):
        if not out[k].get("ok"):
            out["errors"].append(f"{k}: {out[k].get('error', 'failed')}")
    out["ok"] = not out["errors"]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
