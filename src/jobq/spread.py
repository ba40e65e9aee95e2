"""What `Store` needs to serve several partitions at once: one blocking wake-up per partition,
event cursors over several streams, and listings and queue figures added up over shards.

Nothing here polls: a worker blocks on every partition at once (`Doorbell`, one thread and one
connection per partition, since a BLPOP over keys of several slots is refused as CROSSSLOT on a
Cluster), and a blocking event read blocks on every stream at once the same way.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from .errors import BrokerUnavailable
from .model import JobRecord, Outcome, QueueInfo
from .outage import Outage

if TYPE_CHECKING:
    from .layout import Layout
    from .shard import Shard

log = logging.getLogger("jobq.store")
T = TypeVar("T")

#: Longest single blocking read of a doorbell thread: how soon it notices a close().
BELL_SLICE_S = 2.0


def each_shard(shards: Sequence[Shard], call: Callable[[Shard], T]) -> list[T]:
    """`call(shard)` for every shard in order, each tried even after another raised; then
    the first error, if any. One partition whose primary is gone (a failover under way on a
    Cluster) must not keep the others from being served: a sweep that stopped at the first
    failure left the partitions after it unreaped, unpromoted, or their leases unextended."""
    out: list[T] = []
    first: BaseException | None = None
    for shard in shards:
        try:
            out.append(call(shard))
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first
    return out


class PartitionOutage:
    """Which partitions failed lately, so calls that go over every partition (claims,
    reports) skip one for a back-off pause instead of waiting on its dead node on every
    call; each partition's episode is logged once (outage.py), its end with the length of
    the stall. `where(i)`, if given, names the node partition i is served by now (a Cluster
    slot's owner as the map says): the pause ends as soon as that changes (the replica was
    promoted), so it can be long without keeping a failed-over partition waiting."""

    def __init__(
        self,
        n: int,
        doing: str,
        where: Callable[[int], object] | None = None,
        first_s: float = 1.0,
        cap_s: float = 5.0,
    ) -> None:
        # A failed call on a dead node costs its reconnects (about a second): not often.
        self._outages = [
            Outage(log, f"{doing} in partition {i}", first_s=first_s, cap_s=cap_s) for i in range(n)
        ]
        self._until = [0.0] * n
        self._at: list[object] = [None] * n
        self._where = where
        self._lock = threading.Lock()

    def skipped(self, part: int) -> bool:
        """Whether `part` failed lately and its pause is not over (nor its node replaced)."""
        if time.monotonic() >= self._until[part]:
            return False
        return self._where is None or self._where(part) == self._at[part]

    def failed(self, part: int, exc: BaseException) -> None:
        with self._lock:
            self._until[part] = time.monotonic() + self._outages[part].failed(exc)
            self._at[part] = self._where(part) if self._where is not None else None

    def ok(self, part: int) -> None:
        if self._outages[part].down:
            with self._lock:
                self._until[part] = 0.0
                self._outages[part].ok()


class Where:
    """Bounded memory of which partition holds a job (thread-safe enough: one lock)."""

    def __init__(self, size: int) -> None:
        self._map: OrderedDict[str, int] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def note(self, job_id: str, part: int) -> None:
        with self._lock:
            self._map[job_id] = part
            self._map.move_to_end(job_id)
            while len(self._map) > self._size:
                self._map.popitem(last=False)

    def get(self, job_id: str) -> int | None:
        with self._lock:
            return self._map.get(job_id)


class PartialReport(BrokerUnavailable):
    """Some partitions recorded their outcomes (`recorded`: job id -> code), another could
    not (no primary: a failover under way). The caller frees what was recorded and sends only
    the rest again: one partition's outage must not hold up the outcomes of the others (nor
    have them sent twice: a second complete of a finished job reads as superseded)."""

    def __init__(self, first: BrokerUnavailable, recorded: dict[str, int]) -> None:
        super().__init__(str(first), first.reason)
        self.retry_after_s = first.retry_after_s
        self.recorded = recorded


def report_over(
    shards: Sequence[Shard],
    groups: dict[int, list[Outcome]],
    failures: PartitionOutage,
    now: int,
) -> dict[str, int]:
    """Record each partition's outcomes (`groups`: partition -> outcomes) in its shard; a
    partition that failed a moment ago is not asked again before its pause ends. Raises the
    first error, or `PartialReport` when other partitions recorded theirs."""
    codes: dict[str, int] = {}
    first: BaseException | None = None
    for part, group in groups.items():
        if failures.skipped(part):  # failed a moment ago: not another wait on its dial
            first = first or BrokerUnavailable(
                f"partition {part} did not answer a moment ago; its outcomes are kept "
                "and sent again shortly",
                "partition unavailable",
            )
            continue
        try:
            codes.update(shards[part].report(group, now))
        except Exception as exc:
            if isinstance(exc, BrokerUnavailable):
                failures.failed(part, exc)
            first = first or exc
            continue
        failures.ok(part)
    if first is not None:
        if codes and isinstance(first, BrokerUnavailable):
            raise PartialReport(first, codes) from first
        raise first
    return codes


class Doorbell:
    """One thread per partition blocking on its wake-up lists while a caller waits for work;
    `wait` returns as soon as any rings, and `take` says which rang (claims go there first)."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self._shards = list(shards)
        self._cond = threading.Condition()
        self._rang: list[int] = []
        self._queues: list[str] = []
        self._wanted = 0
        self._closed = False
        self._reading: dict[int, list[str]] = {}  # partition -> queues its listener reads now
        self._threads = [
            threading.Thread(target=self._listen, args=(i,), name=f"jobq-bell-{i}", daemon=True)
            for i in range(len(self._shards))
        ]
        for t in self._threads:
            t.start()

    def wait(self, queues: list[str], timeout_s: float) -> bool:
        """Block until a partition signals work on `queues` (True) or the timeout (False)."""
        with self._cond:
            self._queues = list(queues)
            if self._rang:
                return True
            self._wanted += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: bool(self._rang) or self._closed, timeout_s)
            finally:
                self._wanted -= 1
            return bool(self._rang)

    def take(self) -> list[int]:
        """The partitions that rang since the last take, first rung first."""
        with self._cond:
            rang, self._rang = self._rang, []
            return rang

    def close(self) -> None:
        """Stop the listeners, waiting (at most a slice) for one still in its blocking read:
        closing the shards under it would make redis-py dial again to retry that read, a
        connection a closed store must not make."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            reading = dict(self._reading)
        # End the reads in flight with a wake-up of their first queue (a worker's own queue:
        # see Worker.queues; anyone else's first queue gets a harmless spurious wake-up).
        for part, queues in reading.items():
            with contextlib.suppress(Exception):
                self._shards[part].wake(queues[0])
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(BELL_SLICE_S + 1.0)

    def _listen(self, part: int) -> None:
        shard = self._shards[part]
        outage = Outage(log, f"waiting for jobs in partition {part}")
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted > 0 or self._closed)
                if self._closed:
                    return
                queues = self._queues
                self._reading[part] = queues
            failed: Exception | None = None
            try:
                got = shard.wait_for_work(queues, BELL_SLICE_S)
            except Exception as exc:  # the listener outlives any broker error
                got, failed = False, exc
            with self._cond:
                self._reading.pop(part, None)
            if failed is not None:
                if self._closed:
                    return
                pause = outage.failed(failed)
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, max(0.5, pause))
                continue
            outage.ok()
            if got:
                with self._cond:
                    if part not in self._rang:
                        self._rang.append(part)
                    self._cond.notify_all()


class EventCursor:
    """A position in every partition's event stream: their ids joined by '_', in partition
    order (one partition: the plain stream id). '0-0' alone means the start of every stream."""

    SEP = "_"
    PATTERN = re.compile(r"^\d{1,20}-\d{1,20}(_\d{1,20}-\d{1,20}){0,255}$")

    @staticmethod
    def split(cursor: str, n: int) -> list[str]:
        ids = cursor.split(EventCursor.SEP)
        if len(ids) == 1:
            return ids * n
        if len(ids) != n:
            raise ValueError(f"an event cursor of {len(ids)} streams for {n} partitions")
        return ids

    @staticmethod
    def join(ids: Sequence[str]) -> str:
        return EventCursor.SEP.join(ids)

    @staticmethod
    def read(
        shards: Sequence[Shard], after: str, count: int, block_ms: int | None
    ) -> list[tuple[str, dict[str, str]]]:
        """Events after `after` from every stream, each tagged with the cursor just after it.
        Blocking: every stream is read at once (one thread each) and the first to answer is
        returned, with whatever the others had already."""
        ids = EventCursor.split(after, len(shards))
        got = EventCursor._gather(shards, ids, count, None)
        if not any(got) and block_ms is not None:
            got = EventCursor._gather(shards, ids, count, block_ms)
        out: list[tuple[str, dict[str, str]]] = []
        pos = list(ids)
        for part, events in enumerate(got):
            for eid, fields in events:
                pos[part] = eid
                out.append((EventCursor.join(pos), fields))
        return out

    @staticmethod
    def _gather(
        shards: Sequence[Shard], ids: list[str], count: int, block_ms: int | None
    ) -> list[list[tuple[str, dict[str, str]]]]:
        if block_ms is None:
            return [s.read_events(i, count, None) for s, i in zip(shards, ids, strict=True)]
        pool = concurrent.futures.ThreadPoolExecutor(len(shards), thread_name_prefix="jobq-ev")
        try:
            futs = [
                pool.submit(s.read_events, i, count, block_ms)
                for s, i in zip(shards, ids, strict=True)
            ]
            done, _ = concurrent.futures.wait(
                futs, timeout=block_ms / 1000 + 5, return_when=concurrent.futures.FIRST_COMPLETED
            )
            out: list[list[tuple[str, dict[str, str]]]] = []
            for f in futs:
                if f in done:
                    out.append(f.result())  # (an error of the first to answer is raised)
                else:
                    out.append([])
            return out
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def merge_queue_infos(
    per_shard: Sequence[Sequence[QueueInfo]], names: Sequence[str] | None = None
) -> list[QueueInfo]:
    """One QueueInfo per queue name, its figures added up over the partitions, sorted by name
    (or in the order of `names`)."""
    total: dict[str, list[int]] = {}
    for infos in per_shard:
        for q in infos:
            row = total.setdefault(q.name, [0] * 7)
            figures = (q.queued, q.scheduled, q.running, q.succeeded, q.failed, q.cancelled)
            for k, v in enumerate((*figures, q.retried)):
                row[k] += v
    order = list(names) if names is not None else sorted(total)
    return [QueueInfo(n, *total.get(n, [0] * 7)) for n in order]


def _encode(part: int, inner: str | None) -> str:
    raw = orjson.dumps([part, inner])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str | None, n: int) -> tuple[int, str | None]:
    if not cursor:
        return 0, None
    try:
        v: Any = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        part, inner = int(v[0]), v[1]
    except (ValueError, TypeError, IndexError, orjson.JSONDecodeError) as exc:
        raise ValueError("malformed cursor: pass the cursor a previous page returned") from exc
    if not 0 <= part < n or not (inner is None or isinstance(inner, str)):
        raise ValueError("malformed cursor: pass the cursor a previous page returned")
    return part, inner


def list_jobs_over(
    shards: Sequence[Shard], *, limit: int = 50, cursor: str | None = None, **kwargs: Any
) -> tuple[list[JobRecord], str | None]:
    """`Reads.list_jobs` over several partitions, one after the other: the cursor names the
    partition and that partition's own cursor. A page can end early at a partition's end."""
    part, inner = _decode(cursor, len(shards))
    out: list[JobRecord] = []
    while part < len(shards) and len(out) < limit:
        rows, nxt = shards[part].list_jobs(cursor=inner, limit=limit - len(out), **kwargs)
        out.extend(rows)
        if nxt is None:
            part, inner = part + 1, None
        else:
            inner = nxt
            if not rows:  # this partition's scan budget ran out: resume there next page
                break
    if part >= len(shards):
        return out, None
    return out, _encode(part, inner)


class Partitioned:
    """What the halves of `Store` (`spread_reads.SpreadReads`, `spread_upkeep.SpreadUpkeep`)
    read of it: its shards, the control partition's shard, and the layout."""

    @property
    def shards(self) -> list[Shard]:
        raise NotImplementedError  # Store's

    @property
    def control(self) -> Shard:
        raise NotImplementedError  # Store's

    @property
    def layout(self) -> Layout:
        raise NotImplementedError  # Store's
