"""What every route shares: the jobq App, the master's maintainer, the event hub, the rates,
and the router of the reads that may come from a replica (`replicas.py`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from ..replicas import ReadRouter

if TYPE_CHECKING:
    from ..client import App
    from ..maintenance import Maintainer
    from .hub import EventHub
    from .rates import RateTracker


log = logging.getLogger("jobq.master")


@dataclass(slots=True)
class Context:
    app: App
    maintainer: Maintainer | None
    hub: EventHub
    rates: RateTracker
    trusted: bool = False
    """Every request was authenticated (the master has a token): callers may keep results
    forever (result_ttl <= 0); anonymous ones may not fill the server for good."""
    router: ReadRouter | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reads(self) -> ReadRouter:
        """Where the stale-tolerant reads go: the job list, queue stats, workers and /metrics
        (a fresh replica with ``read_from_replicas``, else the primary). Everything else, and
        every read that must see a write just made (a job's status), uses ``app.store``."""
        if self.router is None:
            with self._lock:
                if self.router is None:
                    s = self.app.settings
                    store = self.app.store
                    enabled = s.read_from_replicas
                    if enabled and store.partitions > 1:
                        # The replica reads of replicas.py read one server's keys; a
                        # deployment of several partitions reads every one from its primary.
                        log.warning(
                            "read_from_replicas is for a deployment of one partition; this one "
                            "has %d: reading from the primaries",
                            store.partitions,
                        )
                        enabled = False
                    self.router = ReadRouter(
                        store,
                        enabled=enabled,
                        max_staleness_ms=s.max_staleness_ms,
                    )
        return self.router

    def close(self) -> None:
        """Stop what this context started (the replica probe and its connections)."""
        if self.router is not None:
            self.router.close()


def ctx(request: Request) -> Context:
    """FastAPI dependency: the Context of the app serving this request."""
    c: Context = request.app.state.jobq
    return c
