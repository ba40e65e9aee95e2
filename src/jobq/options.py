"""Job options: what a task declares as its defaults (`TaskOptions`) and what one submit may
set on top of them (`SUBMIT_OPTIONS`, typed as `SubmitOptions`).

This module sits at the bottom of the public API (it needs only the errors): `Task`, `App`,
the worker and the CLI all read the same names from here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypedDict

from .errors import ConfigError

#: Options `Task.submit` takes out of its keyword arguments; everything else goes to the task.
SUBMIT_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "delay",
        "eta",
        "retries",
        "backoff",
        "timeout",
        "job_id",
        "result_ttl",
        "depends_on",
        "pass_results",
        "unique_key",
        "worker",
        "worker_group",
        "fallback",
        "concurrency_key",
        "concurrency_limit",
    }
)


class SubmitOptions(TypedDict, total=False):
    """The options of one submit, for type checkers (`Task.with_options`, `submit_with`, `map`):
    the same names as SUBMIT_OPTIONS. None (or leaving one out) keeps the task's default."""

    queue: str | None
    priority: int | None
    delay: float | None
    """Seconds from now before the job may run (or `eta`, not both)."""
    eta: float | dt.datetime | None
    """When the job may run: a datetime (naive = UTC) or a Unix timestamp."""
    retries: int | None
    backoff: float | None
    timeout: float | None
    job_id: str | None
    """Idempotency: a second submit with this id returns the first job."""
    result_ttl: int | None
    depends_on: Any
    """Jobs (handles or ids) or a submitted group that must succeed first."""
    pass_results: bool | str | None
    unique_key: str | None
    worker: str | None
    worker_group: str | None
    fallback: bool | str | None
    concurrency_key: str | None
    concurrency_limit: int | None


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Defaults a task applies to every job unless the submit call overrides them."""

    queue: str = "default"
    priority: int = 0
    retries: int = 0
    backoff: float = 1.0
    """Base of the exponential back-off between attempts, in seconds (jittered)."""
    timeout: float | None = None
    """Hard limit per attempt, in seconds; None = no limit."""
    result_ttl: int | None = None
    rate_limit: str | None = None
    """At most N starts per period across all workers, e.g. "100/s", "10/m", "5/2.5s"."""


def parse_rate(spec: str) -> tuple[int, int]:
    """ "100/s" -> (100, 1000): count and period in ms."""
    count, _, per = spec.partition("/")
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    unit = next((u for u in ("ms", "s", "m", "h") if per.endswith(u)), None)
    try:
        if unit is None:
            raise ValueError
        amount = float(per[: -len(unit)] or 1)
        return int(count), int(amount * units[unit])
    except ValueError:
        raise ConfigError(
            f"rate limit {spec!r} should look like '100/s', '10/m' or '5/2.5s'"
        ) from None
