"""jobq on a real Valkey Cluster of 1, 2 and 3 primaries, in one run: throughput, server CPU
and commands per job on each primary, how evenly one hot queue spreads over the primaries,
rate-limit accuracy across partitions and how close to FIFO one queue over 3 partitions runs.

The clusters are built by the test harness (tests/cluster.py: the embedded valkey-server,
CLUSTER MEET / ADDSLOTSRANGE, no valkey-cli), all three up at once with no replicas and no
persistence, on loopback ports; the deployment on each has one partition per primary (the
default on a Cluster).

1. Throughput, `--reps` repetitions, the cluster sizes taking turns within each: 2 `jobq
   worker` subprocesses (thread pool, `-c 1`, adaptive prefetch: as users run them) on a fresh
   prefix, warmed up, then one producer (this process) submits `--n` no-op jobs in batches of
   `--batch` (`submit_many`) while the workers run them; the window is from the first submit
   to the moment the queue's `succeeded` count reaches `--n`. INFO cpu and INFO commandstats
   are read on every primary just before and after it: server CPU (used_cpu_sys +
   used_cpu_user) and commands per job on each primary, and each primary's share of them.
   The run fails (exit 1) if the busiest primary's share of the job commands or of the server
   CPU is above 1.25x an even share in the median.
2. Rate limits, on 1 and 3 partitions: a backlog of jobs of a task limited to `--rate`/s, one
   in-process worker (4 threads, its own maintenance, the default 200 ms tick) for
   `--rate-seconds`; each job notes when it ran. Achieved rate and the most starts in any 1 s.
3. FIFO, on 1 and 3 partitions: `--fifo-n` jobs submitted in order to one queue, then one
   in-process worker of concurrency 1 runs them (default prefetch, and `--prefetch 0`); each
   job notes its submit index, and the run order is compared with the submit order.

    .venv/bin/python bench/cluster.py [--n 20000] [--reps 3] [--write-docs] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from cluster_report import DOCS, SPREAD_LIMIT, headline, machine, summarize, tables, write_docs

from jobq import App
from jobq.topology import resolver_of
from jobq.worker import Worker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # bench_tasks, for the workers; valkey_server
from valkey_server import stop_workers  # noqa: E402

SIZES = (1, 2, 3)
#: Connection housekeeping and this bench's own probes, not job work (INFO commandstats names).
NOT_JOB_COMMANDS = frozenset(
    {"info", "cluster|slots", "cluster|info", "cluster|myid", "cluster|nodes", "cluster",
     "ping", "hello", "auth", "client|setinfo", "client|setname", "client|id", "client",
     "command", "command|docs", "config|get", "select", "function|load", "function|list",
     "readonly"}
)  # fmt: skip
#: Commands that run a script (the rest counted in commandstats includes what scripts call).
SCRIPT_COMMANDS = frozenset({"fcall", "fcall_ro", "evalsha", "eval", "evalsha_ro", "eval_ro"})
#: A cluster node may not be failed over by mistake under load: no replicas, long timeout.
NODE_TIMEOUT_MS = 15_000


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _harness() -> ModuleType:
    """tests/cluster.py, loaded by path: this file is also `cluster`, and bench/ha.py is also
    `ha` (tests/cluster.py imports the test `ha`, lent to it while it loads)."""
    saved = sys.modules.get("ha")
    sys.modules["ha"] = _load("jobq_tests_ha", ROOT / "tests" / "ha.py")
    try:
        return _load("jobq_tests_cluster", ROOT / "tests" / "cluster.py")
    finally:
        if saved is None:
            del sys.modules["ha"]
        else:
            sys.modules["ha"] = saved


harness = _harness()


# -- measuring the servers ----------------------------------------------------------------


#: (server CPU seconds, {command: (calls, usec)}) of one node at one moment.
Sample = tuple[float, dict[str, tuple[int, int]]]


def node_sample(node: Any) -> Sample:
    """(server CPU seconds, {command: (calls, usec)}) of one node, now."""
    cpu = node.info("cpu")
    raw = node.info("commandstats")
    cmds = {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in raw.items()}
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), cmds


def sample_delta(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds, job commands, script calls and script usec between two samples."""
    b, a = before[1], after[1]
    calls = {k: a[k][0] - b.get(k, (0, 0))[0] for k in a}
    usec = {k: a[k][1] - b.get(k, (0, 0))[1] for k in a}
    job = {k: v for k, v in calls.items() if k not in NOT_JOB_COMMANDS}
    return {
        "cpu_s": after[0] - before[0],
        "commands": float(sum(job.values())),
        "scripts": float(sum(v for k, v in job.items() if k in SCRIPT_COMMANDS)),
        "script_usec": float(sum(v for k, v in usec.items() if k in SCRIPT_COMMANDS)),
        "command_usec": float(sum(v for k, v in usec.items() if k not in NOT_JOB_COMMANDS)),
    }


