"""The rule for every number a user gives jobq (submit options, task defaults, progress,
periodic intervals): a real number, finite, in its range, and whole where jobq keeps an
integer. Each breach raises `InvalidOption` naming the option, the value and what is accepted,
instead of a NaN turning into ``null`` on the wire, an infinity into an OverflowError from deep
inside a submit, a fraction into a silently truncated priority, or a timeout of 0 into a job
killed before it starts."""

from __future__ import annotations

import math
import numbers

from .errors import InvalidOption

YEAR_S = 366 * 86_400
#: Longest timeout and back-off base accepted, seconds (the HTTP schemas use the same bounds).
MAX_TIMEOUT_S = YEAR_S
#: Furthest ahead a job may be scheduled (delay or eta), seconds: 10 years.
MAX_DELAY_S = 10 * YEAR_S
#: Most retries a job may ask for.
MAX_RETRIES = 1000
#: Longest result TTL, seconds.
MAX_RESULT_TTL_S = 10 * YEAR_S


def number(field: str, value: object) -> float:
    """`value` as a finite float; InvalidOption if it is not a real number or not finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidOption(f"{field} must be a number, not {type(value).__name__} {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise InvalidOption(f"{field} must be a finite number, not {value!r}")
    return f


def bounded(field: str, value: object, lo: float, hi: float, unit: str = "") -> float:
    """A finite number in [lo, hi]."""
    f = number(field, value)
    if not lo <= f <= hi:
        raise InvalidOption(f"{field} {value!r} is outside [{lo:g}, {hi:g}]{unit}")
    return f


def whole(field: str, value: object, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] (an integral float such as 3.0 is fine, 2.5 is not)."""
    f = number(field, value)
    if not f.is_integer():
        raise InvalidOption(f"{field} must be a whole number, not {value!r}")
    if not lo <= f <= hi:
        raise InvalidOption(f"{field} {value!r} is outside [{lo}, {hi}]")
    return int(f)


def timeout_s(value: object, field: str = "timeout") -> float | None:
    """A per-attempt time limit: None (no limit) or seconds in (0, MAX_TIMEOUT_S]."""
    if value is None:
        return None
    f = number(field, value)
    if not 0 < f <= MAX_TIMEOUT_S:
        raise InvalidOption(
            f"{field} must be > 0 seconds, or None for no limit (at most a year), not {value!r}"
        )
    return f


def fraction(value: object, field: str = "progress") -> float:
    """A progress fraction in [0, 1]."""
    return bounded(field, value, 0.0, 1.0)
