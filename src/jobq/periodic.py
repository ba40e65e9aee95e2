"""Periodic jobs: cron expressions or fixed intervals, declared in code or added at run time.

Each spec says where it comes from (`origin`): "code" for ``@app.periodic`` (every worker of
the app declares it again when it starts), "cli" for one added at run time. `jobq periodic
remove` refuses a spec from code unless ``--force`` (it would come back).

A spec lives in the ``periodic`` hash; its next due time (ms) in the ``periodic:next`` zset. The
maintenance leader fires due specs: one transaction (WATCH on the due time and the leader lease,
then MULTI/EXEC) submits the job under the id ``periodic:<name>:<due ms>`` and moves the due time
forward (``ZADD XX GT``), and commits only if the slot is still due and the lease still the
firing master's. So a slot fires exactly once however many masters run: one that dies mid-fire
committed both writes or neither, and one paused past its lease (SIGSTOP, a long GC) that
resumes mid-tick finds the slot moved or the lease taken and fires nothing, even after the
slot's job has expired. The job id is a second guard (a second submit of it makes no job).

Missed ticks (no master led: none ran, or a takeover after the leader died, which takes up to the
leader lease): ``missed="skip"`` drops ticks older than one period (or a minute, whichever is
less) and waits for the next; ``missed="once"`` runs one job (the oldest missed tick's id) for
all of them. Either way the next job is the first tick after the new leader's clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from .errors import ConfigError, InvalidOption
from .names import check_name, check_queue

MISSED_POLICIES = ("skip", "once")
#: Where a spec comes from (`PeriodicSpec.origin`).
ORIGINS = ("code", "cli")
#: Longest interval of an ``every=`` schedule, seconds.
MAX_EVERY_S = 10 * 366 * 86_400


@dataclass(frozen=True, slots=True)
class PeriodicSpec:
    """One periodic job: what to run, and when."""

    name: str
    task: str
    cron: str | None = None
    every_s: float | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    missed: str = "skip"
    retries: int = 0
    """The task's retries and priority, which the fired jobs take (the maintenance loop may
    run where the task is not registered)."""
    priority: int = 0
    origin: str = "cli"
    """Where the spec comes from: "code" (``@app.periodic``, declared again by every worker
    that starts, so removing it at run time does not last) or "cli" (added at run time:
    `jobq periodic add`, ``PUT /v1/periodic``; specs stored before origins were kept count
    as such)."""

    def __post_init__(self) -> None:
        check_name("periodic name", self.name)  # it becomes part of each tick's job id
        check_name("task", self.task)
        check_queue(self.queue)
        if (self.cron is None) == (self.every_s is None):
            raise ConfigError(f"periodic {self.name!r}: give exactly one of cron or every")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ConfigError(f"periodic {self.name!r}: invalid cron expression {self.cron!r}")
        if self.every_s is not None and not (
            isinstance(self.every_s, int | float)
            and not isinstance(self.every_s, bool)
            and math.isfinite(self.every_s)
            and 0.001 <= self.every_s <= MAX_EVERY_S
        ):
            raise InvalidOption(
                f"periodic {self.name!r}: every must be a number of seconds from 0.001 to "
                f"{MAX_EVERY_S} (10 years), not {self.every_s!r}"
            )
        if self.cron is not None:
            from croniter import CroniterBadDateError

            try:
                self.next_after(0)
                self.next_after(4_102_444_800_000)  # 2100: a date that exists once is not enough
            except CroniterBadDateError:
                raise ConfigError(
                    f"periodic {self.name!r}: cron expression {self.cron!r} never fires"
                ) from None
        if self.missed not in MISSED_POLICIES:
            raise ConfigError(f"periodic {self.name!r}: missed must be 'skip' or 'once'")
        if self.origin not in ORIGINS:
            raise ConfigError(f"periodic {self.name!r}: origin must be 'code' or 'cli'")

    def removal_refused(self) -> str | None:
        """Why removing this spec at run time would not last (None: it would): one declared
        in code is declared again by the next worker that starts."""
        if self.origin != "code":
            return None
        return (
            f"periodic {self.name!r} is defined in code (by @app.periodic on task "
            f"{self.task!r} in the app), so the next worker that starts brings it back: remove "
            "it from the code (or pass --force to remove it until then)"
        )

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> PeriodicSpec:
        data = orjson.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def next_after(self, t_ms: int) -> int:
        """The first due time strictly after `t_ms`."""
        if self.every_s is not None:
            step = int(self.every_s * 1000)
            return (t_ms // step + 1) * step
        from croniter import croniter

        return int(croniter(self.cron, t_ms / 1000).get_next(float) * 1000)

    def period_ms(self, t_ms: int) -> int:
        nxt = self.next_after(t_ms)
        return self.next_after(nxt) - nxt

    def should_fire(self, due_ms: int, now_ms: int) -> bool:
        """Whether the tick due at `due_ms` still fires at `now_ms` (the missed-tick policy)."""
        if self.missed == "once":
            return True
        return now_ms - due_ms <= min(self.period_ms(due_ms), 60_000)

    def job_id(self, due_ms: int) -> str:
        return f"periodic:{self.name}:{due_ms}"
