"""`jobq demo`: the whole system on one machine, on the embedded default.

Starts (or attaches to) the embedded Valkey, a master and two worker processes, submits a few
hundred jobs — some fail once and are retried, some are delayed, a few always fail and end in the
dead-letter set — follows them with a progress bar, prints a summary and shuts everything down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import click

from .client import App, Job
from .errors import JobFailed
from .tasks import current_job

app = App()


@app.task(retries=2, backoff=0.2)
def square(x: int) -> int:
    """A plain job."""
    return x * x


@app.task(retries=3, backoff=0.2)
def flaky(x: int) -> int:
    """Fails on its first attempt, succeeds on the retry."""
    ctx = current_job()
    if ctx is not None and ctx.attempt == 1:
        raise ConnectionError(f"simulated transient failure for {x}")
    return x + 1


@app.task(retries=1, backoff=0.1)
def broken(x: int) -> None:
    """Always fails: ends in the dead-letter set after its retry."""
    raise ValueError(f"bad input {x}")


@app.task()
def slow(ms: int) -> int:
    """Sleeps, so both workers are seen sharing the load."""
    time.sleep(ms / 1000)
    return ms


def run_demo(n: int, data_dir: str) -> int:
    from .embedded import ensure_server, server_url, stop_server
    from .store import redact

    started_here = server_url(data_dir) is None
    url = ensure_server(data_dir)
    prefix = f"demo-{os.getpid()}"
    app.configure(url=url, prefix=prefix)
    click.echo(f"embedded Valkey: {redact(url)} ({'started' if started_here else 'attached'})")
    env = {**os.environ, "JOBQ_URL": url, "JOBQ_PREFIX": prefix}
    cmd = [sys.executable, "-m", "jobq"]
    procs = [
        subprocess.Popen([*cmd, "master"], env=env, stderr=subprocess.DEVNULL),
        *[
            subprocess.Popen(
                [
                    *cmd,
                    "worker",
                    "jobq.demo:app",
                    "-c",
                    "4",
                    "--pool",
                    "process",
                    "--name",
                    f"demo-worker-{i}",
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            for i in (1, 2)
        ],
    ]
    click.echo("master and 2 workers (4 processes each) started")
    try:
        return _drive(n)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if started_here:
            stop_server(data_dir)
        click.echo("workers, master" + (" and server" if started_here else "") + " stopped")


def _drive(n: int) -> int:
    t0 = time.monotonic()
    jobs: list[tuple[str, Job[object]]] = []
    quarter = max(n // 4, 1)
    jobs += [("square", j) for j in square.map([(i,) for i in range(quarter * 2)])]
    jobs += [("flaky", flaky.submit(i)) for i in range(quarter // 2)]
    jobs += [("slow", slow.submit(20)) for _ in range(quarter // 2)]
    later = square.with_options(delay=1.0)
    jobs += [("delayed", later.submit(i)) for i in range(n - len(jobs) - 5)]
    jobs += [("broken", broken.submit(i)) for i in range(5)]
    click.echo(f"submitted {len(jobs)} jobs in {time.monotonic() - t0:.2f}s")
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    with click.progressbar(jobs, label="running", show_pos=True) as bar:
        for kind, job in bar:
            try:
                job.result(timeout=60)
                outcomes[kind]["succeeded"] += 1
            except JobFailed:
                outcomes[kind]["failed"] += 1
    elapsed = time.monotonic() - t0
    attempts: Counter[str] = Counter()
    for kind, job in jobs:
        attempts[kind] += job.info().attempt
    click.echo(f"\n{'kind':<10}{'jobs':>6}{'ok':>6}{'failed':>8}{'attempts':>10}")
    for kind in ("square", "flaky", "slow", "delayed", "broken"):
        c = outcomes[kind]
        total = c["succeeded"] + c["failed"]
        click.echo(f"{kind:<10}{total:>6}{c['succeeded']:>6}{c['failed']:>8}{attempts[kind]:>10}")
    dead = app.store.dead_count()
    click.echo(f"\n{len(jobs)} jobs in {elapsed:.2f}s; dead-lettered: {dead}")
    expected_failed = outcomes["broken"]["failed"] == 5
    everything_else_ok = all(outcomes[k]["failed"] == 0 for k in outcomes if k != "broken")
    return 0 if expected_failed and everything_else_ok else 1
