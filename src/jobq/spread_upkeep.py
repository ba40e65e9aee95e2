"""The maintenance half of `Store` over partitions: what runs in every partition (reaping,
promotion, trims, the registry walk) and what only the control partition holds (the leader
lease, master and worker presence, periodic specs). `Store` inherits it, as `Shard` inherits
`Upkeep`, so the module routing jobs stays small."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .model import JobSpec
from .periodic import PeriodicSpec

if TYPE_CHECKING:
    from .layout import Layout
    from .shard import Shard


class SpreadUpkeep:
    """Maintenance calls of a deployment; `Store` provides `shards` and `control`."""

    @property
    def shards(self) -> list[Shard]:
        raise NotImplementedError  # Store's

    @property
    def control(self) -> Shard:
        raise NotImplementedError  # Store's

    @property
    def layout(self) -> Layout:
        raise NotImplementedError  # Store's

    # -- maintenance: every partition --------------------------------------------------------

    def server_time_ms(self) -> int:
        return self.control.server_time_ms()

    def server_run_id(self) -> str:
        """The run ids of the servers holding the partitions: it changes when any of them
        restarts or fails over."""
        return ",".join(dict.fromkeys(s.server_run_id() for s in self.shards))

    def reap(self, limit: int = 1000, now: int = 0, max_lost: int = 3) -> tuple[int, int]:
        requeued = dead = 0
        for shard in self.shards:
            r, d = shard.reap(limit, now, max_lost)
            requeued, dead = requeued + r, dead + d
        return requeued, dead

    def promote(self, limit: int = 1000, now: int = 0) -> int:
        return sum(s.promote(limit, now) for s in self.shards)

    def trim_finished(self, now: int = 0) -> int:
        return sum(s.trim_finished(now) for s in self.shards)

    def trim_dead(self, now: int = 0, limit: int = 1000) -> int:
        return sum(s.trim_dead(now, limit) for s in self.shards)

    def expire_targeted(self, gone_ms: int, now: int = 0, limit: int = 1000) -> int:
        return self.walk_queues(gone_ms, now, limit)[0]

    def walk_queues(
        self, gone_ms: int, now: int = 0, limit: int = 1000, queues: int = 200
    ) -> tuple[int, int, bool]:
        moved = pruned = 0
        wrapped = True
        for shard in self.shards:
            m, p, w = shard.walk_queues(gone_ms, now, limit, queues)
            moved, pruned, wrapped = moved + m, pruned + p, wrapped and w
        return moved, pruned, wrapped

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
        for shard in self.shards:
            shard.register_worker(name, info, ttl_ms)

    def unregister_worker(self, name: str) -> None:
        for shard in self.shards:
            shard.unregister_worker(name)

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
