"""What a dependency across partitions costs, next to one inside a partition (handoff.py).

N parent -> child pairs, three ways, on one private server (three partitions on one client,
as a one-server deployment of three partitions runs):

* local: parent and child in partition 0 (the direct path: children set, settle releases);
* cross: parent in partition 0, child in partition 1 (link, enqueue with remote parents, the
  parent's settle appends a hand-off, deliver_pending applies it, and delivers it again after
  the grace, as it does for a partition that confirms no replica).

Per phase: wall time and the server's CPU time (INFO cpu, user + sys) per pair. Prints a
Markdown table. Usage: ``.venv/bin/python bench/handoff.py [--n 2000]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from valkey_server import start_valkey

from jobq.handoff import deliver_pending, submit
from jobq.keys import Keys
from jobq.model import JobSpec, Outcome
from jobq.store import Store, connect

EMPTY = b"[[],{}]"


def cpu_s(store: Store) -> float:
    info = store.r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(store: Store, fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, server CPU s) of fn()."""
    c0, t0 = cpu_s(store), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_s(store) - c0


def finish_parents(store: Store, n: int) -> None:
    left = n
    while left:
        got = store.claim("w", ["par"], min(left, 500), 60_000)
        store.report([Outcome(c, ok=True, result=orjson.dumps([1])) for c in got])
        left -= len(got)


def run(url: str, n: int, cross: bool) -> dict[str, tuple[float, float]]:
    prefix = "b" + uuid.uuid4().hex[:8]
    client = connect(url)
    parts = [Store(client, url, Keys(prefix, "" if i == 0 else f"{prefix}.{i}")) for i in range(3)]
    kid_part = 1 if cross else 0
    parents = [JobSpec(f"p{i}", "t", "par", EMPTY) for i in range(n)]
    kids = [
        JobSpec(f"k{i}", "t", "kid", EMPTY, parents=(f"p{i}",), pass_results="one")
        for i in range(n)
    ]
    out: dict[str, tuple[float, float]] = {}
    placed = [(0, p) for p in parents] + [(kid_part, k) for k in kids]
    out["submit"] = measure(parts[0], lambda: submit(parts, placed))
    out["settle parents"] = measure(parts[0], lambda: finish_parents(parts[0], n))
    out["deliver"] = measure(parts[0], lambda: deliver_pending(parts, limit=500))
    # The second delivery of each record, after the grace (a no-op unless a failover lost it).
    out["second delivery"] = measure(parts[0], lambda: deliver_pending(parts, 500, grace_ms=0))
    queued = int(parts[kid_part].r.zcard(parts[kid_part].keys.queue("kid")))
    assert queued == n, f"{queued} of {n} children queued"
    for s in parts:
        s.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="jobq-bench-handoff-"))
    proc, url = start_valkey(data)
    try:
        run(url, 200, True)  # warm up: library load, connections
        local, cross = run(url, args.n, False), run(url, args.n, True)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)
    print(f"N = {args.n} parent -> child pairs; per pair: wall µs / server CPU µs\n")
    print("| phase | same partition | across partitions |")
    print("|---|---|---|")
    for phase in ("submit", "settle parents", "deliver", "second delivery"):
        cells = []
        for res in (local, cross):
            wall, cpu = res[phase]
            cells.append(f"{wall / args.n * 1e6:.1f} / {cpu / args.n * 1e6:.1f}")
        print(f"| {phase} | {cells[0]} | {cells[1]} |")
    lt = sum(v[1] for v in local.values()) / args.n * 1e6
    ct = sum(v[1] for v in cross.values()) / args.n * 1e6
    print(f"\nserver CPU per pair, all phases: {lt:.1f} µs same partition, {ct:.1f} µs across")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
