"""The maintenance half of `Store` over partitions: what runs in every partition (reaping,
promotion, trims, the registry walk: each partition even while another fails, `each_shard`)
and what only the control partition holds (the leader lease, master and worker presence,
periodic specs). `Store` inherits it, as `Shard` inherits
`Upkeep`, so the module routing jobs stays small."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .errors import BrokerUnavailable
from .model import JobSpec
from .periodic import PeriodicSpec
from .spread import Partitioned, PartitionOutage, each_shard
from .upkeep import Taken

if TYPE_CHECKING:
    from .shard import Shard

T = TypeVar("T")


class SpreadUpkeep(Partitioned):
    """Maintenance calls of a deployment; `Store` provides `shards` and `control`."""

    def _sweep(self, call: Callable[[Shard], T]) -> list[T]:
        """`call(shard)` on every partition that answers. A maintenance sweep is repeated every
        tick, so a partition without a primary (a failover under way) is skipped, logged once
        per episode, and the others are swept all the same; only when no partition answers
        does the error reach the maintenance loop (its outage logging, its grace)."""
        shards = self.shards
        outage: PartitionOutage | None = getattr(self, "_sweep_outage", None)
        if outage is None:
            outage = PartitionOutage(len(shards), "maintenance", getattr(self, "_serving", None))
            self._sweep_outage = outage
        out: list[T] = []
        first: BrokerUnavailable | None = None
        for i, shard in enumerate(shards):
            if outage.skipped(i):  # failed a moment ago, and still served by the same node
                continue
            try:
                out.append(call(shard))
            except BrokerUnavailable as exc:
                outage.failed(i, exc)
                first = first or exc
                continue
            outage.ok(i)
        if first is not None and not out:
            raise first
        return out

    # -- maintenance: every partition --------------------------------------------------------

    def server_time_ms(self) -> int:
        return self.control.server_time_ms()

    def server_run_id(self) -> str:
        """The run ids of the servers holding the partitions: it changes when any of them
        restarts or fails over ('?' for a partition that does not answer: its return with a
        new primary changes the id again)."""
        shards = self.shards
        if len(shards) == 1:
            return shards[0].server_run_id()
        ids = [_run_id(s) for s in shards]
        if all(i == "?" for i in ids):
            return shards[0].server_run_id()  # (raises: nothing answers)
        return ",".join(dict.fromkeys(ids))

    def reap(self, limit: int = 1000, now: int = 0, max_lost: int = 3) -> tuple[int, int]:
        return self.reap_listed(limit, now, max_lost)[:2]

    def reap_listed(
        self, limit: int = 1000, now: int = 0, max_lost: int = 3
    ) -> tuple[int, int, list[Taken]]:
        """`reap` in every partition, with the first jobs each took back."""
        got = self._sweep(lambda s: s.reap_listed(limit, now, max_lost))
        return sum(g[0] for g in got), sum(g[1] for g in got), [j for g in got for j in g[2]]

    def promote(self, limit: int = 1000, now: int = 0) -> int:
        return sum(self._sweep(lambda s: s.promote(limit, now)))

    def trim_finished(self, now: int = 0) -> int:
        return sum(self._sweep(lambda s: s.trim_finished(now)))

    def trim_dead(self, now: int = 0, limit: int = 1000) -> int:
        return sum(self._sweep(lambda s: s.trim_dead(now, limit)))

    def expire_targeted(self, gone_ms: int, now: int = 0, limit: int = 1000) -> int:
        return self.walk_queues(gone_ms, now, limit)[0]

    def walk_queues(
        self, gone_ms: int, now: int = 0, limit: int = 1000, queues: int = 200
    ) -> tuple[int, int, bool]:
        return self.walk_queues_listed(gone_ms, now, limit, queues)[:3]

    def walk_queues_listed(
        self, gone_ms: int, now: int = 0, limit: int = 1000, queues: int = 200
    ) -> tuple[int, int, bool, list[Taken]]:
        """`walk_queues` in every partition, with the first jobs each settled."""
        got = self._sweep(lambda s: s.walk_queues_listed(gone_ms, now, limit, queues))
        jobs = [j for g in got for j in g[3]]
        return sum(g[0] for g in got), sum(g[1] for g in got), all(g[2] for g in got), jobs

    # -- control partition: leader, presence, periodic specs ---------------------------------

    def leader_holder(self) -> str | None:
        return self.control.leader_holder()

    def lead(self, candidate: str, lease_ms: int, release: bool = False, now: int = 0) -> bool:
        return self.control.lead(candidate, lease_ms, release, now)

    def mark_master_alive(self, master_id: str, ttl_ms: int) -> None:
        self.control.mark_master_alive(master_id, ttl_ms)

    def master_alive(self) -> bool:
        return self.control.master_alive()

    def register_worker(self, name: str, info: dict[str, str], ttl_ms: int) -> None:
        """Register in every partition: each partition's orphan walk reads which queues a
        worker serves from its own copy (a script cannot read another slot)."""
        each_shard(self.shards, lambda s: s.register_worker(name, info, ttl_ms))

    def unregister_worker(self, name: str) -> None:
        each_shard(self.shards, lambda s: s.unregister_worker(name))

    def list_periodic(self) -> list[tuple[PeriodicSpec, int | None]]:
        return self.control.list_periodic()

    def due_periodic(self, now: int) -> list[tuple[PeriodicSpec, int]]:
        return self.control.due_periodic(now)

    def upsert_periodic(self, spec: PeriodicSpec, now: int = 0) -> None:
        self.control.upsert_periodic(spec, now)

    def remove_periodic(self, name: str) -> bool:
        return self.control.remove_periodic(name)

    def advance_periodic(self, name: str, next_ms: int) -> None:
        self.control.advance_periodic(name, next_ms)

    def fire_periodic_slot(
        self, job: JobSpec, name: str, due: int, next_ms: int, holder: str | None, now: int = 0
    ) -> bool | None:
        """Periodic jobs live in the control partition, with the lease fencing their fire.
        The layout is read (or created) first, as before any other job is written: a
        deployment's first jobs must not precede its layout record, or a process asking for
        several partitions would find jobs and no record (layout.NotMigrated)."""
        _ = self.layout
        return self.control.fire_periodic_slot(job, name, due, next_ms, holder, now)


def _run_id(shard: Shard) -> str:
    try:
        return shard.server_run_id()
    except BrokerUnavailable:
        return "?"
