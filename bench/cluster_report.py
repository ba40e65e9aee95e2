"""The page bench/cluster.py writes: medians per cluster size, the tables, a headline of the
figures other docs cite, and docs/benchmarks-cluster.md itself (kept apart from the
measurements so each file stays readable)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-cluster.md"
#: The busiest primary may carry at most this many times an even share of one hot queue.
SPREAD_LIMIT = 1.25


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except (OSError, ValueError):
        pass
    return (
        f"{os.cpu_count()} cores ({model}){mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"


def summarize(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions of one cluster size, per primary and overall."""

    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(r) for r in runs)

    per: list[dict[str, float]] = []
    for i in range(size):
        per.append(
            {
                "cpu_us_per_job": med(lambda r, i=i: r["nodes"][i]["cpu_s"] / _n(r) * 1e6),
                "cmds_per_job": med(lambda r, i=i: r["nodes"][i]["commands"] / _n(r)),
                "scripts_per_job": med(lambda r, i=i: r["nodes"][i]["scripts"] / _n(r)),
                "cpu_share": med(lambda r, i=i: _share(r, i, "cpu_s")),
                "cmd_share": med(lambda r, i=i: _share(r, i, "commands")),
                "job_share": med(lambda r, i=i: r["jobs_per_partition"][i] / _n(r)),
            }
        )
    even = 1 / size
    cpu_ratio = max(p["cpu_share"] for p in per) / even
    cmd_ratio = max(p["cmd_share"] for p in per) / even
    busiest_us = max(p["cpu_us_per_job"] for p in per)
    return {
        "size": size,
        "reps": len(runs),
        "jobs_per_s": med(lambda r: r["jobs_per_s"]),
        "jobs_per_s_all": [r["jobs_per_s"] for r in runs],
        "submit_per_s": med(lambda r: r["submit_per_s"]),
        "cpu_us_per_job": med(lambda r: sum(x["cpu_s"] for x in r["nodes"]) / _n(r) * 1e6),
        "cpu_us_all": [sum(x["cpu_s"] for x in r["nodes"]) / _n(r) * 1e6 for r in runs],
        "cmds_per_job": med(lambda r: sum(x["commands"] for x in r["nodes"]) / _n(r)),
        "workers_us_per_job": med(lambda r: r["workers_cpu_s"] / _n(r) * 1e6),
        "producer_us_per_job": med(lambda r: r["producer_cpu_s"] / _n(r) * 1e6),
        "script_time_share": med(
            lambda r: (
                sum(x["script_usec"] for x in r["nodes"])
                / max(1.0, sum(x["command_usec"] for x in r["nodes"]))
            )
        ),
        "per": per,
        "cpu_ratio": cpu_ratio,
        "cmd_ratio": cmd_ratio,
        "busiest_us": busiest_us,
        # The busiest primary on a dedicated core saturates first: the deployment's ceiling.
        "projected_per_s": 1e6 / busiest_us,
        "alive": all(r["alive"] for r in runs),
    }


def _n(r: dict[str, Any]) -> float:
    return float(sum(r["jobs_per_partition"]))


def _share(r: dict[str, Any], i: int, key: str) -> float:
    total = sum(x[key] for x in r["nodes"])
    return float(r["nodes"][i][key] / total) if total else 0.0


