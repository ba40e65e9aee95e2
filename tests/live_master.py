"""Helpers for the HTTP tests: the master's app on uvicorn in a thread (real HTTP on a free
port), and an in-process worker with a few tasks, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from jobq import App
from jobq.master import create_app
from jobq.master.transport import server_config
from jobq.registry import lookup
from jobq.tasks import current_job
from jobq.worker import Worker


class LiveMaster:
    """`create_app(app, token)` served by uvicorn on 127.0.0.1:<free port>."""

    def __init__(
        self,
        app: App,
        token: str | None = None,
        *,
        server: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.web = create_app(app, token, **kwargs)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        # The master's own uvicorn settings (header deadline, connection cap), `server` overrides.
        config = server_config(self.web, **{"timeout_graceful_shutdown": 1, **(server or {})})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> LiveMaster:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test HTTP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


def register_tasks(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def boom(msg: str = "nope") -> None:
        raise ValueError(msg)

    @app.task
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task
    def double(x: int) -> int:
        return 2 * x

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task
    def report_progress(seconds: float) -> str:
        """Reports 40% with a note, then naps (so the progress can be read while it runs)."""
        ctx = current_job()
        assert ctx is not None
        ctx.progress(0.4, "parsed 4000 rows")
        time.sleep(seconds)
        return "done"


class LiveWorker:
    """A real `jobq.worker.Worker` (thread pool) serving `queues`, run in a thread; named (and
    in a group) when targeted jobs are tested."""

    def __init__(
        self,
        app: App,
        queues: list[str] | None = None,
        concurrency: int = 2,
        *,
        name: str | None = None,
        group: str | None = None,
    ) -> None:
        if not app.tasks:
            register_tasks(app)
        self.worker = Worker(
            app,
            queues or ["default"],
            concurrency=concurrency,
            grace_s=1.0,
            name=name,
            group=group,
        )
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def start(self) -> LiveWorker:
        self.thread.start()
        # Back once its tasks are in the catalog (registry.py): a by-name submit before that
        # would be answered with a "no live worker has registered task" warning.
        app = self.worker.app
        deadline = time.monotonic() + 30
        while not all(d.seen_ms for d in lookup(app.store, app.tasks).values()):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test worker did not publish its tasks")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.worker.stop(immediate=True)
        self.thread.join(20)