# -- one deployment on one cluster --------------------------------------------------------


class Deployment:
    """A fresh prefix on `cluster`: its App (layout created: one partition per primary) and,
    per partition, the node serving it."""

    def __init__(self, cluster: Any, tasks: Callable[[App], None] | None = None) -> None:
        self.cluster = cluster
        self.prefix = "cb" + uuid.uuid4().hex[:8]
        self.app = App(cluster.url, prefix=self.prefix)
        self.app.task(name="noop")(_noop)
        if tasks is not None:
            tasks(self.app)
        store = self.app.store
        store.ping()  # the layout is created, and every partition's client dials its owner
        self.nodes = [cluster.node_at(resolver_of(s.r).current()) for s in store.shards]
        if len({n.port for n in self.nodes}) != len(cluster.primaries()):
            raise RuntimeError(f"partitions not one per primary: {self.nodes}")

    def succeeded(self, queue: str = "default") -> int:
        return self.app.store.queue_infos([queue])[0].succeeded

    def succeeded_per_partition(self, queue: str = "default") -> list[int]:
        return [s.queue_infos([queue])[0].succeeded for s in self.app.store.shards]

    def close(self) -> None:
        self.app.close()


def _noop() -> None:
    return None


def start_workers(url: str, prefix: str, n: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "JOBQ_URL": url,
        "JOBQ_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "jobq", "worker", "bench_tasks:app", "--pool", "thread"]
    cmd += ["-c", "1"]
    return [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(n)
    ]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (from /proc; 0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def throughput(cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One end-to-end run of `args.n` no-op jobs on a fresh prefix (see the module doc)."""
    dep = Deployment(cluster)
    workers = start_workers(cluster.url, dep.prefix, args.workers)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * args.batch
    try:
        wait_until(
            lambda: len(dep.app.store.list_workers()) >= args.workers, 60, "the workers", 0.1
        )
        warm = 2 * args.batch
        for _ in range(2):
            dep.app.submit_many("noop", calls)
        wait_until(lambda: dep.succeeded() >= warm, 60, "the warm-up jobs")
        per0 = dep.succeeded_per_partition()
        before = [node_sample(n) for n in dep.nodes]
        w0 = sum(proc_cpu_s(w.pid) for w in workers)
        p0 = time.process_time()
        t0 = time.perf_counter()
        done = 0
        while done < args.n:
            k = min(args.batch, args.n - done)
            dep.app.submit_many("noop", calls[:k])
            done += k
        submitted = time.perf_counter() - t0
        wait_until(lambda: dep.succeeded() >= warm + args.n, 300, f"{args.n} jobs", 0.05)
        elapsed = time.perf_counter() - t0
        producer_s = time.process_time() - p0
        workers_s = sum(proc_cpu_s(w.pid) for w in workers) - w0
        after = [node_sample(n) for n in dep.nodes]
        per = [x - y for x, y in zip(dep.succeeded_per_partition(), per0, strict=True)]
        alive = all(w.poll() is None for w in workers)
    finally:
        stop_workers(workers)
        dep.close()
    nodes = [sample_delta(b, a) for b, a in zip(before, after, strict=True)]
    return {
        "jobs_per_s": args.n / elapsed,
        "submit_per_s": args.n / submitted,
        "elapsed_s": elapsed,
        "nodes": nodes,
        "jobs_per_partition": per,
        "alive": alive,
        "workers_cpu_s": workers_s,
        "producer_cpu_s": producer_s,
    }


# -- rate limits ----------------------------------------------------------------------------


def rate_accuracy(
    cluster: Any, args: argparse.Namespace, options: dict[str, Any] | None = None
) -> dict[str, float]:
    """A backlog of a task limited to `args.rate`/s run for `args.rate_seconds` by one
    in-process worker: the starts it achieved (see the module doc). `options` are the jobs'
    submit options (a shared concurrency key puts every job in one partition)."""
    starts: list[float] = []
    lock = threading.Lock()

    def tasks(app: App) -> None:
        @app.task(name="limited", queue="rl", rate_limit=f"{args.rate}/s")
        def limited() -> None:
            with lock:
                starts.append(time.monotonic())

    dep = Deployment(cluster, tasks)
    backlog = int(args.rate * args.rate_seconds * 2) + 50
    dep.app.submit_many("limited", [((), {})] * backlog, **(options or {}))
    worker = Worker(dep.app, ["rl"], concurrency=4, grace_s=2)
    t = threading.Thread(target=worker.run, name="bench-rl-worker", daemon=True)
    t.start()
    try:
        wait_until(lambda: bool(starts), 30, "the first rate-limited job")
        first = starts[0]
        time.sleep(max(0.0, first + args.rate_seconds + 0.3 - time.monotonic()))
    finally:
        worker.stop(immediate=True)
        t.join(30)
        dep.close()
    with lock:
        got = [s - first for s in starts]
    window = [s for s in got if s < args.rate_seconds]
    achieved = len(window) / args.rate_seconds
    peak = max(sum(1 for y in window if x <= y < x + 1.0) for x in window)
    return {
        "partitions": float(len(dep.nodes)),
        "achieved": achieved,
        "first_1s": float(sum(1 for s in window if s < 1.0)),
        "peak_1s": float(peak),
        "error": achieved / args.rate - 1,
    }


#: Submit options putting every rate-limited job in one partition (and never limiting it).
ONE_KEY = {"concurrency_key": "one", "concurrency_limit": 100_000}  # (the largest allowed)


# -- one job at a time ----------------------------------------------------------------------


def one_at_a_time(cluster: Any, args: argparse.Namespace) -> dict[str, float]:
    """`args.lat_n` jobs submitted one at a time, each waited for, with 2 idle `jobq worker`
    processes: latency, and what each job costs the servers when nothing is batched."""
    dep = Deployment(cluster)
    workers = start_workers(cluster.url, dep.prefix, args.workers)
    try:
        for _ in range(20):  # warm: both workers up and blocked
            dep.app.submit("noop").result(timeout=60)
        time.sleep(0.5)
        before = [node_sample(n) for n in dep.nodes]
        lat = []
        for _ in range(args.lat_n):
            t = time.perf_counter()
            dep.app.submit("noop").result(timeout=30)
            lat.append(time.perf_counter() - t)
        after = [node_sample(n) for n in dep.nodes]
    finally:
        stop_workers(workers)
        dep.close()
    d = [sample_delta(b, a) for b, a in zip(before, after, strict=True)]
    lat.sort()
    return {
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
        "cpu_us": sum(x["cpu_s"] for x in d) / args.lat_n * 1e6,
        "commands": sum(x["commands"] for x in d) / args.lat_n,
        "scripts": sum(x["scripts"] for x in d) / args.lat_n,
    }


# -- FIFO -----------------------------------------------------------------------------------


def fifo(cluster: Any, n: int, prefetch: int | None) -> dict[str, float]:
    """`n` jobs submitted in order to one queue, run by one worker of concurrency 1: how far
    the run order is from the submit order."""
    order: list[int] = []

    def tasks(app: App) -> None:
        @app.task(name="ordered", queue="fifo")
        def ordered(i: int) -> None:
            order.append(i)

    dep = Deployment(cluster, tasks)
    for lo in range(0, n, 100):
        dep.app.submit_many("ordered", [((i,), {}) for i in range(lo, min(n, lo + 100))])
    worker = Worker(dep.app, ["fifo"], concurrency=1, prefetch=prefetch, grace_s=2)
    t = threading.Thread(target=worker.run, name="bench-fifo-worker", daemon=True)
    t.start()
    try:
        wait_until(lambda: len(order) >= n, 120, f"{n} ordered jobs")
    finally:
        worker.stop()
        t.join(30)
        dep.close()
    disp = [abs(pos - i) for pos, i in enumerate(order)]
    inversions = sum(1 for a, b in itertools.pairwise(order) if b < a)
    return {
        "partitions": float(len(dep.nodes)),
        "n": float(len(order)),
        "max": float(max(disp)),
        "mean": statistics.fmean(disp),
        "p95": float(sorted(disp)[int(0.95 * (len(disp) - 1))]),
        "steps_back": float(inversions),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="no-op jobs per throughput run")
    ap.add_argument("--batch", type=int, default=500, help="jobs per submit_many call")
    ap.add_argument("--workers", type=int, default=2, help="`jobq worker` processes")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rate", type=int, default=50, help="the rate limit (jobs/s)")
    ap.add_argument("--rate-seconds", type=float, default=10.0)
    ap.add_argument("--fifo-n", type=int, default=600)
    ap.add_argument("--lat-n", type=int, default=300, help="jobs submitted one at a time")
    ap.add_argument("--quick", action="store_true", help="n 3000, 1 rep, 3 s of rate limit")
    ap.add_argument("--write-docs", action="store_true", help=f"write {DOCS.name}")
    args = ap.parse_args()
    if args.quick:
        args.n, args.reps, args.rate_seconds, args.fifo_n, args.lat_n = 3000, 1, 3.0, 300, 100

    started = time.monotonic()
    load0 = os.getloadavg()
    clusters: dict[int, Any] = {}
    runs: dict[int, list[dict[str, Any]]] = {s: [] for s in SIZES}
    latencies: list[tuple[int, dict[str, float]]] = []
    rates: list[tuple[str, dict[str, float]]] = []
    fifos: list[tuple[str, dict[str, float]]] = []
    try:
        for size in SIZES:
            clusters[size] = harness.cluster_for(
                size, 0, appendonly=False, node_timeout_ms=NODE_TIMEOUT_MS
            )
            print(f"cluster of {size} up in {clusters[size].start_seconds:.1f} s", file=sys.stderr)
        with clusters[1].nodes[0].client() as c:
            version = c.info("server").get("valkey_version", "?")
        for rep in range(args.reps):
            order = SIZES[rep % len(SIZES) :] + SIZES[: rep % len(SIZES)]
            for size in order:
                r = throughput(clusters[size], args)
                runs[size].append(r)
                print(
                    f"rep {rep + 1} primaries={size}: {r['jobs_per_s']:,.0f} jobs/s, "
                    f"per partition {r['jobs_per_partition']}, "
                    f"cpu {[round(x['cpu_s'], 3) for x in r['nodes']]}",
                    file=sys.stderr,
                )
        for size in SIZES:
            latencies.append((size, one_at_a_time(clusters[size], args)))
            print(f"one at a time on {size}: {latencies[-1][1]}", file=sys.stderr)
        for size, label, options in (
            (1, "spread by id", {}),
            (3, "spread by id", {}),
            (3, "one concurrency key (so one partition)", ONE_KEY),
        ):
            rates.append((label, rate_accuracy(clusters[size], args, options)))
            print(f"rate limit on {size}, {label}: {rates[-1][1]}", file=sys.stderr)
        for size in (1, 3):
            for label, prefetch in (("c=1, default prefetch", None), ("c=1, --prefetch 0", 0)):
                fifos.append((label, fifo(clusters[size], args.fifo_n, prefetch)))
                print(f"fifo on {size} ({label}): {fifos[-1][1]}", file=sys.stderr)
    finally:
        for c in clusters.values():
            c.cleanup()
    elapsed = time.monotonic() - started

    sums = [summarize(s, runs[s]) for s in SIZES]
    spread_ok = all(s["cpu_ratio"] <= SPREAD_LIMIT and s["cmd_ratio"] <= SPREAD_LIMIT for s in sums)
    alive = all(s["alive"] for s in sums)
    cmd = "bench/cluster.py " + " ".join(a for a in sys.argv[1:] if a != "--write-docs")
    meta = (
        f"- command: `.venv/bin/python {cmd.strip()}` (`make cluster-bench` writes this page)\n"
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Valkey {version}, "
        f"{machine()}\n"
        f"- clusters of 1, 2 and 3 primaries, no replicas, no persistence, all up at once on "
        f"loopback; {args.reps} repetition(s) of {args.n:,} no-op jobs per size (sizes taking "
        f"turns), medians; the whole bench took {elapsed:.0f} s; load average at the start "
        f"{' '.join(f'{x:.2f}' for x in load0)}, at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: other work ran "
        "beside this bench)"
    )
    ts = tables(sums, latencies, rates, fifos, args)
    print(meta, *ts, sep="\n\n")
    if args.write_docs:
        write_docs(meta, headline(sums, rates, fifos), sums, ts, args)
    if not spread_ok:
        print(f"FAIL: the busiest primary is above {SPREAD_LIMIT}x an even share", file=sys.stderr)
    if not alive:
        print("FAIL: a worker process died during a run", file=sys.stderr)
    return 0 if spread_ok and alive else 1


if __name__ == "__main__":
    sys.exit(main())
