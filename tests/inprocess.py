"""A worker and a master's maintenance loop in threads of the test process, serving one App:
the in-process deployment the broker-error, failover and topology tests run jobs through."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from jobq import App
from jobq.maintenance import Maintainer
from jobq.worker import Worker


@contextlib.contextmanager
def deployment(app: App, concurrency: int = 4) -> Iterator[tuple[Worker, Maintainer]]:
    """A worker (thread) and a master's maintenance loop (thread) serving `app`; on exit,
    asserts that neither died on the way, then stops both."""
    w = Worker(app, concurrency=concurrency, maintenance=False, grace_s=5)
    wt = threading.Thread(target=w.run, name="test-worker", daemon=True)
    wt.start()
    m = Maintainer(app.store, tick_ms=100, leader_ms=3000, is_master=True, name="test-master")
    mt = m.start_thread()
    try:
        yield w, m
        assert wt.is_alive(), "the worker's claim loop died"
        assert mt.is_alive(), "the maintenance loop died"
        for t in w._threads:
            assert t.is_alive(), f"worker thread {t.name} died"
    finally:
        w.stop()
        wt.join(30)
        m.stop_event.set()
        mt.join(10)
        m.stop()
