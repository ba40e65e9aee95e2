"""Periodic jobs: cron expressions or fixed intervals, declared in code or added at run time.

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

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from .errors import ConfigError
from .names import check_name, check_queue

MISSED_POLICIES = ("skip", "once")


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
        if self.every_s is not None and self.every_s < 0.001:
            raise ConfigError(f"periodic {self.name!r}: every must be at least 0.001 seconds")
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
