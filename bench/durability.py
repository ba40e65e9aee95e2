"""What the durable mode costs: the same workloads with and without it, on one private server.

One Valkey with AOF on (its files in a directory on disk, not tmpfs: `--dir`), and per mode a
fresh key prefix and one `jobq worker` started with that mode's settings:

- default: ``appendfsync everysec``, writes acknowledged at once (up to ~1 s lost on a power cut)
- durable: ``appendfsync always`` and WAITAOF 1 0 on every submit and every batch of outcomes
  (what ``JOBQ_DURABLE=1`` gives with the embedded server)
- waitaof-everysec (single submits only, `--everysec-n` of them): WAITAOF against a server left
  at ``everysec``, as a durable client gets on a server it does not configure

Measured per mode: single submits (one job per call, no worker running), batch submits
(`submit_many`, batches of `--batch`), then submit -> result latency, one job at a time with the
idle worker. Modes alternate within each repetition; figures are medians over `--reps`.

    .venv/bin/python bench/durability.py --n 2000 --latency-n 300 --reps 3 [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from valkey_server import start_valkey

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks.md"
START, END = "<!-- durability:start -->", "<!-- durability:end -->"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def run_mode(url: str, durable: bool, args: argparse.Namespace) -> dict[str, float]:
    """Single submits, batch submits and latency in one mode, on a fresh prefix."""
    from jobq import App

    prefix = f"dur{uuid.uuid4().hex[:8]}"
    app = App(url, prefix=prefix, durable=durable)
    out: dict[str, float] = {}
    worker: subprocess.Popen[bytes] | None = None
    try:
        app.store.scripts.load()
        app.submit("noop")  # warm: connection, library, durable-mode probe
        t = time.perf_counter()
        for _ in range(args.n):
            app.submit("noop")
        out["single_per_s"] = args.n / (time.perf_counter() - t)

        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * args.batch
        t = time.perf_counter()
        for _ in range(args.n_batches):
            app.submit_many("noop", calls)
        out["batch_per_s"] = args.n_batches * args.batch / (time.perf_counter() - t)

        env = {
            **os.environ,
            "JOBQ_URL": url,
            "JOBQ_PREFIX": prefix,
            "JOBQ_DURABLE": "1" if durable else "0",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        cmd = [sys.executable, "-m", "jobq", "worker", "bench_tasks:app", "--pool", "thread"]
        worker = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        total = 1 + args.n + args.n_batches * args.batch
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # the backlog drains before latency is measured
            info = {q.name: q for q in app.queue_info()}.get("default")
            if info is not None and info.succeeded >= total:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the worker did not drain the backlog within 600 s")
        lat = []
        for _ in range(args.latency_n):
            t = time.perf_counter()
            app.submit("noop").result(timeout=30)
            lat.append((time.perf_counter() - t) * 1000)
        out["latency_p50_ms"] = statistics.median(lat)
        out["latency_p99_ms"] = pct(lat, 99)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        app.close()
    return out


def single_only(url: str, n: int) -> float:
    """Single durable submits/s against the server as it is configured now."""
    from jobq import App

    app = App(url, prefix=f"dur{uuid.uuid4().hex[:8]}", durable=True)
    try:
        app.submit("noop")
        t = time.perf_counter()
        for _ in range(n):
            app.submit("noop")
        return n / (time.perf_counter() - t)
    finally:
        app.close()


def fsync_mode(r: redis.Redis, mode: str) -> None:
    r.config_set("appendfsync", mode)


METRICS = [
    ("single_per_s", "single submit (jobs/s)", True),
    ("batch_per_s", "batch submit (jobs/s)", True),
    ("latency_p50_ms", "submit -> result p50 (ms)", False),
    ("latency_p99_ms", "submit -> result p99 (ms)", False),
]


def fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="single submits per mode")
    ap.add_argument("--batch", type=int, default=1000, help="jobs per submit_many call")
    ap.add_argument("--n-batches", type=int, default=10)
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--everysec-n", type=int, default=20, help="0 = skip that mode")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--dir", default=None, help="server files here (default: a temp dir)")
    ap.add_argument("--write-docs", action="store_true", help=f"update the section in {DOCS}")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="jobq-bench-dur-", dir=args.dir))
    fs = subprocess.run(
        ["df", "-T", str(data)], capture_output=True, text=True, check=False
    ).stdout.split("\n")[-2:-1]
    extra = ("--appendonly", "yes", "--appendfsync", "everysec")
    server, url = start_valkey(data, extra)
    sys.path.insert(0, str(HERE))
    r = redis.Redis.from_url(url)
    runs: dict[str, list[dict[str, float]]] = {"default": [], "durable": []}
    everysec: list[float] = []
    try:
        version = r.info("server").get("valkey_version", "?")
        for rep in range(args.reps):
            order = ["default", "durable"] if rep % 2 == 0 else ["durable", "default"]
            for mode in order:
                fsync_mode(r, "always" if mode == "durable" else "everysec")
                runs[mode].append(run_mode(url, mode == "durable", args))
                print(f"rep {rep + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
            if args.everysec_n:
                fsync_mode(r, "everysec")
                everysec.append(single_only(url, args.everysec_n))
    finally:
        r.close()
        server.kill()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)

    med = {
        m: {k: statistics.median(x[k] for x in rs) for k, _, _ in METRICS} for m, rs in runs.items()
    }
    lines = [
        "| workload | default (everysec) | durable (always + WAITAOF) | cost |",
        "|---|---|---|---|",
    ]
    for key, label, higher_better in METRICS:
        d, s = med["default"][key], med["durable"][key]
        cost = d / s if higher_better else s / d
        lines.append(f"| {label} | {fmt(d)} | {fmt(s)} | {cost:.2f}x |")
    if everysec:
        e = statistics.median(everysec)
        lines.append(
            f"| single submit, WAITAOF on a server left at everysec (jobs/s) | "
            f"{fmt(med['default']['single_per_s'])} | {fmt(e)} | "
            f"{med['default']['single_per_s'] / e:.0f}x |"
        )
    cmd = "bench/durability.py " + " ".join(sys.argv[1:])
    meta = (
        f"- command: `.venv/bin/python {cmd.strip()}`\n"
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Valkey {version}, "
        f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}; "
        f"server files on `{' '.join(fs[0].split()[:2]) if fs else '?'}`; "
        f"{args.reps} repetition(s), medians; {args.n} single submits, {args.n_batches} x "
        f"{args.batch} batch, {args.latency_n} latency samples per mode; load average at the "
        f"end {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: compare the "
        "ratios, not the absolute figures)"
    )
    table = "\n".join(lines)
    print(meta)
    print()
    print(table)
    if args.write_docs:
        write_docs(meta, table)
    return 0


def write_docs(meta: str, table: str) -> None:
    section = (
        f"{START}\n## Durable mode: what it costs\n\n"
        "Written by `bench/durability.py` (not by compare.py). The same workloads on one "
        "private Valkey with AOF on, with and without the durable mode, modes alternating; "
        "*cost* is how many times slower (rates) or longer (latencies) the durable mode is. "
        "Durable mode = `appendfsync always` plus WAITAOF on every submit and every batch of "
        "outcomes (what `JOBQ_DURABLE=1` gives with the embedded server); the default may lose "
        "up to about a second of acknowledged writes on a power cut.\n\n"
        f"{meta}\n\n{table}\n\n"
        "One fsync per write is the price: a single submit waits for its own fsync, a batch "
        "shares one, and submit -> result pays several (with `appendfsync always` the server "
        "fsyncs every write before replying: the submit, the claim, the outcome). "
        "Against a server left at `everysec`, each WAITAOF waits for the server's next "
        "background fsync (the last row): use `appendfsync always` with the durable mode.\n"
        f"{END}\n"
    )
    text = DOCS.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
