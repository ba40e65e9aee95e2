"""Where a job's time goes: the server's work per script call and per job, next to a bare
LPUSH, and the client-side profile of a submit. Evidence for the targets in docs/benchmarks.md.

    .venv/bin/python bench/profile_paths.py [--n 5000] [--write-docs]

Runs against its own private Valkey (the embedded binary), in one process: the scripts are
called through `Store` itself (no worker threads), so every figure is one call's own. Prints a
Markdown report; `--write-docs` writes it to docs/profile.md.

Server figures come from `INFO commandstats` (reset before each measurement): an FCALL's time
includes the commands it runs, so "Lua and call overhead" = FCALL time minus the commands' own
time. They barely move with the noise of a shared machine, unlike wall times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
sys.path.insert(0, str(HERE))

from valkey_server import start_valkey  # noqa: E402

#: Commands the measurement itself sends (not the job's work).
HARNESS = ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")


def server_stats(r: redis.Redis) -> tuple[float, dict[str, tuple[int, float]]]:
    """(server CPU seconds, {command: (calls, usec)}) now."""
    cpu = r.info("cpu")
    stats = r.info("commandstats")
    per = {k: (int(v["calls"]), float(v["usec"])) for k, v in stats.items() if k not in HARNESS}
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), per


class Cost:
    """The server's work over a stretch of calls: per unit (job or call)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        r.config_resetstat()
        self.cpu0, _ = server_stats(r)

    def done(self, units: int) -> dict[str, float]:
        cpu, per = server_stats(self.r)
        fcall_calls, fcall_us = per.pop("cmdstat_fcall", (0, 0.0))
        inner_calls = sum(c for c, _u in per.values())
        inner_us = sum(u for _c, u in per.values())
        return {
            "cpu_us": (cpu - self.cpu0) / units * 1e6,
            "fcalls": fcall_calls / units,
            "fcall_us": fcall_us / units,
            "commands": (fcall_calls + inner_calls) / units,
            "inner": inner_calls / units,
            "inner_us": inner_us / units,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="calls (or jobs) per measurement")
    ap.add_argument("--write-docs", action="store_true", help="write docs/profile.md")
    args = ap.parse_args()
    n = args.n
    tmp = Path(tempfile.mkdtemp(prefix="jobq-profile-"))
    server, url = start_valkey(tmp)
    os.environ.update(JOBQ_URL=url, JOBQ_PREFIX="prof")
    from bench_tasks import app, noop

    from jobq.model import JobSpec, Outcome

    r = redis.Redis.from_url(url)
    store = app.store
    out = io.StringIO()
    seq = iter(range(10**9))

    def specs(k: int) -> list[JobSpec]:
        return [JobSpec(f"p{next(seq)}", "noop", "default", b"[[],{}]") for _ in range(k)]

    def drain(k: int) -> Callable[[], int]:
        """One claim of up to k jobs and one report of their outcomes: how many there were."""

        def go() -> int:
            got = store.claim("prof-worker", ["default"], k, 30_000, start=k)
            if got:
                began = time.monotonic()
                store.report([Outcome(c, True, b"null", began_s=began) for c in got])
            return len(got)

        return go

    rows: list[tuple[str, dict[str, float]]] = []
    try:
        noop.submit()  # load the function library
        drain(10)()

        c = Cost(r)
        t = time.perf_counter()
        for i in range(n):
            r.lpush("bare", i)
        bare_rt = (time.perf_counter() - t) / n * 1e6
        rows.append(("LPUSH (the bare limit)", c.done(n)))
        r.delete("bare")

        for k in (1, 100):
            calls = max(1, n // k)
            batches = [specs(k) for _ in range(calls)]
            c = Cost(r)
            for b in batches:
                store.submit(b)
            rows.append((f"enqueue, {k} job(s) per call", c.done(calls)))
            c = Cost(r)
            for _ in range(calls):
                got = store.claim("prof-worker", ["default"], k, 30_000, start=k)
                assert len(got) == k, "the queue ran dry"
                began = time.monotonic()
                store.report([Outcome(x, True, b"null", began_s=began) for x in got])
            rows.append((f"claim + complete, {k} job(s) per call", c.done(calls)))

        # await on a finished job (Job.result's one round trip: FCALL await + BLPOP).
        finished = specs(200)
        store.submit(finished)
        while drain(200)():
            pass
        c = Cost(r)
        for s in finished:
            assert store.wait(s.id, 1.0, full=False) is not None
        rows.append(("await + BLPOP (a result read)", c.done(len(finished))))

        t = time.perf_counter()
        for _ in range(n):
            noop.submit()
        submit_rt = (time.perf_counter() - t) / n * 1e6

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            noop.submit()
        prof.disable()
        mprof = cProfile.Profile()
        mprof.enable()
        noop.map([() for _ in range(n * 4)])
        mprof.disable()

        # End to end with a real worker process: one job at a time (submit, then its result).
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        cmd = [sys.executable, "-m", "jobq", "worker", "bench_tasks:app", "-c", "1"]
        worker = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        try:
            noop.submit().result(timeout=60)
            time.sleep(0.5)
            c = Cost(r)
            m = min(n, 1000)
            for _ in range(m):
                noop.submit().result(timeout=10)
            rows.append(("one job end to end: submit, claim, complete, result", c.done(m)))
            c = Cost(r)
            jobs = noop.map([() for _ in range(n * 2)])
            jobs[-1].result(timeout=120)
            while app.queue_info()[0].queued:
                time.sleep(0.01)
            rows.append((f"{n * 2} jobs batched end to end (map, worker drains)", c.done(n * 2)))
        finally:
            worker.terminate()
            worker.wait(30)

        info = r.info("server")
        version = info.get("valkey_version", info.get("redis_version", "?"))
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
        print("# Where a job's time goes\n", file=out)
        print(
            f"Generated by `bench/profile_paths.py --n {n} --write-docs` ({when}, jobq "
            f"{commit or '?'}, Valkey {version}, "
            f"{os.cpu_count()}-core shared machine). It backs the targets in "
            "[benchmarks.md](benchmarks.md): what the server does for each script call and "
            "each job, and where a submit's client time goes.\n",
            file=out,
        )
        print("## Server work per call or per job (`INFO commandstats`, `INFO cpu`)\n", file=out)
        print(
            "*commands* counts every command the server ran, the FCALLs and the commands the "
            "scripts ran inside them; *Lua and call overhead* is the FCALL time less the time "
            "of the commands inside it; *server CPU* is the server process's user + system "
            "time (networking included).\n",
            file=out,
        )
        print(
            "| what | per | FCALLs | commands | FCALL µs | commands inside, µs | "
            "Lua and call overhead, µs | server CPU µs |\n|---|---|---|---|---|---|---|---|",
            file=out,
        )
        for name, v in rows:
            per = "job" if "job" in name and "per call" not in name else "call"
            if name.startswith("LPUSH"):
                per = "call"
                v = {**v, "fcall_us": 0.0}
            over = max(0.0, v["fcall_us"] - v["inner_us"]) if v["fcalls"] else 0.0
            print(
                f"| {name} | {per} | {v['fcalls']:.2f} | {v['commands']:.1f} | "
                f"{v['fcall_us']:.1f} | {v['inner_us']:.1f} | {over:.1f} | {v['cpu_us']:.1f} |",
                file=out,
            )
        print(
            "\n## Server time per script call (`bench/lua_cost.py`)\n\nEach script alone, "
            "pipelined on a warm server (the fastest of a few rounds), against the time of the "
            "commands it ran: the rest is Lua interpretation and the building of the reply.\n",
            file=out,
        )
        lua = subprocess.run(
            [sys.executable, str(HERE / "lua_cost.py"), str(min(n * 4, 20000))],
            capture_output=True,
            text=True,
            check=True,
        )
        print(lua.stdout.strip(), file=out)
        print("\n## Client round trip, one at a time\n", file=out)
        print("| call | µs per call (wall) |\n|---|---|", file=out)
        print(f"| redis-py LPUSH | {bare_rt:.1f} |", file=out)
        print(f"| jobq `task.submit()` | {submit_rt:.1f} |", file=out)
        print(
            f"\nsubmit / bare = {bare_rt / submit_rt:.0%} of the bare rate "
            f"(the gap: {submit_rt - bare_rt:.1f} µs per submit).\n",
            file=out,
        )
        for title, p in (
            ("`task.submit()`, one at a time", prof),
            (f"`task.map()` of {n * 4} jobs", mprof),
        ):
            print(f"## Client-side profile of {title} (cProfile, top 12 by own time)\n", file=out)
            s = io.StringIO()
            pstats.Stats(p, stream=s).sort_stats("tottime").print_stats(12)
            # The standard library's and the venv's paths are this machine's: named, not shown.
            table = s.getvalue().strip().replace(sysconfig.get_path("stdlib") + "/", "<stdlib>/")
            table = table.replace(sysconfig.get_path("purelib") + "/", "<site-packages>/")
            table = table.replace(str(HERE.parent) + "/", "")
            print("```\n" + table + "\n```\n", file=out)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    text = out.getvalue()
    print(text)
    if args.write_docs:
        (DOCS / "profile.md").write_text(text.rstrip() + "\n" + NOTES)
    return 0


#: The part of docs/profile.md written by hand (kept by every regeneration): what the tables
#: above come to, from bisecting the scripts in scratch libraries with `lua_cost.py`'s method.
NOTES = """
## Where the remaining time goes

**On the server, batched.** Every side index is written once per call (counters summed per
queue and field, the leases and the `finished` index as one variadic ZADD or ZREM, one wake-up
per queue, the fencing-token counter read once and written once), so what is left per job is
what each transition must write for that job: the job hash read (HMGET) and written (HSET) by
claim and by complete, its result's EXPIRE, and one event (XADD) per transition, three per job.
Most of an FCALL's time is not its commands but Lua around them: each `redis.call` costs about
0.3-0.4 µs besides the command itself, and turning a reply into RESP about 110 ns per element
(one claimed job's row, 12 fields and its parents' results, is 1.5-2 µs). What would cut it
further changes a format: one event entry per call instead of per job (the master's SSE reader
and the dashboard read one job per entry), and a smaller claim row (a worker caching each
task's options instead of receiving them with every job).

**On the server, one job at a time.** The per-job figure is several times the batched one for
two reasons the scripts cannot touch: every round trip costs the server its networking (the
LPUSH row: a bare round trip costs about as much server CPU as a whole batched job), and an
idle server runs each call cold, at up to twice its pipelined time. A job is four round trips:
submit, the worker's wake-up and claim (one pipelined round trip), complete, and the caller's
await + BLPOP; a bare RPC is two.

**In the client.** One submit spends a few µs more than a bare LPUSH in Python (the profile
above); the rest of the gap is the enqueue function's own time on the server (table above)
against a bare LPUSH's 1 µs. A batch submit is bounded by the server's enqueue work per job
while no worker runs; beside two busy workers on two cores it shares the CPU with them.

**In the process pool.** Short jobs go to a child several per message and come back in
batches, so under load the pool costs about what the thread pool does. A lone job still pays
two process wake-ups (the pipe to the child, the pipe back), which is most of its latency above
the thread pool's.
"""

if __name__ == "__main__":
    sys.exit(main())
