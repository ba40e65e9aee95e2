"""What durable submits cost, and how long a failover stops work: on a Sentinel group this
bench starts itself (a primary, two replicas and three Sentinels on loopback, AOF everysec, the
harness of tests/ha.py).

1. Submit cost, `wait_replicas` 0 vs 1 (``WAIT 1`` appended to every submit), modes alternating
   within each repetition, each on a fresh key prefix: single submits (one job per call, the
   latency of each) and batches (`submit_many` of `--batch` jobs, the latency of each batch),
   each phase starting with the replicas caught up.
   Medians over `--reps`; *ratio* is how many times slower (rates) or longer (latencies).
2. Failover gap, per mode: one ``jobq worker`` subprocess per mode (its own prefix, the mode's
   URL, so its outcomes wait as well) and a producer submitting one job at a time and waiting
   for its result; the primary is SIGKILLed, and the gap is the time from the kill to the first
   job submitted after it that succeeded (so it was queued on, and run from, the new primary).
   After each run the killed node is restarted and waits to be demoted to a replica; modes
   alternate, `--runs` per mode.
3. Loss window, per mode: a producer submits one job at a time while every replica is cut off
   the primary for `--cut` s, then the primary is SIGKILLed; the acknowledged jobs are looked
   up on the new primary.

    .venv/bin/python bench/ha.py [--n 2000] [--reps 5] [--runs 2] [--cut 1] [--write-docs]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from jobq import App
from jobq.errors import JobqError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks-ha.md"
sys.path.insert(0, str(HERE))  # bench_tasks, for the workers


def _harness() -> Any:
    """tests/ha.py (the Sentinel group harness), loaded by path: this file is also `ha`."""
    spec = importlib.util.spec_from_file_location("jobq_tests_ha", ROOT / "tests" / "ha.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SentinelGroup = _harness().SentinelGroup

MODES = (0, 1)  # wait_replicas
GAP_DEADLINE_S = 60  # one failover run gives up after this


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def query(wait: int) -> str:
    return f"?wait_replicas={wait}&durable_timeout_ms=2000"


def submit_cost(group: Any, wait: int, args: argparse.Namespace) -> dict[str, float]:
    """Single and batch submits in one mode on a fresh prefix. Each phase starts with the
    replicas caught up: without the wait the producer runs ahead of them, and on a small
    machine their catching up would slow whatever runs next."""
    app = App(group.url + query(wait), prefix=new_prefix())
    out: dict[str, float] = {}
    try:
        app.submit("noop")  # warm: connection, library, the wait's probe
        group.wait_synced(60)
        lat: list[float] = []
        t = time.perf_counter()
        for _ in range(args.n):
            t0 = time.perf_counter()
            app.submit("noop")
            lat.append(time.perf_counter() - t0)
        out["single_per_s"] = args.n / (time.perf_counter() - t)
        out["single_p50_ms"] = statistics.median(lat) * 1000
        out["single_p99_ms"] = pct(lat, 99) * 1000
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * args.batch
        group.wait_synced(60)
        lat = []
        t = time.perf_counter()
        for _ in range(args.n_batches):
            t0 = time.perf_counter()
            app.submit_many("noop", calls)
            lat.append(time.perf_counter() - t0)
        out["batch_per_s"] = args.n_batches * args.batch / (time.perf_counter() - t)
        out["batch_p50_ms"] = statistics.median(lat) * 1000
        out["batch_p99_ms"] = pct(lat, 99) * 1000
    finally:
        app.close()
    return out


def start_worker(url: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOBQ_URL": url,
        "JOBQ_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "jobq", "worker", "bench_tasks:app", "--pool", "thread"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ping(app: App, timeout: float) -> bool:
    """Submit one job and wait for its result; False on any jobq error (not acknowledged,
    or no result in time)."""
    try:
        app.submit("noop").result(timeout=timeout)
    except JobqError:
        return False
    return True


def failover_gap(group: Any, app: App) -> dict[str, float]:
    """One SIGKILL of the current primary under a ping loop; the node is brought back after."""
    deadline = time.monotonic() + GAP_DEADLINE_S
    while not ping(app, 5):  # the worker is following the last failover: wait until it works
        if time.monotonic() > deadline:
            raise RuntimeError(f"no job succeeded before the kill\n{group.describe()}")
    old = group.current_primary()
    done = threading.Event()
    before = 0

    def load() -> None:  # a producer + worker at work when the primary dies
        nonlocal before
        while not done.is_set() and time.monotonic() < deadline:
            if ping(app, 1):
                before += 1

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(1.0)
    group.kill(old)
    killed = time.monotonic()
    done.set()
    promoted: list[float] = []
    watcher = threading.Thread(  # when the Sentinels name the new primary, meanwhile
        target=lambda: promoted.append(group.wait_new_primary(old.addr, 30, since=killed)[1]),
        daemon=True,
    )
    watcher.start()
    loader.join(GAP_DEADLINE_S)
    errors = 0
    while True:  # every ping from here on starts after the kill
        if ping(app, 1):
            gap = time.monotonic() - killed
            break
        errors += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"no job succeeded within {GAP_DEADLINE_S}s of the kill")
        time.sleep(0.01)
    watcher.join(40)
    if not promoted:
        raise RuntimeError(f"the Sentinels named no new primary\n{group.describe()}")
    group.restart(old)
    group.wait_demoted(old, timeout=60)
    group.wait_synced(60)
    return {"gap_s": gap, "promoted_s": promoted[0], "failed_pings": errors, "before": before}


def loss_window(group: Any, wait: int, cut_s: float) -> dict[str, float]:
    """Single submits while every replica is cut off the primary for `cut_s` (so none has the
    last writes), then SIGKILL the primary: how many acknowledged jobs the new primary lacks."""
    app = App(group.url + f"?wait_replicas={wait}&durable_timeout_ms=300", prefix=new_prefix())
    acked: list[tuple[float, str]] = []  # (monotonic time acknowledged, job id)
    refused = 0
    stop = threading.Event()

    def produce() -> None:
        nonlocal refused
        i = 0
        deadline = time.monotonic() + GAP_DEADLINE_S
        while not stop.is_set() and time.monotonic() < deadline:
            i += 1
            try:
                app.submit("noop", job_id=f"l{i}")
            except JobqError:
                refused += 1
            else:
                acked.append((time.monotonic(), f"l{i}"))

    try:
        app.submit("noop")  # warm
        old, replicas = group.current_primary(), group.replicas()
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        time.sleep(0.5)
        cut_at = time.monotonic()  # writes from here on may miss the replicas
        for r in replicas:
            group.stop_replication(r)
        time.sleep(cut_s)
        stop.set()
        producer.join(GAP_DEADLINE_S)
        group.kill(old)
        for r in replicas:  # only now: before the kill they would resync from the old primary
            group.restore_replication(r)
        addr, _gap = group.wait_new_primary(old.addr, timeout=40)
        new = group.node_at(addr)
        with new.client() as c:
            pipe = c.pipeline(transaction=False)
            for _t, job_id in acked:
                pipe.exists(app.keys.job(job_id))
            there = pipe.execute()
        lost = sum(1 for x in there if not x)
        lost_before = sum(
            1 for (t, _i), x in zip(acked, there, strict=True) if not x and t < cut_at
        )
    finally:
        app.close()
    group.restart(old)
    group.wait_demoted(old, timeout=60)
    group.wait_synced(60)
    during = sum(1 for t, _i in acked if t >= cut_at)
    return {
        "acked": len(acked),
        "during": during,
        "lost": lost,
        "lost_before": lost_before,
        "refused": refused,
    }


def new_prefix() -> str:
    return f"hb{uuid.uuid4().hex[:8]}"


def fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"


COST = [
    ("single_per_s", "single submit (jobs/s)", True),
    ("single_p50_ms", "single submit p50 (ms)", False),
    ("single_p99_ms", "single submit p99 (ms)", False),
    ("batch_per_s", "batch submit (jobs/s)", True),
    ("batch_p50_ms", "batch submit p50 (ms per batch)", False),
    ("batch_p99_ms", "batch submit p99 (ms per batch)", False),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="single submits per mode and rep")
    ap.add_argument("--batch", type=int, default=100, help="jobs per submit_many call")
    ap.add_argument("--n-batches", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2, help="failovers per mode")
    ap.add_argument("--cut", type=float, default=1.0, help="s the replicas lag before the kill")
    ap.add_argument("--write-docs", action="store_true", help=f"write {DOCS.name}")
    args = ap.parse_args()

    started = time.monotonic()
    group = SentinelGroup(replicas=2)
    workers: list[subprocess.Popen[bytes]] = []
    apps: list[App] = []
    costs: dict[int, list[dict[str, float]]] = {w: [] for w in MODES}
    gaps: dict[int, list[dict[str, float]]] = {w: [] for w in MODES}
    losses: dict[int, dict[str, float]] = {}
    try:
        group.start()
        primary = group.current_primary()
        with primary.client() as c:
            version = c.info("server").get("valkey_version", "?")
        for rep in range(args.reps):
            for wait in MODES if rep % 2 == 0 else MODES[::-1]:
                costs[wait].append(submit_cost(group, wait, args))
                print(f"rep {rep + 1} wait_replicas={wait}: {costs[wait][-1]}", file=sys.stderr)
        for wait in MODES:
            prefix = f"hf{wait}{uuid.uuid4().hex[:6]}"
            workers.append(start_worker(group.url + query(wait), prefix))
            apps.append(App(group.url + query(wait), prefix=prefix))
        for run in range(args.runs):
            for wait in MODES if run % 2 == 0 else MODES[::-1]:
                gaps[wait].append(failover_gap(group, apps[wait]))
                print(f"failover {run + 1} wait_replicas={wait}: {gaps[wait][-1]}", file=sys.stderr)
        for wait in MODES:
            losses[wait] = loss_window(group, wait, args.cut)
            print(f"loss window wait_replicas={wait}: {losses[wait]}", file=sys.stderr)
        alive = [w.poll() is None for w in workers]
    finally:
        for app in apps:
            app.close()
        for w in workers:
            w.terminate()
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        group.cleanup()
    elapsed = time.monotonic() - started

    med = {w: {k: statistics.median(x[k] for x in costs[w]) for k, _, _ in COST} for w in MODES}
    lines = [
        "| workload | wait_replicas=0: median [min, max] | wait_replicas=1 (WAIT 1) | ratio of "
        "the medians |",
        "|---|---|---|---|",
    ]

    def cell(w: int, key: str) -> str:
        xs = [x[key] for x in costs[w]]
        return f"{fmt(med[w][key])} [{fmt(min(xs))}, {fmt(max(xs))}]"

    for key, label, higher_better in COST:
        a, b = med[0][key], med[1][key]
        ratio = a / b if higher_better else b / a
        lines.append(f"| {label} | {cell(0, key)} | {cell(1, key)} | {ratio:.2f}x |")
    gap_lines = [
        "| wait_replicas | runs | kill -> first job succeeded on the new primary (s): median "
        "[min, max] | kill -> Sentinels name the new primary (s), median | jobs done (submit + "
        "result, one at a time) in the 1 s before the kill, median |",
        "|---|---|---|---|---|",
    ]
    for w in MODES:
        g = [x["gap_s"] for x in gaps[w]]
        p = [x["promoted_s"] for x in gaps[w]]
        b = [x["before"] for x in gaps[w]]
        gap_lines.append(
            f"| {w} | {len(g)} | {statistics.median(g):.2f} [{min(g):.2f}, {max(g):.2f}] | "
            f"{statistics.median(p):.2f} | {statistics.median(b):.0f} |"
        )
    loss_lines = [
        "| wait_replicas | submits acknowledged: in all (0.5 s before the cut + during it) "
        f"| during the {args.cut:g} s cut | acknowledged and lost with the primary (of them, "
        "acknowledged before the cut) | submits refused (DurabilityTimeout after 300 ms) |",
        "|---|---|---|---|---|",
    ]
    loss_lines += [
        f"| {w} | {x['acked']:.0f} | {x['during']:.0f} | {x['lost']:.0f} ({x['lost_before']:.0f})"
        f" | {x['refused']:.0f} |"
        for w, x in losses.items()
    ]
    cmd = "bench/ha.py " + " ".join(a for a in sys.argv[1:] if a != "--write-docs")
    meta = (
        f"- command: `.venv/bin/python {cmd.strip()}` (`make ha-bench` writes this page)\n"
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Valkey {version}, "
        f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}; "
        f"1 primary + 2 replicas + 3 Sentinels (down-after 1000 ms) on loopback, AOF everysec; "
        f"{args.reps} repetition(s) of {args.n} single submits and {args.n_batches} batches of "
        f"{args.batch} per mode, medians; {args.runs} failover(s) per mode; the whole bench "
        f"took {elapsed:.0f} s; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: compare the "
        "ratios, not the absolute figures); workers alive at the end: "
        f"{sum(alive)}/{len(alive)}"
    )
    tables = ["\n".join(t) for t in (lines, gap_lines, loss_lines)]
    print(meta, *tables, sep="\n\n")
    if args.write_docs:
        write_docs(meta, *tables)
    return 0 if all(alive) else 1


def write_docs(meta: str, cost: str, gaps: str, loss: str) -> None:
    DOCS.write_text(
        "# High availability: durable submits and the failover gap\n\n"
        "Written by `bench/ha.py --write-docs` (`make ha-bench`) on a Sentinel group it starts "
        "itself. `wait_replicas=N` (URL `?wait_replicas=N`, `JOBQ_WAIT_REPLICAS=N`) appends "
        "`WAIT N` to every submit and every batch of outcomes: a submit returns once N "
        "replicas have *received* its jobs, so a failover to one of them loses none. "
        "[tests/test_ha_durable.py](../tests/test_ha_durable.py) proves it on a real Sentinel "
        "group with the primary SIGKILLed under load, also after the replica had stopped "
        "replicating.\n\n"
        "## What each setting can still lose\n\n"
        "| settings | appended to submits and outcomes | an acknowledged job is lost by |\n"
        "|---|---|---|\n"
        "| neither | nothing | a failover (replication is asynchronous: the promoted replica "
        "may lack the last writes, the whole lag of a slow or cut-off replica); a power cut "
        "of the primary (up to ~1 s with `appendfsync everysec`) |\n"
        "| `wait_replicas=N` | `WAIT N` | a power cut of the primary and those N replicas "
        "at once; with N below the number of replicas, rarely, a failover promoting a replica "
        "that did not confirm (Sentinel picks the largest replication offset it last read) |\n"
        "| `durable` | `WAITAOF 1 0` | a failover, as with neither |\n"
        "| `durable` + `wait_replicas=N` | `WAITAOF 1 N` (the replicas need `appendonly yes`) "
        "| only the rare promotion race above (a power cut of every host leaves it on disk) |"
        "\n\n"
        "When fewer replicas confirm within `durable_timeout_ms` (5000), the submit raises "
        "`DurabilityTimeout` *after* the jobs were queued on the primary: they run, but a "
        "failover may lose them; submitting the same ids again is safe. While a replica is "
        "down every submit and every batch of outcomes waits that long, so run more replicas "
        "than `wait_replicas`.\n\n"
        f"{meta}\n\n## Submit cost\n\n"
        "Modes alternate within each repetition; *ratio* is how many times slower (rates) "
        "or longer (latencies) `wait_replicas=1` is. Each phase starts with the replicas "
        "caught up: without the wait, single submits run ahead of the replicas, and on a "
        "2-core machine their catching up slowed the batches that followed by 2-4x (a cost "
        "of asynchronous replication that a table of bursts hides).\n\n"
        f"{cost}\n\n"
        "A submit with `WAIT 1` returns once the fastest replica has applied its writes and "
        "acknowledged the offset: a single submit pays one replication round trip on top of "
        "its own, a batch the time a replica takes to apply all of its jobs (here about 1 ms "
        "per 100 jobs), so per job batches stay far cheaper. On loopback the round trip is a "
        "fraction of a millisecond; between hosts add the network latency to the nearest "
        "replica.\n\n"
        "## What the wait buys\n\n"
        "Both replicas are cut off the primary (wrong `masterauth`, link dropped) while a "
        "producer submits one job at a time, then the primary is SIGKILLed and a replica "
        "promoted; the acknowledged jobs are looked up on the new primary.\n\n"
        f"{loss}\n\n"
        "## Failover gap\n\n"
        "A producer submits one job at a time and waits for its result, run by a `jobq "
        "worker` subprocess on the same URL; the primary is SIGKILLed; the gap is from the "
        "kill to the first job submitted after it that succeeded (queued on and run from the "
        "new primary). The killed node is then restarted and demoted before the next run.\n\n"
        f"{gaps}\n\n"
        "Most of the gap is Sentinel's: `down-after-milliseconds` (1000 here) before the "
        "primary is deemed down, then the vote and the promotion; jobq's clients resolve the "
        "new primary through the Sentinels on their next connection, and the rest is the "
        "worker's reconnect back-off. With `wait_replicas=1` the new primary must also have a "
        "replica again (Sentinel repoints the other replica after the promotion) before a "
        "submit is acknowledged: with a single replica, submits time out (`DurabilityTimeout`, "
        "the jobs queued) until the old primary comes back as a replica.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
