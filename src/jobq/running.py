"""What `jobq worker` and `jobq master` do once their options are parsed: check the server
(password, eviction policy), build the worker or the maintenance loop, run it. No click here:
cli.py parses and calls these (and prints what they hand back)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from types import FrameType

from .client import App
from .errors import AuthFailed, BrokerError, UsageProblem
from .maintenance import Maintainer
from .memory import check_policy
from .names import check_name, check_queue
from .shard import redact
from .worker import Worker
from .worker.pools import load_app

log = logging.getLogger("jobq.master")


def check_server(app: App, strict: bool, who: str) -> None:
    """End here on a wrong or missing password (`AuthFailed`, exit 3), and warn (with `strict`
    refuse) if the server may evict keys. An unreachable server is not an error yet: the
    loops wait for it."""
    try:
        app.store.ping()
        state = app.store.memory()
    except AuthFailed:
        raise
    except BrokerError as exc:
        logging.getLogger("jobq").warning("cannot check maxmemory-policy yet (%s)", exc)
        return
    check_policy(state, redact(app.store.url), strict, who)


@dataclass(frozen=True)
class WorkerOptions:
    """`jobq worker`'s options, as parsed."""

    queues: str
    concurrency: int
    pool: str
    name: str | None
    group: str | None
    prefetch: int | None
    grace_s: float
    cancel_grace_s: float
    strict: bool


def run_worker(app_path: str, opts: WorkerOptions, url: str | None, prefix: str | None) -> None:
    """Import APP_PATH's App (from the current directory too), point it at the deployment and
    serve until SIGTERM/SIGINT."""
    names = [check_queue(q.strip(), "--queues") for q in opts.queues.split(",") if q.strip()]
    if not names:  # `-q ''` or `-q ,`: serving `default` instead would hide the mistake
        raise UsageProblem(f"--queues {opts.queues!r} names no queue: give e.g. -q high,default")
    if opts.name is not None:
        check_name("--name", opts.name)
    if opts.group is not None:
        check_name("--group", opts.group)
    sys.path.insert(0, os.getcwd())
    app = load_app(app_path)
    app.configure(url=url, prefix=prefix)
    check_server(app, opts.strict, "the worker")
    Worker(
        app,
        names,
        concurrency=opts.concurrency,
        pool=opts.pool,
        name=opts.name,
        group=opts.group,
        prefetch=opts.prefetch,
        app_path=app_path,
        grace_s=opts.grace_s,
        cancel_grace_s=opts.cancel_grace_s,
    ).run()


def master_loop(app: App, strict: bool) -> Maintainer:
    """The master's maintenance loop for `app`, checked against the server first and stopped
    by SIGTERM/SIGINT."""
    check_server(app, strict, "the master")
    m = Maintainer(
        app.store,
        tick_ms=app.settings.tick_ms,
        leader_ms=app.settings.leader_ms,
        is_master=True,
        worker_gone_ms=app.settings.worker_gone_ms,
        lease_ms=app.settings.lease_ms,
        max_lost=app.settings.max_lost,
    )

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread, so the main thread must never be inside the Event's lock
        # when it fires (it would never be released): the loop runs off the main thread
        # (`Maintainer.run_joined`), and a second signal while `stop()` sets the Event finds
        # it set already (`is_set` takes no lock).
        if not m.stop_event.is_set():
            m.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("master %s on %s", m.name, redact(app.store.url))
    return m
