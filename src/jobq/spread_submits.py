"""The producers' half of `Store` over partitions: where each new job goes (`Layout.place`:
its routing key, near a parent this process saw, else its home partition, within the
partitions its queue is kept to), each partition's jobs sent by its shard (`submits.py`), and a
batch whose parents live in other partitions linked to them first (`handoff.submit`). `Store`
inherits it (as `Shard` inherits `Submits`), so the module routing jobs stays small; with one
partition every call goes straight to the one shard's short paths."""

from __future__ import annotations

from collections.abc import Iterable

from . import handoff
from .model import JobSpec
from .spread import Partitioned, Where


class SpreadSubmits(Partitioned):
    """Submits of a deployment; `Store` provides `shards`, `control`, `layout`, the queues
    kept to fewer partitions (`spread`) and its memory of where jobs live (`_where`)."""

    spread: dict[str, int]
    _where: Where

    def submit(
        self, specs: Iterable[JobSpec], now: int = 0, *, wait_s: float | None = None
    ) -> list[bool]:
        """Create jobs; per job, True if created, False if it existed (see `Shard.submit`)."""
        if self.layout.count == 1:
            return self.control.submit(specs, now, wait_s=wait_s)
        return [r == s.id for s, r in self._spread(list(specs), now, wait_s, created=True)]

    def submit_ids(
        self, specs: Iterable[JobSpec], now: int = 0, *, wait_s: float | None = None
    ) -> list[str]:
        """Create jobs; per job, the id that now stands for it (see `Shard.submit_ids`)."""
        if self.layout.count == 1:
            return self.control.submit_ids(specs, now, wait_s=wait_s)
        return [r for _s, r in self._spread(list(specs), now, wait_s, created=False)]

    def submit_one(self, spec: JobSpec, now: int = 0, *, wait_s: float | None = None) -> str:
        """`submit_ids` of one spec: the id that now stands for it (`Shard.submit_one`)."""
        if self.layout.count == 1:
            return self.control.submit_one(spec, now, wait_s=wait_s)
        return self.submit_ids([spec], now, wait_s=wait_s)[0]

    def submit_like(
        self, template: JobSpec, calls: list[tuple[str, bytes]], *, wait_s: float | None = None
    ) -> list[str]:
        """Jobs like `template` but for their (id, payload): the ids that now stand for them.
        With one partition no spec is built per job (`Shard.submit_rows`)."""
        if not calls:
            return []
        if self.layout.count > 1:
            specs = [template.for_call(i, p) for i, p in calls]
            return self.submit_ids(specs, wait_s=wait_s)
        _id, task, queue, _payload, opts, remote = template.as_row()
        rows = [[i, task, queue, p, opts, remote] for i, p in calls]
        return self.control.submit_rows(rows, wait_s=wait_s)

    def _spread(
        self, specs: list[JobSpec], now: int, wait_s: float | None, created: bool
    ) -> list[tuple[JobSpec, str]]:
        """Each spec with its reply, submitted partition by partition (in submission order
        within each). `created`: the reply is the id if the job was created, else ''.

        A job whose parents live in other partitions is linked to them through the hand-off
        (handoff.py) by its shard's submit."""
        groups: dict[int, list[int]] = {}
        placed: list[tuple[int, JobSpec]] = []
        for i, spec in enumerate(specs):
            part = self.layout.place(spec, self._near, self.spread)
            groups.setdefault(part, []).append(i)
            placed.append((part, spec))
            self._where.note(spec.id, part)
        if any(spec.parents for spec in specs):
            # Parents may live in other partitions: linked there first (handoff.py).
            ids = handoff.submit(
                self.shards, placed, locate=self._where.get, now=now, wait_s=wait_s
            )
            if created:
                return [(s, s.id if got == s.id else "") for s, got in zip(specs, ids, strict=True)]
            return list(zip(specs, ids, strict=True))
        out: list[str] = [""] * len(specs)
        for part, idx in groups.items():
            shard = self.shards[part]
            chunk = [specs[i] for i in idx]
            if created:
                flags = shard.submit(chunk, now, wait_s=wait_s)
                for i, ok in zip(idx, flags, strict=True):
                    out[i] = specs[i].id if ok else ""
            else:
                ids = shard.submit_ids(chunk, now, wait_s=wait_s)
                for i, got in zip(idx, ids, strict=True):
                    out[i] = got
        return list(zip(specs, out, strict=True))

    def _near(self, job_id: str) -> int | None:
        return self._where.get(job_id)
