"""Imported at start-up by a process whose PYTHONPATH holds this directory (the clock-skew
scenario): shifts the wall clock the process sees by CHAOS_SKEW_S seconds, or by the number in
the file CHAOS_SKEW_FILE (re-read every 0.2 s, so a test can step the clock mid-run). Monotonic
clocks stay true, as on a host whose wall clock is stepped. (C code that reads the clock itself,
e.g. datetime.now(), is not shifted.)"""

import os
import time

_time, _time_ns, _mono = time.time, time.time_ns, time.monotonic
_file = os.environ.get("CHAOS_SKEW_FILE")
_state = {"skew": float(os.environ.get("CHAOS_SKEW_S", "0") or 0), "read": -1.0}


def _skew() -> float:
    if _file and _mono() - _state["read"] > 0.2:
        _state["read"] = _mono()
        try:
            with open(_file) as f:
                _state["skew"] = float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
    return _state["skew"]


if _file or _state["skew"]:
    time.time = lambda: _time() + _skew()
    time.time_ns = lambda: _time_ns() + int(_skew() * 1e9)
