"""A deployment's broker operations, over its partitions (layout.py).

Each partition is served by a `Shard` (shard.py): one slot, so one node, with its own scripts
and connections. `Store` keeps the API every caller uses (client, worker, master, CLI) and
decides where each call goes:

- a new job goes to the partition `Layout.place` picks; a lookup by id goes where this process
  saw the job (`_where`: submits and claims note it), else to the id's home partition, else to
  every partition (a user-given id placed by a routing key lives outside its home);
- claims rotate over the partitions, those that rang first (`Doorbell`: one blocking read per
  partition, since one BLPOP over several slots is CROSSSLOT); heartbeats, reports and
  requeues go to the partition that handed out each job;
- maintenance runs every partition; the leader lease, master and worker presence and periodic
  specs live in the control partition (partition 0);
- reads add up (counts, queue stats) or concatenate (listings, partition by partition) what
  the partitions hold (`spread.py`, `spread_reads.py`);
- one partition without a primary (a Cluster failover under way) does not stop the others:
  claims and reports skip it for a short back-off (`spread.PartitionOutage`) and raise only
  when nothing was served (a report some partitions took raises `PartialReport` with their
  codes, so only the rest is sent again); heartbeats and maintenance sweeps try every
  partition (`spread.each_shard`, `SpreadUpkeep._sweep`).

With one partition (the default on one server) every call goes straight to the one shard.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from . import handoff
from .cluster_url import is_cluster
from .faults import RAISED, translate
from .keys import Keys
from .layout import Layout, load_or_create
from .memory import MemoryState
from .model import Claimed, JobRecord, Outcome
from .shard import Shard, connect, redact
from .spread import Doorbell, PartialReport, PartitionOutage, Where, each_shard, report_over
from .spread_reads import SpreadReads
from .spread_submits import SpreadSubmits
from .spread_upkeep import SpreadUpkeep
from .states import JobState
from .topology import resolver_of

__all__ = ["PartialReport", "Store", "connect", "redact"]

log = logging.getLogger("jobq.store")
T = TypeVar("T")

#: Job ids whose partition this process remembers (submitted or claimed here).
WHERE_CACHE = 200_000
#: A claim asks every partition again at least this often, even those found drained (a
#: wake-up taken by a process that died before claiming must not hide work for long).
SWEEP_S = 1.0


#: How a store learns its layout on first use: (the control partition's client) -> Layout.
Discover = Callable[[Any], Layout]


class Store(SpreadSubmits, SpreadReads, SpreadUpkeep):
    """Broker operations for one deployment: its shards behind one API.

    With `layout` the partitions are known; without it and with `discover`, the layout is
    read (or created) in the control partition on first use, so building a store never
    talks to the server (a worker may start before its server) and an unreachable server is
    the usual `BrokerUnavailable` of that first call. `clients` (one per partition, in layout
    order) or `client_for(tag)` give each shard its connections; else all share `client`.
    """

    def __init__(
        self,
        client: Any,
        url: str,
        keys: Keys,
        *,
        layout: Layout | None = None,
        discover: Discover | None = None,
        client_for: Callable[[str], Any] | None = None,
        spread: Mapping[str, int] | None = None,
        **settings: Any,
    ) -> None:
        self._client = client
        #: Queues kept to fewer partitions than all (`Settings.queue_partitions`).
        self.spread = dict(spread or {})
        self._url = url
        self._prefix_keys = keys
        self._client_for = client_for
        self._settings = settings
        self._discover = discover
        self._layout: Layout | None = None
        # The control partition's shard needs no layout (its tag is the prefix): built now, so
        # settings and the control client are there before anything is read, and its primary
        # check is hooked on before the first dial (the layout read included).
        self._control = Shard(client, url, keys, **settings)
        self._shards: list[Shard] = [self._control]
        self._open_lock = threading.Lock()
        self._where = Where(WHERE_CACHE)
        self._claim_failures = PartitionOutage(1, "claiming")
        self._report_failures = PartitionOutage(1, "reporting")
        self._turn = 0
        # Per list of queues, the partitions a claim found drained since they last rang:
        # claims skip them while a Doorbell serves this store (see `claim`).
        self._drained: dict[tuple[str, ...], set[int]] = {}
        self._swept = 0.0
        self._bell: Doorbell | None = None
        self._bell_lock = threading.Lock()
        if layout is not None or discover is None:
            self._build(layout or Layout.single(keys.prefix))

    def _build(self, layout: Layout) -> None:
        shards = [self._control]
        for tag in layout.tags[1:]:
            client = self._client if self._client_for is None else self._client_for(tag)
            keys = self._prefix_keys.partition(tag)
            shards.append(Shard(client, self._url, keys, **self._settings))
        self._shards = shards
        self._claim_failures = PartitionOutage(layout.count, "claiming", self._serving)
        # Reports are tried again soon: an outcome held past its lease means a rerun.
        self._report_failures = PartitionOutage(
            layout.count, "reporting", self._serving, first_s=0.1, cap_s=1.0
        )
        self._layout = layout

    def _serving(self, part: int) -> object:
        """The node serving partition `part` as its client last knew (None: one server)."""
        resolver = resolver_of(self._shards[part].r)
        return resolver.current() if resolver is not None else None

    def _open(self) -> None:
        with self._open_lock:
            if self._layout is not None:
                return
            assert self._discover is not None
            try:
                layout = self._discover(self._client)
            except RAISED as exc:
                raise translate(exc, redact(self._url), "reading the partition layout") from exc
            self._build(layout)
            if layout.count > 1 and self._client_for is None:
                # The other partitions' shards share the control client and hooked their
                # primary check and token epoch onto its connections just now: redial, so
                # every connection used from now on ran all of them.
                pool = getattr(self._client, "connection_pool", None)
                if pool is not None:
                    pool.disconnect()

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._open()
        assert self._layout is not None
        return self._layout

    @property
    def shards(self) -> list[Shard]:
        if self._layout is None:
            self._open()
        return self._shards

    # -- the control partition's attributes, for callers that need one client ---------------

    @property
    def control(self) -> Shard:
        """Partition 0: the leader lease, presence, periodic specs (and, alone, everything)."""
        return self._control

    @property
    def r(self) -> Any:
        return self.control.r

    @property
    def keys(self) -> Keys:
        return self.control.keys

    @property
    def scripts(self) -> Any:
        return self.control.scripts

    @property
    def url(self) -> str:
        return self.control.url

    @property
    def durability(self) -> Any:
        return self.control.durability

    @property
    def room(self) -> Any:
        return self.control.room

    @room.setter
    def room(self, value: Any) -> None:
        self.control.room = value

    @property
    def result_ttl_s(self) -> int:
        return self.control.result_ttl_s

    @property
    def events_maxlen(self) -> int:
        return self.control.events_maxlen

    @property
    def dead_ttl_s(self) -> int:
        return self.control.dead_ttl_s

    @dead_ttl_s.setter
    def dead_ttl_s(self, value: int) -> None:
        self._settings["dead_ttl_s"] = value
        for shard in self._shards:
            shard.dead_ttl_s = value

    @property
    def failover_wait_s(self) -> float:
        return self.control.failover_wait_s

    @property
    def outage_wait_s(self) -> float:
        return self.control.outage_wait_s

    @property
    def partitions(self) -> int:
        return self.layout.count

    def close(self) -> None:
        if self._bell is not None:
            self._bell.close()
        for shard in self._shards:
            shard.close()

    def broker(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return self.control.broker(doing)

    def ping(self) -> None:
        for shard in self.shards:
            shard.ping()

    def memory(self) -> MemoryState:
        """The memory use of the fullest node holding a partition (one INFO per partition)."""
        states = [s.memory() for s in self.shards]
        return max(states, key=lambda m: m.share or 0.0)

    # -- where jobs live ---------------------------------------------------------------------

    def partition_of(self, job_id: str) -> int:
        """Where to look for `job_id` first: where it was seen here, else its home."""
        seen = self._where.get(job_id)
        return self.layout.home(job_id) if seen is None else seen

    def shard_of(self, job_id: str) -> Shard:
        """The shard holding `job_id`: the first guess, else any that has it (else the first
        guess). One call for a job submitted or claimed here or living at its home."""
        first = self.partition_of(job_id)
        if self.layout.count == 1:
            return self.shards[0]
        if self.shards[first].get_state(job_id) is not None:
            return self.shards[first]
        for i, shard in enumerate(self.shards):
            if i != first and shard.get_state(job_id) is not None:
                self._where.note(job_id, i)
                return shard
        return self.shards[first]

    # -- producers (their placement and hand-off: spread_submits.py) -------------------------

    def retrying(self, attempt: Callable[[], T], bound_s: float, doing: str) -> T:
        return self.control.retrying(attempt, bound_s, doing)

    # -- workers -----------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: list[str], n: int, lease_ms: int, now: int = 0, start: int = 0
    ) -> list[Claimed]:
        """Claim up to `n` jobs from `queues` over the partitions: those whose wake-up rang
        first, then the rest in a rotating order, so every partition is served in turn.

        Once this store waits through a Doorbell, a partition that handed out fewer jobs than
        asked is skipped until it rings again (or a wait times out): any job queued there
        pushes a wake-up, and a claim leaving jobs behind passes one on (and every partition
        is asked again at least every `SWEEP_S`), so nothing waits unseen, while a worker
        claiming one job at a time does not ask every empty partition after each one (one
        script call per partition per job, measured in docs/benchmarks-cluster.md)."""
        if self.layout.count == 1:
            return self.control.claim(worker, queues, n, lease_ms, now, start)
        count = self.layout.count
        self._turn = (self._turn + 1) % count
        order = [(self._turn + k) % count for k in range(count)]
        bell = self._bell
        drained = self._drained.setdefault(tuple(queues), set())
        if time.monotonic() - self._swept > SWEEP_S:
            self._forget_drained()
        rang: list[int] = []
        if bell is not None:
            rang = bell.take()
            drained.difference_update(rang)
            order = [p for p in order if p not in rang and p not in drained]
        out: list[Claimed] = []
        failures = self._claim_failures
        first: BaseException | None = None
        # The partitions that rang are asked first, for all that is wanted (the common case
        # of an idle worker: one call). The others in two passes: first a share of `n` from
        # each, then the rest from those that had more. One partition never takes a whole
        # batch unasked: the jobs a partition handed out just before its primary died hold
        # their slots until their outcomes can be reported, and must not fill the worker
        # while the other partitions have work.
        share = max(1, -(-n // count))
        plan = [(p, n) for p in rang] + [(p, share) for p in order] + [(p, n) for p in order]
        dry: set[int] = set()
        for part, want in plan:
            if len(out) >= n:
                break
            if part in dry or failures.skipped(part):
                continue
            ask = min(want, n - len(out))
            try:
                got = self.shards[part].claim(
                    worker, queues, ask, lease_ms, now, max(start - len(out), 0)
                )
            except Exception as exc:
                dry.add(part)
                # Skip this partition for a pause and go on: raising would orphan what the
                # partitions before it just handed out (claimed under a lease, never run
                # until reaped) and stop every partition while one has no primary.
                failures.failed(part, exc)
                first = first or exc
                continue
            failures.ok(part)
            if len(got) < ask:
                dry.add(part)
                if bell is not None:
                    drained.add(part)
            elif bell is not None:
                drained.discard(part)
            for c in got:
                self._where.note(c.id, part)
            out.extend(got)
        if first is not None and not out:
            raise first  # nothing claimed anywhere: the caller's loop backs off and logs
        return out

    def claim_woken(
        self,
        worker: str,
        queues: list[str],
        n: int,
        lease_ms: int,
        timeout_s: float,
        start: int = 0,
    ) -> list[Claimed]:
        """Block until a queue signals new work (or the timeout), then claim up to `n` jobs.
        With one partition that is one round trip (`Shard.claim_woken`: the server claims
        the moment the wake-up arrives); over several, a wait on the `Doorbell`, then `claim`."""
        if self.layout.count == 1:
            return self.control.claim_woken(worker, queues, n, lease_ms, timeout_s, start)
        self.wait_for_work(queues, timeout_s)
        return self.claim(worker, queues, n, lease_ms, 0, start)

    def wake(self, queue: str) -> None:
        """Wake one worker blocked on `queue` (in whichever partition it blocks)."""
        for shard in self.shards:
            shard.wake(queue)

    def wait_for_work(self, queues: list[str], timeout_s: float) -> bool:
        """Block until a queue signals new work in any partition (or the timeout)."""
        if self.layout.count == 1:
            return self.control.wait_for_work(queues, timeout_s)
        with self._bell_lock:
            if self._bell is None:
                self._bell = Doorbell(self.shards)
        rang = self._bell.wait(queues, timeout_s)
        if not rang:  # a quiet spell: the next claim asks every partition again
            self._forget_drained()
        return rang

    def _forget_drained(self) -> None:
        for parts in self._drained.values():
            parts.clear()
        self._swept = time.monotonic()

    def _by_partition(self, ids: Iterable[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for job_id in ids:
            groups.setdefault(self.partition_of(job_id), []).append(job_id)
        return groups

    def report(self, outcomes: list[Outcome], now: int = 0) -> dict[str, int]:
        """Record outcomes, one call per partition that handed the jobs out."""
        if self.layout.count == 1:
            return self.control.report(outcomes, now)
        groups: dict[int, list[Outcome]] = {}
        for o in outcomes:
            groups.setdefault(self.partition_of(o.claimed.id), []).append(o)
        codes = report_over(self.shards, groups, self._report_failures, now)
        self._hand_off(groups)
        return codes

    def _hand_off(self, parts: Iterable[int]) -> None:
        """Deliver at once what the calls just made in `parts` handed off to other partitions
        (jobs that finished with children elsewhere); the maintenance tick delivers whatever
        is left (this process died first, a partition did not answer)."""
        for part in parts:
            handoff.deliver_from(self.shards, part)

    def heartbeat(
        self,
        items: list[tuple[str, str]],
        lease_ms: int,
        now: int = 0,
        worker: str = "",
        began: Iterable[tuple[str, str]] = (),
    ) -> tuple[set[str], set[str]]:
        """Extend leases where each job lives, and mark the worker seen in every partition
        (see `Shard.heartbeat`): each partition's orphan walk reads its own `workers` record,
        so a partition that never saw the worker would take it for gone (failing the jobs
        queued for it there, pruning its queues)."""
        if self.layout.count == 1:
            return self.control.heartbeat(items, lease_ms, now, worker, began)
        marks = list(began)
        per_items: dict[int, list[tuple[str, str]]] = {}
        per_marks: dict[int, list[tuple[str, str]]] = {}
        for it in items:
            per_items.setdefault(self.partition_of(it[0]), []).append(it)
        for it in marks:
            per_marks.setdefault(self.partition_of(it[0]), []).append(it)
        lost: set[str] = set()
        cancel: set[str] = set()
        parts = range(self.layout.count) if worker else sorted({*per_items, *per_marks})

        def one(shard: Shard) -> None:
            part = self.shards.index(shard)
            got = shard.heartbeat(
                per_items.get(part, []), lease_ms, now, worker, per_marks.get(part, [])
            )
            lost.update(got[0])
            cancel.update(got[1])

        # Every partition's leases are extended even while one partition fails (its error is
        # raised after, so the heartbeat loop logs it and retries soon).
        each_shard([self.shards[p] for p in parts], one)
        return lost, cancel

    def for_heartbeats(self, timeout_s: float) -> Store:
        """The same deployment on connections of its own with a short timeout (see
        `Shard.for_heartbeats`), sharing this store's memory of where jobs live."""
        layout = self.layout
        shards = [s.for_heartbeats(timeout_s) for s in self.shards]
        twin = Store.__new__(Store)
        twin.__dict__.update(self.__dict__)  # the same settings, layout and memory of jobs
        twin._client, twin._control, twin._shards = shards[0].r, shards[0], shards
        twin._open_lock, twin._bell, twin._bell_lock = threading.Lock(), None, threading.Lock()
        twin._layout = layout
        return twin

    def requeue(self, items: list[tuple[str, str]], now: int = 0) -> int:
        if self.layout.count == 1:
            return self.control.requeue(items, now)
        per: dict[int, list[tuple[str, str]]] = {}
        for it in items:
            per.setdefault(self.partition_of(it[0]), []).append(it)
        return sum(self.shards[p].requeue(group, now) for p, group in per.items())

    # -- one job -----------------------------------------------------------------------------

    def wait(self, job_id: str, timeout_s: float | None, full: bool = True) -> JobRecord | None:
        return self.shard_of(job_id).wait(job_id, timeout_s, full)

    def progress(self, job_id: str, token: str, fraction: float, message: str = "") -> bool:
        return self.shards[self.partition_of(job_id)].progress(job_id, token, fraction, message)

    def cancel_requested(self, job_id: str) -> bool:
        return self.shards[self.partition_of(job_id)].cancel_requested(job_id)

    def cancel(self, job_id: str) -> int:
        shard = self.shard_of(job_id)
        code = shard.cancel(job_id)
        if self.layout.count > 1:
            self._hand_off([self.shards.index(shard)])
        return code

    def rerun(self, job_id: str) -> int:
        return self.shard_of(job_id).rerun(job_id)

    def delete(self, job_id: str) -> int:
        """Remove a finished job for good (a `codes.Delete`)."""
        return self.shard_of(job_id).delete(job_id)

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.shard_of(job_id).get_job(job_id)

    def get_state(self, job_id: str) -> JobState | None:
        return self.shard_of(job_id).get_state(job_id)

    def get_states(self, job_ids: list[str]) -> list[JobState | None]:
        """States in one call per partition (ids not found at their guess: every partition)."""
        if self.layout.count == 1:
            return self.control.get_states(job_ids)
        out: dict[str, JobState | None] = {}
        for part, ids in self._by_partition(job_ids).items():
            out.update(zip(ids, self.shards[part].get_states(ids), strict=True))
        missing = [i for i, st in out.items() if st is None]
        for part, shard in enumerate(self.shards):
            if not missing:
                break
            for job_id, st in zip(missing, shard.get_states(missing), strict=True):
                if st is not None:
                    out[job_id] = st
                    self._where.note(job_id, part)
            missing = [i for i in missing if out[i] is None]
        return [out.get(i) for i in job_ids]

    # -- queues and listings -----------------------------------------------------------------

    def set_rate_limits(self, limits: dict[str, str]) -> None:
        """Publish per-task rate limits ("count:period_ms"). Each partition enforces its share:
        the same count over `partitions` times the period, so all add up to the limit."""
        n = self.layout.count
        if n == 1:
            self.control.set_rate_limits(limits)
            return
        scaled = {}
        for task, spec in limits.items():
            count, _, period = spec.partition(":")
            scaled[task] = f"{count}:{int(period) * n}" if period.isdigit() else spec
        for shard in self.shards:
            shard.set_rate_limits(scaled)

    def purge(self, queue: str, batch: int = 1000) -> int:
        n = sum(s.purge(queue, batch) for s in self.shards)
        if self.layout.count > 1:
            self._hand_off(range(self.layout.count))
        return n


def open_store(url: str, keys: Keys, partitions: int | None = None, **settings: Any) -> Store:
    """The store of the deployment at `url` under `keys.prefix`: its layout is read from the
    server on first use (created there by the first process: `partitions`; default one on
    one server or a Sentinel group, one per primary on a Cluster)."""
    prefix = keys.prefix
    if is_cluster(url):
        from .cluster import map_for, tag_on_each_primary

        def discover(control: Any) -> Layout:
            slots = map_for(url)
            slots.ensure()
            return load_or_create(
                control,
                prefix,
                partitions,
                lambda n: tag_on_each_primary(slots, prefix, n),
                default=len(slots.primaries()),
            )

        return Store(
            connect(url, prefix),
            url,
            keys,
            discover=discover,
            client_for=lambda tag: connect(url, tag),
            **settings,
        )

    def discover_one(control: Any) -> Layout:
        return load_or_create(control, prefix, partitions, lambda n: Layout.even(prefix, n).tags)

    return Store(connect(url), url, keys, discover=discover_one, **settings)