def tables(
    sums: list[dict[str, Any]],
    latencies: list[tuple[int, dict[str, float]]],
    rates: list[tuple[str, dict[str, float]]],
    fifos: list[tuple[str, dict[str, float]]],
    args: argparse.Namespace,
) -> list[str]:
    base = sums[0]["jobs_per_s"]
    thr = [
        "| primaries (= partitions) | end-to-end jobs/s: median [min, max] | vs 1 primary "
        "| producer's batched submits, jobs/s (while the workers run) | server CPU per job, "
        "all primaries (µs): median [min, max] | client CPU per job: workers + producer "
        "(µs) | commands per job, all primaries | time in scripts (share of command time) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sums:
        xs = s["jobs_per_s_all"]
        thr.append(
            f"| {s['size']} | {fmt(s['jobs_per_s'])} [{fmt(min(xs))}, {fmt(max(xs))}] | "
            f"{s['jobs_per_s'] / base:.2f}x | {fmt(s['submit_per_s'])} | "
            f"{s['cpu_us_per_job']:.0f} [{min(s['cpu_us_all']):.0f}, "
            f"{max(s['cpu_us_all']):.0f}] | {s['workers_us_per_job']:.0f} + "
            f"{s['producer_us_per_job']:.0f} | {s['cmds_per_job']:.1f} | "
            f"{s['script_time_share'] * 100:.0f}% |"
        )
    per = [
        "| primaries | primary (partition) | server CPU per job (µs of every job) | commands "
        "per job | script calls per job | share of the jobs | share of the job commands | "
        "share of the server CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sums:
        for i, p in enumerate(s["per"]):
            per.append(
                f"| {s['size']} | {i}{' (control)' if i == 0 and s['size'] > 1 else ''} | "
                f"{p['cpu_us_per_job']:.0f} | {p['cmds_per_job']:.1f} | "
                f"{p['scripts_per_job']:.2f} | {p['job_share'] * 100:.1f}% | "
                f"{p['cmd_share'] * 100:.1f}% | {p['cpu_share'] * 100:.1f}% |"
            )
    spread = [
        "| primaries | even share | busiest share of the job commands (ratio to even) | "
        f"busiest share of the server CPU (ratio to even) | within {SPREAD_LIMIT}x |",
        "|---|---|---|---|---|",
    ]
    for s in sums:
        even = 1 / s["size"]
        ok = s["cpu_ratio"] <= SPREAD_LIMIT and s["cmd_ratio"] <= SPREAD_LIMIT
        spread.append(
            f"| {s['size']} | {even * 100:.1f}% | {s['cmd_ratio'] * even * 100:.1f}% "
            f"({s['cmd_ratio']:.2f}x) | {s['cpu_ratio'] * even * 100:.1f}% "
            f"({s['cpu_ratio']:.2f}x) | {'yes' if ok else '**no**'} |"
        )
    proj = [
        "| primaries | measured jobs/s (2 shared cores) | busiest primary: server CPU per job "
        "(µs) | projected jobs/s, one dedicated core per primary (1 / that) | per primary |",
        "|---|---|---|---|---|",
    ]
    for s in sums:
        proj.append(
            f"| {s['size']} | {fmt(s['jobs_per_s'])} | {s['busiest_us']:.0f} | "
            f"{fmt(s['projected_per_s'])} | {fmt(s['projected_per_s'] / s['size'])} |"
        )
    rl = [
        "| partitions | jobs | limit | each partition enforces | achieved over "
        f"{args.rate_seconds:g} s (error) | starts in the first 1 s | most starts in any 1 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rates:
        p = int(r["partitions"])
        share = f"{args.rate} per {p} s" if p > 1 else f"{args.rate}/s"
        rl.append(
            f"| {p} | {label} | {args.rate}/s | {share} | {r['achieved']:.1f}/s "
            f"({r['error'] * 100:+.1f}%) | {r['first_1s']:.0f} | {r['peak_1s']:.0f} |"
        )
    lat = [
        "| primaries | submit -> result p50 (ms) | p99 (ms) | server CPU per job, all primaries "
        "(µs) | commands per job | script calls per job |",
        "|---|---|---|---|---|---|",
    ]
    for size, x in latencies:
        lat.append(
            f"| {size} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['cpu_us']:.0f} | "
            f"{x['commands']:.1f} | {x['scripts']:.2f} |"
        )
    ff = [
        "| partitions | worker | jobs | displacement max | mean | p95 | steps back (a job run "
        "after one submitted later) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, f in fifos:
        ff.append(
            f"| {int(f['partitions'])} | {label} | {int(f['n'])} | {f['max']:.0f} | "
            f"{f['mean']:.1f} | {f['p95']:.0f} | {f['steps_back']:.0f} |"
        )
    return ["\n".join(t) for t in (thr, per, spread, proj, lat, rl, ff)]


def headline(
    sums: list[dict[str, Any]],
    rates: list[tuple[str, dict[str, float]]],
    fifos: list[tuple[str, dict[str, float]]],
) -> str:
    """The figures other docs cite, as sentences computed from this run."""
    one, top = sums[0], sums[-1]
    clients = top["workers_us_per_job"] + top["producer_us_per_job"]
    spread_rate = next(r for label, r in rates if label == "spread by id" and r["partitions"] > 1)
    ff = [f for _label, f in fifos if f["partitions"] > 1]
    return "\n".join(
        [
            f"- one hot queue over {top['size']} primaries: the busiest primary carries "
            f"{max(top['cmd_ratio'], top['cpu_ratio']):.2f}x an even share (the bench fails "
            f"above {SPREAD_LIMIT}x);",
            f"- server CPU per no-op job (batched): {one['cpu_us_per_job']:.0f} µs on 1 primary, "
            f"{top['cpu_us_per_job']:.0f} µs in all on {top['size']} "
            f"({top['cpu_us_per_job'] / one['cpu_us_per_job']:.2f}x), of which the busiest "
            f"primary {top['busiest_us']:.0f} µs: with a dedicated core per primary about "
            f"{fmt(one['projected_per_s'])} jobs/s on 1 primary and "
            f"{fmt(top['projected_per_s'])} on {top['size']} "
            f"({top['projected_per_s'] / one['projected_per_s']:.1f}x);",
            f"- measured here, on 2 shared cores: {fmt(one['jobs_per_s'])} jobs/s on 1 primary, "
            f"{fmt(top['jobs_per_s'])} on {top['size']} "
            f"({top['jobs_per_s'] / one['jobs_per_s']:.2f}x; one primary uses at most one "
            "core, several spread over both, and then the 2 cores cap it near "
            f"{fmt(2e6 / (top['cpu_us_per_job'] + clients))} jobs/s: 2 cores / {clients:.0f} "
            f"µs of client and {top['cpu_us_per_job']:.0f} µs of server CPU per job);",
            f"- a {int(spread_rate['partitions'])}-partition rate limit: "
            f"{spread_rate['error'] * 100:+.1f}% off the limit over the run;",
            f"- FIFO over {int(ff[0]['partitions'])} partitions, one worker of concurrency 1: "
            f"run order at most {ff[0]['max']:.0f} places (mean {ff[0]['mean']:.1f}) from the "
            f"submit order with the default prefetch, {ff[1]['max']:.0f} (mean "
            f"{ff[1]['mean']:.1f}) with `--prefetch 0`.",
        ]
    )


def write_docs(
    meta: str, head: str, sums: list[dict[str, Any]], ts: list[str], args: argparse.Namespace
) -> None:
    thr, per, spread, proj, lat, rl, ff = ts
    top = sums[-1]
    clients = top["workers_us_per_job"] + top["producer_us_per_job"]
    DOCS.write_text(
        "# jobq on a Valkey Cluster: throughput, spread, rate limits, FIFO\n\n"
        "Written by `bench/cluster.py --write-docs` (`make cluster-bench`) on Valkey Clusters "
        "of 1, 2 and 3 primaries it builds itself in one run. A deployment on a Cluster has "
        "one partition per primary by default, so one queue (here `default`, the only one) is "
        "spread over every primary: each job is placed by a hash of its id.\n\n"
        f"{meta}\n\n"
        f"## Headline\n\n{head}\n\n"
        "**This machine has 2 cores, shared by every Valkey server, the 2 worker processes "
        "and the producer** (and whatever else ran: see the load average above). The "
        "measured throughput can grow with the primaries only until those 2 cores are full "
        "(one server runs commands on one thread, so one primary uses at most one core; "
        "several spread over both), so it says little about a Cluster on hosts of its own. "
        "What a Cluster buys is read from the server CPU each job costs on each primary, and "
        "what that projects for primaries on cores of their own (below).\n\n"
        "## Throughput\n\n"
        f"2 `jobq worker` subprocesses (`--pool thread -c 1`, adaptive prefetch), a fresh "
        f"prefix per run, warmed up; one producer submits {args.n:,} no-op jobs in batches of "
        f"{args.batch} (`submit_many`) while they run; the window is from the first submit to "
        "the queue's succeeded count reaching all of them. Results, events, leases and "
        "heartbeats are on, as users run jobq. Server CPU is INFO cpu (used_cpu_sys + "
        "used_cpu_user) on each primary over the window; commands are INFO commandstats "
        "over the window (those run inside scripts included; connection housekeeping and "
        "this bench's INFO probes excluded), divided by the jobs.\n\n"
        f"{thr}\n\n"
        "## Each primary\n\n"
        "Per primary, the same runs: its server CPU and commands divided by all the jobs "
        "(so the column adds up to the total above), and its shares. Partition 0 is also "
        "the control partition (leader lease, worker presence, maintenance's control "
        "calls).\n\n"
        f"{per}\n\n"
        "## Spread of one hot queue\n\n"
        f"The busiest primary's share against an even share (1/primaries); the bench fails if "
        f"either ratio is above {SPREAD_LIMIT}x.\n\n"
        f"{spread}\n\n"
        "## What dedicated cores would give\n\n"
        "The server side of a deployment saturates when its busiest primary uses a whole "
        "core: at 1 / (that primary's server CPU per job) jobs/s, i.e. about N / (CPU per "
        "job of one primary's share) with an even spread over N primaries. The projection "
        "assumes each primary on a core of its own and enough cores for the workers and "
        "producers beside them (they need some: here the 2 workers and the producer used "
        f"{clients:.0f} µs of CPU per job on {top['size']} primaries, against "
        f"{top['cpu_us_per_job']:.0f} µs in the servers), and that the CPU per job stays "
        "what it was measured at here: on dedicated cores the "
        "servers would run at a higher rate with batches of other sizes, so read it as the "
        "order of magnitude a Cluster adds, not a promise.\n\n"
        f"{proj}\n\n"
        "## One job at a time\n\n"
        f"{args.lat_n} jobs submitted one at a time, each waited for (`Job.result`), with the "
        "same 2 idle `jobq worker` processes: nothing is batched, so this is where a call per "
        "partition shows. Each idle worker blocks on every partition's wake-up list (one "
        "BLPOP per partition: a BLPOP over several slots is refused as CROSSSLOT); a claim "
        "asks the partition that rang, and the others only once they ring again or a 1 s "
        "wait passes with no ring (before that, every claim also asked each empty partition: "
        "one script call per partition per job: measured with this bench, 5.1 script calls "
        "per job on 2 primaries and 6.2 on 3, against 4.1 on 1, and 77 commands per job on "
        "3).\n\n"
        f"{lat}\n\n"
        "## Rate limits across partitions\n\n"
        f"A task limited to {args.rate}/s (`@app.task(rate_limit='{args.rate}/s')`), a "
        f"backlog of {int(args.rate * args.rate_seconds * 2) + 50} jobs on its own queue, one "
        "in-process worker (4 threads, its own maintenance ticks every 200 ms, the default) "
        f"for {args.rate_seconds:g} s from the first start; each job notes when it ran. On P "
        "partitions each partition enforces the limit over P times the period "
        "(`Store.set_rate_limits`), so the partitions add up to the limit when the jobs are "
        "spread evenly; the first job of each partition starts at once (an initial burst of "
        "up to P jobs), and rate-limited jobs wait in `scheduled` for their reserved start "
        "and are promoted by maintenance ticks, which sets how bunched starts can be within a "
        "second. A start slot is reserved when a job is first claimed, so when starts fall "
        "behind their slots (a busy machine delaying the worker or the ticks) the late ones "
        "start together: the limit holds on average (GCRA), and a 1 s window can hold more "
        "than the limit after such a stall, on one partition as on several. The last row is "
        "the case the split gets wrong: jobs that all share one "
        "routing key (a concurrency key, or a unique key) live in one partition, which "
        "enforces only its share of the limit.\n\n"
        f"{rl}\n\n"
        "## FIFO over partitions\n\n"
        f"{args.fifo_n} jobs submitted in order (batches of 100) to one queue, then one "
        "in-process worker of concurrency 1 runs them; each job notes its submit index. "
        "Displacement is |position in the run order - position in the submit order|. Within "
        "a partition the order is exact (one partition: 0); over several, a worker claims "
        "from the partitions in turn, a claim's worth at a time: with the default adaptive "
        "prefetch a worker running fast jobs claims up to 200 jobs per call, so a job can "
        "run up to about (partitions - 1) x 200 places from where it was submitted, whatever "
        "the backlog. With `--prefetch 0` it takes one job per claim, from each partition in "
        "turn, so the drift is how unevenly the ids fell: a partition holding more than its "
        "share of the backlog (by chance, about the square root of its size: ~12 jobs in "
        "600 over 3) falls behind the others as the backlog drains, and its last jobs run "
        "after theirs; a queue that is not a backlog drifts less.\n\n"
        f"{ff}\n"
    )
