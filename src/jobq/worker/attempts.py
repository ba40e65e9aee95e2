"""What every pool shares: the gate asked before an attempt starts, the outcome stamps, the
`Pool` protocol the worker drives, and how a process-pool child finds the app. Its own module so
that the thread and asyncio pools (pools.py) and the process pool (procpool.py) build on it
without importing each other.
"""

from __future__ import annotations

import importlib
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from ..errors import JobCancelled
from ..model import Claimed, Outcome
from .runner import NO_RETRY, failure

if TYPE_CHECKING:
    from ..client import App

OnDone = Callable[[Outcome], None]
#: Asked right before an attempt starts: True = start it, False = never (its lease is gone, see
#: leases.py), None = not yet (heartbeats are failing past the lease; ask again shortly).
Gate = Callable[[Claimed], "bool | None"]
GATE_POLL_S = 0.1
Attempt = tuple[str, str]  # (job id, token)


def stamped(outcome: Outcome, began: float) -> Outcome:
    """The outcome with the moment its attempt began (`time.monotonic()`)."""
    return replace(outcome, began_s=began)


def cancelled(c: Claimed, how: str = "") -> Outcome:
    exc = JobCancelled(f"job {c.id} was cancelled while running{how}")
    return failure(c, exc, NO_RETRY, tb=False)


def always(_c: Claimed) -> bool:
    return True


def wait_gate(may_start: Gate, c: Claimed) -> bool:
    """Block this pool thread until the gate says start (True) or never (False)."""
    while (verdict := may_start(c)) is None:
        time.sleep(GATE_POLL_S)
    return verdict


class Pool(Protocol):
    def start(self) -> None: ...
    def submit(self, c: Claimed) -> None: ...
    def drain_pending(self) -> list[Claimed]:
        """Take back jobs accepted but not started (to requeue them at shutdown)."""
        ...

    def stop(self) -> None:
        """Let running attempts finish, then end."""
        ...

    def kill(self) -> None:
        """End running attempts now where the pool can."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Stop one running attempt (a cancel the task ignored); False if the pool can't."""
        ...


def load_app(path: str) -> App:
    """Import ``module:attribute`` (or ``module.attribute``) and return the App it names."""
    from ..client import App
    from ..errors import ConfigError

    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"app path {path!r} should look like 'package.module:app'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for app {path!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"{path!r} is not a jobq App (found {type(app).__name__})")
    return app


#: Signals a child ignores: the parent decides when attempts stop (a SIGTERM to the whole
#: process group, systemd's default, must not kill running attempts behind the parent's back).
PARENT_DECIDES = {signal.SIGINT, signal.SIGTERM}
