"""Shared harness for the peer drivers (standard library + redis-py only).

Each ``<peer>_bench.py`` driver runs in that peer's own virtualenv and subclasses
:class:`Driver`. The harness runs the three workloads the same way for every peer:

1. **noop** -- ``N`` no-op jobs are enqueued from this one process, one job per call
   (timed: ``enqueue_rate``), with no worker running. Then 2 worker processes are started with
   the peer's own CLI and the number of completed jobs (stored results, counted the peer's own
   way) is polled until it reaches ``N``. ``process_rate`` is measured between the moment 10%
   of the jobs are done and the moment all are done, so that worker start-up (imports, forks)
   is not counted; ``process_rate_wall`` is ``N`` over the time from worker launch to the last
   completion. A run that does not see exactly ``N`` completions reports ``ok: false``.
2. **sleep** -- the same with ``sleep_n`` jobs that each sleep 10 ms, with the workers in the
   peer's I/O concurrency setting (``sleep_rate``).
3. **latency** -- workers are started idle, warmed up, then ``lat_n`` jobs are submitted one at a
   time, each waited for with the peer's own "get the result" call: p50/p95/p99 in ms.

Around each workload the harness reads the server's INFO cpu and INFO commandstats (one
``INFO cpu commandstats`` call per reading) and reports the server's cost per job: Valkey CPU
(used_cpu_user + used_cpu_sys) and commands (the sum of every command's ``calls``, which counts
the commands a Lua script or function runs as well as the FCALL itself), for the enqueue phase,
the processing phase and one-at-a-time submit -> result. The harness's own commands are taken
out exactly: the one INFO of the first reading, and the completion polls of the processing
phase, whose cost per poll is measured afterwards on the quiet server (see :class:`ServerCost`).

The server is flushed (FLUSHALL) before every workload: the benchmark owns its Valkey.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import redis

HERE = Path(__file__).resolve().parent
LOG_DIR = HERE.parent / "results" / "raw"

# Per-process concurrency for the 10 ms sleep workload (threads / asyncio tasks / greenlets).
IO_CONCURRENCY = int(os.environ.get("BENCH_IO_CONCURRENCY", "32"))


def bench_url() -> str:
    """The benchmark server's URL, in the driver (argv[1]) and in its workers (BENCH_URL).

    There is deliberately no default: a driver must never touch any other server.
    """
    url = os.environ.get("BENCH_URL")
    if not url:
        for arg in sys.argv[1:]:
            if arg.startswith(("redis://", "valkey://")):
                url = arg
                break
    if not url:
        raise SystemExit("no benchmark server URL (argv[1] or BENCH_URL)")
    url = redis_base(url)
    os.environ["BENCH_URL"] = url
    return url


def redis_base(url: str) -> str:
    """``redis://host:port`` without a database number."""
    rest = url.split("://", 1)[1]
    hostport = rest.split("/", 1)[0]
    return url.split("://", 1)[0] + "://" + hostport


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (q in 0..100)."""
    s = sorted(samples)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(q / 100.0 * len(s) + 0.5) - 1))
    return s[k]


Snap = tuple[float, int]


class ServerCost:
    """Readings of the server's CPU seconds and command count, and per-job deltas of them.

    One reading is one ``INFO cpu commandstats``. INFO does not count itself in its own reply,
    so between two readings exactly one harness command is counted (the first reading's INFO):
    :meth:`delta` takes it out. CPU is the server process's user + system time (all threads);
    it includes the server's own background work (its cron at ``hz`` 10: tens of microseconds a
    second, negligible against a workload's).
    """

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def snap(self) -> Snap:
        info: dict[str, Any] = self.r.info("cpu", "commandstats")
        calls = sum(
            int(v["calls"])
            for k, v in info.items()
            if k.startswith("cmdstat_") and isinstance(v, dict)
        )
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), calls

    @staticmethod
    def delta(a: Snap, b: Snap) -> tuple[float, int]:
        """(CPU seconds, commands) between readings a and b, without a's own INFO."""
        return b[0] - a[0], b[1] - a[1] - 1

    def calibrate(self, poll: Callable[[], object], k: int = 50) -> tuple[float, float]:
        """CPU seconds and commands of one call of `poll`, averaged over k calls on a server
        with nothing else running (the workers stopped), in the state the workload left.

        The command count of a poll is exact (the same commands every time). Its CPU is, if
        anything, over-estimated: on the quiet server each poll also pays the server's wake-up
        from its event loop, which a poll during the workload shares with the workers'
        commands, and the counts that grow with the data (arq's KEYS scan) are read at their
        largest. Subtracting it can only flatter a queue, never charge it for the harness."""
        a = self.snap()
        for _ in range(k):
            poll()
        cpu, cmds = self.delta(a, self.snap())
        return cpu / k, cmds / k

    @staticmethod
    def per_job(cpu_s: float, cmds: float, n: int) -> dict[str, float]:
        return {"cpu_us": max(0.0, cpu_s) / n * 1e6, "cmds": max(0.0, cmds) / n}


class WorkerGroup:
    """Worker processes started from the peer's CLI, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, cmds: list[list[str]], env: dict[str, str]) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        for i, cmd in enumerate(cmds):
            log = open(LOG_DIR / f"{name}-{i}.log", "wb")  # noqa: SIM115 - closed in stop()
            log.write((" ".join(cmd) + "\n").encode())
            log.flush()
            p = subprocess.Popen(
                cmd,
                cwd=str(HERE),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: we can signal its children too
            )
            self.procs.append(p)
            self._logs.append(log)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self, grace: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            # SIGKILL whatever is left of the group (the parent or its forked children).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for log in self._logs:
            log.close()


class Driver:
    """One peer. Subclasses fill in the hooks below."""

    name = "peer"
    #: seconds between two completion counts (O(1) counts can poll fast)
    poll_interval = 0.005
    #: give up when the completion count has not moved for this long
    stall_timeout = 60.0

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url: str = redis_base(args.url)
        self.r = redis.Redis.from_url(self.url + "/0")
        self.cost = ServerCost(self.r)
        self.polls = 0
        self.end_snap: Snap = (0.0, 0)
        self.snap10: Snap | None = None
        self.polls10 = self.c10 = 0
        self.env = dict(os.environ)
        self.env["BENCH_URL"] = self.url
        self.env["PYTHONPATH"] = str(HERE) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.bin = Path(sys.executable).parent

    def redis_db(self, db: int) -> redis.Redis:
        return redis.Redis.from_url(f"{self.url}/{db}")

    # ---- hooks --------------------------------------------------------------------------
    def version(self) -> str:
        raise NotImplementedError

    def config(self) -> str:
        """One-line description of the worker configuration used."""
        return ""

    def worker_cmds(self, kind: str) -> list[list[str]]:
        """Commands that together make up 2 worker processes; kind is 'noop' or 'sleep'."""
        raise NotImplementedError

    def worker_env(self, kind: str) -> dict[str, str]:
        return {"BENCH_KIND": kind}

    def enqueue(self, kind: str, n: int) -> None:
        """Enqueue n jobs of `kind` ('noop' or 'sleep'), one call per job."""
        raise NotImplementedError

    def count_done(self) -> int:
        """Number of completed jobs (stored results), as the peer records them."""
        raise NotImplementedError

    def verify_done(self) -> int:
        """Exact completion count, checked once at the end (defaults to count_done)."""
        return self.count_done()

    def failure_detail(self) -> str:
        """Extra words for the error of a run that lost jobs (e.g. the states they ended in)."""
        return ""

    def latency(self, n: int, timeout: float) -> list[float]:
        """Submit n noop jobs one at a time, wait for each result; return seconds per job."""
        raise NotImplementedError

    def before_samples(self) -> dict[str, Any]:
        """Run right before the latency samples, the workers up and idle; merged into the
        latency result (jobq: the bare-RPC floor, measured next to its own samples)."""
        return {}

    def extra(self) -> dict[str, Any]:
        """Optional extra workloads (jobq's batch submit); merged into the JSON output."""
        return {}

    def close(self) -> None:
        pass

    # ---- harness ------------------------------------------------------------------------
    def flush(self) -> None:
        self.r.flushall()

    def start_workers(self, kind: str) -> WorkerGroup:
        env = dict(self.env)
        env.update(self.worker_env(kind))
        return WorkerGroup(f"{self.name}-{kind}", self.worker_cmds(kind), env)

    def _drain(self, n: int, group: WorkerGroup, t_launch: float) -> dict[str, Any]:
        t10: float | None = None
        c10 = 0
        last = -1
        last_change = time.perf_counter()
        done = 0
        threshold = max(1, n // 10)
        self.polls = 0
        self.snap10 = None
        while True:
            done = self.count_done()
            self.polls += 1
            now = time.perf_counter()
            if t10 is None and done >= threshold:
                t10, c10 = now, done
                # The server cost is read over the rate's window too (see run_batch).
                self.snap10, self.polls10, self.c10 = self.cost.snap(), self.polls, c10
            if done >= n:
                break
            if done != last:
                last, last_change = done, now
            elif now - last_change > self.stall_timeout:
                break
            if not group.alive() and now - last_change > 2.0:
                break
            time.sleep(self.poll_interval)
        t_end = time.perf_counter()
        self.end_snap = self.cost.snap()  # before verify_done, whose reads are not the peer's
        if done == n:
            # The exact check may trail the fast count by a moment (last status writes).
            for _ in range(20):
                done = self.verify_done()
                if done == n:
                    break
                time.sleep(0.1)
        out: dict[str, Any] = {"done": done, "ok": done == n}
        if done == n and t10 is not None and t_end > t10:
            out["rate"] = (n - c10) / (t_end - t10)
            out["rate_wall"] = n / (t_end - t_launch)
        else:
            # Nothing done after the stall window, or the workers died: report the failure.
            out["error"] = f"{done}/{n} jobs completed{self.failure_detail()}"
            if not group.alive():
                out["error"] += " (a worker process exited)"
        return out

    def run_batch(self, kind: str, n: int) -> dict[str, Any]:
        self.flush()
        s0 = self.cost.snap()
        t0 = time.perf_counter()
        self.enqueue(kind, n)
        t_enq = time.perf_counter() - t0
        s1 = self.cost.snap()
        before = self.count_done()
        if before:
            return {"ok": False, "error": f"{before} jobs completed with no worker running"}
        s2 = self.cost.snap()
        group = self.start_workers(kind)
        try:
            t_launch = time.perf_counter()
            res = self._drain(n, group, t_launch)
        finally:
            group.stop()
        res["enqueue_rate"] = n / t_enq
        # Server cost. The enqueue phase as it was. The processing phase over the rate's window
        # (10% done -> all done: steady state, the workers' start-up left out as it is from the
        # rate), minus the harness's polls in it; the whole phase from worker launch (start-up
        # included) is kept in the raw JSON as `process_launch`.
        enq_cpu, enq_cmds = self.cost.delta(s0, s1)
        try:
            poll_cpu, poll_cmds = self.cost.calibrate(self.count_done)
        except Exception as e:  # the rate stands; the cost then says its polls are in it
            poll_cpu, poll_cmds = 0.0, 0.0
            res["cost_error"] = f"poll calibration failed, polls not taken out: {e!r}"

        def processing(a: Snap, polls: int, jobs: int) -> dict[str, float]:
            cpu, cmds = self.cost.delta(a, self.end_snap)
            return ServerCost.per_job(cpu - polls * poll_cpu, cmds - polls * poll_cmds, jobs)

        launch = processing(s2, self.polls, n)
        steady = launch
        if self.snap10 is not None and n > self.c10:
            steady = processing(self.snap10, self.polls - self.polls10, n - self.c10)
        enq = ServerCost.per_job(enq_cpu, enq_cmds, n)
        res["cost"] = {
            "enqueue": enq,
            "process": steady,
            "total": {k: enq[k] + steady[k] for k in enq},
            "process_launch": launch,
            "polls": self.polls,
            "poll_cmds": poll_cmds,
            "poll_cpu_us": poll_cpu * 1e6,
        }
        return res

    def run_latency(self, n: int) -> dict[str, Any]:
        self.flush()
        group = self.start_workers("noop")
        try:
            # Warm-up: the first job waits for worker start-up (imports, connections).
            self.latency(1, timeout=60.0)
            self.latency(20, timeout=10.0)
            time.sleep(0.5)  # let both workers go idle
            before = self.before_samples()
            s0 = self.cost.snap()
            samples = self.latency(n, timeout=10.0)
            cpu, cmds = self.cost.delta(s0, self.cost.snap())
        finally:
            group.stop()
        return {
            "ok": len(samples) == n,
            # Everything the server did while the samples ran, idle workers' reads included.
            "cost": ServerCost.per_job(cpu, cmds, max(1, len(samples))),
            "p50": percentile(samples, 50) * 1e3,
            "p95": percentile(samples, 95) * 1e3,
            "p99": percentile(samples, 99) * 1e3,
            "mean": statistics.fmean(samples) * 1e3 if samples else float("nan"),
            **before,
        }

    def run(self) -> dict[str, Any]:
        a = self.args
        result: dict[str, Any] = {"peer": self.name, "ok": True, "errors": []}
        try:
            result["version"] = self.version()
            result["config"] = self.config()
        except Exception as e:  # pragma: no cover - reported, not raised
            result["ok"] = False
            result["errors"].append(f"setup: {e!r}")
            return result
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        workloads = set(a.workloads.split(","))
        if "noop" in workloads:
            steps.append(("noop", lambda: self.run_batch("noop", a.n)))
        if "sleep" in workloads:
            steps.append(("sleep", lambda: self.run_batch("sleep", a.sleep_n)))
        if "latency" in workloads:
            steps.append(("latency", lambda: self.run_latency(a.lat_n)))
        for label, step in steps:
            t0 = time.perf_counter()
            try:
                res = step()
            except Exception as e:
                traceback.print_exc(file=sys.stderr)
                res = {"ok": False, "error": repr(e)}
            res["seconds"] = time.perf_counter() - t0
            result[label] = res
            if not res.get("ok"):
                result["ok"] = False
                result["errors"].append(f"{label}: {res.get('error', 'failed')}")
            if "cost_error" in res:  # shown on the page, the run still counts
                result["errors"].append(f"{label}: {res['cost_error']}")
            print(f"[{self.name}] {label}: {json.dumps(res)}", file=sys.stderr, flush=True)
        if "extra" in workloads:
            try:
                for label, res in self.extra().items():
                    result[label] = res
                    if not res.get("ok"):
                        result["errors"].append(f"{label}: {res.get('error', 'failed')}")
            except Exception as e:
                traceback.print_exc(file=sys.stderr)
                result["errors"].append(f"extra: {e!r}")
        self.close()
        return result


def main(driver_cls: type[Driver], argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=f"{driver_cls.name} benchmark driver")
    p.add_argument("url", help="redis://127.0.0.1:PORT (the benchmark's own server)")
    p.add_argument("--n", type=int, default=20000, help="no-op jobs")
    p.add_argument("--sleep-n", type=int, default=2000, help="10 ms sleep jobs")
    p.add_argument("--lat-n", type=int, default=300, help="sequential latency samples")
    p.add_argument("--workloads", default="noop,sleep,latency,extra")
    p.add_argument("--variant", default="", help="peer-specific variant (e.g. rq: simple)")
    args = p.parse_args(argv)
    drv = driver_cls(args)
    out = drv.run()
    print(json.dumps(out), flush=True)
