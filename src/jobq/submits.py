"""Submits on one partition: enqueue rows encoded, streamed and ridden through outages.

`Shard` inherits these (as it does `Reads` and `Upkeep`), so the module with the workers' and
readers' transitions stays small. Everything a producer sends goes through here: a spec or a
ready row (`JobSpec.as_row`) becomes an enqueue row, a large batch is streamed as several
script calls in one round trip, memory back-pressure is checked (or counted) before it is sent,
the durable mode's wait rides along, and a submit is sent again through a failover (enqueue is
idempotent per id). One submit has its own short path (`submit_one`): it is what most
producers do, and the client's work per call is a good part of its cost.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

from .codes import Enqueue
from .durability import Durability
from .errors import BrokerFull, JobqError
from .failover import Resend, ride_out
from .faults import RAISED
from .memory import JOB_OVERHEAD_BYTES, RoomCheck, job_bytes
from .model import JobSpec
from .outage import Outage
from .scripts import Call, Scripts
from .topology import is_sentinel

T = TypeVar("T")
S = TypeVar("S")


def _same_row(row: list[Any]) -> list[Any]:
    return row


def _row_bytes(row: list[Any]) -> int:
    """`memory.job_bytes` of the job an enqueue row creates (id, task, payload: 0, 1, 3)."""
    return len(row[3]) + len(row[0]) + len(row[1]) + JOB_OVERHEAD_BYTES


class Submits:
    """The producers' half of `Shard`, which provides the client, scripts, settings, the
    back-pressure check, the outage log and `fault`."""

    r: Any
    url: str
    scripts: Scripts
    durability: Durability | None
    room: RoomCheck
    failover_wait_s: float
    submit_outage: Outage

    def broker(self, doing: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # Shard's

    def fault(self, exc: Exception, doing: str) -> JobqError:
        raise NotImplementedError  # Shard's

    @contextlib.contextmanager
    def _room_kept(self) -> Iterator[None]:
        """A submit the server refused for lack of memory (its OOM: the back-pressure's reading
        was behind) makes the next submit read memory use again, and refuse before the wall."""
        try:
            yield
        except BrokerFull:
            self.room.expire()
            raise

    def submit(
        self, specs: Iterable[JobSpec], now: int = 0, *, wait_s: float | None = None
    ) -> list[bool]:
        """Create jobs in one round trip; per job, True if created, False if it existed (same
        id, or a pending job holds its unique key). `wait_s`: see `submit_ids`."""
        return [r == Enqueue.CREATED for _s, r in self._enqueue(specs, now, wait_s=wait_s)]

    def submit_ids(
        self, specs: Iterable[JobSpec], now: int = 0, *, wait_s: float | None = None
    ) -> list[str]:
        """Create jobs in one round trip; per job, the id that now stands for it: its own, or
        that of the pending job holding the same unique key.

        While the broker cannot serve (a failover, a restart) the submit is sent again with
        back-off for up to `wait_s` (default `failover_wait_s`), then raises
        `BrokerUnavailable` saying how long it waited. Sending again is safe: enqueue is
        idempotent per job id, so a submit whose reply was lost returns the same ids."""
        out = self._enqueue(specs, now, wait_s=wait_s)
        return [r.decode() if isinstance(r, bytes) else s.id for s, r in out]

    def submit_one(self, spec: JobSpec, now: int = 0, *, wait_s: float | None = None) -> str:
        """`submit_ids` of one spec, on the shortest path (one submit per call is what most
        producers do, and the client's work per call is a good part of its cost)."""
        if self.durability:
            return self.submit_ids([spec], now, wait_s=wait_s)[0]
        call = self.scripts.enqueue_call([spec.as_row()], now)
        cost = job_bytes(spec)

        def attempt() -> Any:
            try:
                try:
                    self.room.check(cost)
                    return self.scripts.execute([call])[0][0]
                except RAISED as exc:
                    raise self.fault(exc, "submitting jobs") from exc
            except BrokerFull:  # (what `_room_kept` does)
                self.room.expire()
                raise

        bound = self.failover_wait_s if wait_s is None else wait_s
        reply = self.retrying(attempt, bound, "submitting jobs")
        return reply.decode() if isinstance(reply, bytes) else spec.id

    def _enqueue(
        self, specs: Iterable[JobSpec], now: int, chunk: int = 500, wait_s: float | None = None
    ) -> list[tuple[JobSpec, Any]]:
        """`_enqueue_once`, retried through a broker outage for up to `wait_s` s."""
        if not isinstance(specs, list):
            specs = Resend(specs)  # a retry sends again what a generator already gave
        bound = self.failover_wait_s if wait_s is None else wait_s
        once = functools.partial(self._enqueue_once, specs, now, chunk)
        return self.retrying(once, bound, "submitting jobs")

    def retrying(self, attempt: Callable[[], T], bound_s: float, doing: str) -> T:
        """`attempt()` through a broker outage of up to `bound_s` s (`failover.ride_out`),
        logged as one episode per store."""
        return ride_out(attempt, bound_s, doing, self.submit_outage, is_sentinel(self.url))

    def submit_rows(
        self, rows: list[list[Any]], now: int = 0, *, wait_s: float | None = None
    ) -> list[str]:
        """`submit_ids` of ready enqueue rows (`JobSpec.as_row` each): a batch of one task's
        calls (`App.submit_many`) then builds no spec per job, only its row."""
        once = functools.partial(self._enqueue_items, rows, now, 500, _same_row)
        bound = self.failover_wait_s if wait_s is None else wait_s
        out = self.retrying(once, bound, "submitting jobs")
        return [r.decode() if isinstance(r, bytes) else row[0] for row, r in out]

    def _enqueue_once(
        self, specs: Iterable[JobSpec], now: int, chunk: int
    ) -> list[tuple[JobSpec, Any]]:
        """Each job with its enqueue reply (`_enqueue_items` of specs)."""
        return self._enqueue_items(specs, now, chunk, JobSpec.as_row)

    def _enqueue_items(
        self, items: Iterable[S], now: int, chunk: int, as_row: Callable[[S], list[Any]]
    ) -> list[tuple[S, Any]]:
        """Each item (a spec, or a row) with its enqueue reply. A large batch goes as several
        script calls (so no single call holds the server for long), streamed in one round
        trip: the server runs a chunk while the next is built. A bad dependency raises before
        anything is written."""
        durable = self.durability
        if durable:
            with self.broker("checking durable mode"):
                durable.ensure_supported(self.r)
        if isinstance(items, list) and len(items) <= chunk:  # the common case: one call
            rows = [as_row(s) for s in items]
            one = [self.scripts.enqueue_call(rows, now)]
            with self._room_kept(), self.broker("submitting jobs"):
                self.room.check(sum(map(_row_bytes, rows)))
                replies = self.scripts.execute([*one, durable.call()] if durable else one)
            reply = replies[0]
            if durable:
                durable.check_submit(replies[1], [r[0] for r in rows])
            return list(zip(items, reply, strict=True))
        it = iter(items)
        chunks: list[list[S]] = []
        ids: list[str] = []  # (for the durable mode's check)

        def calls() -> Iterator[Call]:
            while part := list(islice(it, chunk)):
                chunks.append(part)
                rows = [as_row(s) for s in part]
                if durable:
                    ids.extend(r[0] for r in rows)
                # Counted, not checked: a refusal half-way would leave replies unread.
                self.room.add(sum(map(_row_bytes, rows)))
                yield self.scripts.enqueue_call(rows, now)
            if durable:
                yield durable.call()

        with self._room_kept(), self.broker("submitting jobs"):
            self.room.check()
            replies = self.scripts.execute(calls())
        ack = replies.pop() if durable else None
        out: list[tuple[S, Any]] = []
        for part, reply in zip(chunks, replies, strict=True):
            out.extend(zip(part, reply, strict=True))
        if durable:
            durable.check_submit(ack, ids)
        return out
